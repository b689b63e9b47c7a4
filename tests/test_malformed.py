"""Defects `make fuzz` found at 10,000 examples per loader that the quick counts missed: each is
one `error:` line now (a PrunedgeError naming the file), never another exception."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import importers
from pipeline.errors import PrunedgeError, fail
from pipeline.model import random_model
from pipeline.model_io import load, save


def test_a_zip_member_flagged_encrypted_is_one_error(tmp_path):
    """zipfile raised RuntimeError ("password required") from model_io.load."""
    path = save(random_model([6, 4, 3], seed=0), tmp_path / "m.npz")
    data = bytearray(path.read_bytes())
    for magic, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local headers, central directory
        at = data.find(magic)
        while at >= 0:
            data[at + flag_at] |= 1
            at = data.find(magic, at + 4)
    path.write_bytes(bytes(data))
    with pytest.raises(PrunedgeError, match="m.npz: corrupt or truncated .npz"):
        load(path)


def test_line_breaks_from_the_input_stay_on_one_line():
    """An ONNX op named "Gem\\n" made a two-line error."""
    message = str(fail("net.onnx", "unsupported ops: Gem\n (node 0)\r"))
    assert "\n" not in message and "\r" not in message and "Gem\\n" in message


@pytest.mark.parametrize("raised", [IndexError("list index out of range"), AttributeError("no attribute 'beta'"),
                                    ValueError("cannot reshape array of size 24 into shape (8,)")])
def test_a_parser_tripping_over_damaged_bytes_is_one_error(tmp_path, monkeypatch, raised):
    """The ONNX and TFLite parsers raised IndexError, AttributeError and ValueError on damaged files."""
    path = tmp_path / "net.onnx"
    path.write_bytes(b"\x08\x07" + np.arange(16, dtype=np.uint8).tobytes())

    def broken(p, spec):
        raise raised
    row = importers.FORMATS[importers.detect_format(path)]
    monkeypatch.setitem(importers.FORMATS, importers.detect_format(path), type(row)(**{**row.__dict__, "load": broken})
                        if hasattr(row, "__dict__") else row)
    with pytest.raises(PrunedgeError, match=f"net.onnx: malformed .* file \\({type(raised).__name__}"):
        importers.import_model(path)

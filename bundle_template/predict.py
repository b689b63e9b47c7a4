#!/usr/bin/env python3
"""Classify Fashion-MNIST images with the model in this bundle.

Checks every file against manifest.json (sha256 + size) before loading anything and
refuses to run on a mismatch. Imports only numpy, the bundle's one runtime and the
standard library, so it runs on a bare device with `pip install -r requirements.txt`.

Input: .npy arrays [n, 784] or [n, 28, 28] (uint8 0-255 or float 0-1), or IDX image
files (raw or .gz). Bad input -> one line `error: ...` on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049
DEFAULT_CHUNK = 256  # images per runtime call: bounds memory on small devices


class BundleError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


# ---------------------------------------------------------------- bundle + integrity

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle_dir: Path = HERE) -> dict:
    path = bundle_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: manifest not found (is this a prunedge bundle?)") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or not isinstance(manifest.get("model"), dict):
        raise BundleError(f"{path}: not a prunedge bundle manifest")
    return manifest


def verify_files(manifest: dict, bundle_dir: Path = HERE) -> None:
    """Every listed file must exist with the recorded size and sha256."""
    model_file = manifest["model"].get("file")
    if model_file not in manifest["files"]:
        raise BundleError(f"{bundle_dir / 'manifest.json'}: model file {model_file!r} is not listed")
    for name, entry in sorted(manifest["files"].items()):
        path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{bundle_dir / 'manifest.json'}: unsafe file name {name!r}")
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle; refusing to run")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise BundleError(f"{path}: size {size} != {entry.get('bytes')} in manifest.json "
                              "(file changed or corrupt); refusing to run")
        if sha256_file(path) != entry.get("sha256"):
            raise BundleError(f"{path}: sha256 does not match manifest.json "
                              "(file changed or corrupt); refusing to run")


# ---------------------------------------------------------------- runtimes

def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(int64)": "int64"}


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None, delegate: str | None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def io_spec(self) -> dict:
        def spec(t):
            dtype = ONNX_DTYPES.get(t.type, t.type)
            return {"name": t.name, "dtype": dtype, "shape": [d if isinstance(d, int) else None for d in t.shape]}
        return {"input": spec(self.input), "output": spec(self.output)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: x.astype(np.float32, copy=False)})[0]


class TfliteRunner:
    def __init__(self, path: Path, threads: int | None, delegate: str | None):
        from ai_edge_litert import interpreter as litert
        kwargs = {"num_threads": threads} if threads else {}
        if delegate == "none":  # verified without XNNPACK: keep it that way
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.runtime = "litert-builtin" if delegate == "none" else "litert-xnnpack"
        self.interp = litert.Interpreter(model_path=str(path), **kwargs)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self.batch = None

    def io_spec(self) -> dict:
        def spec(d):
            sig = d.get("shape_signature", d["shape"])
            return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name,
                    "shape": [int(s) if s >= 0 else None for s in sig]}
        return {"input": spec(self.input), "output": spec(self.output)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            shape = list(self.input["shape"])
            shape[0] = len(x)
            self.interp.resize_tensor_input(self.input["index"], shape, strict=False)
            self.interp.allocate_tensors()
            self.input = self.interp.get_input_details()[0]
            self.output = self.interp.get_output_details()[0]
            self.batch = len(x)
        self.interp.set_tensor(self.input["index"], _quantize(x, self.input))
        self.interp.invoke()
        return _dequantize(self.interp.get_tensor(self.output["index"]), self.output).copy()


RUNNERS = {"onnx": OnnxRunner, "tflite": TfliteRunner}


def open_model(manifest: dict, bundle_dir: Path = HERE, threads: int | None = None, verify: bool = True):
    """Verify the bundle, then load its model in its runtime with the verified delegate setting."""
    if verify:
        verify_files(manifest, bundle_dir)
    model = manifest["model"]
    runner_cls = RUNNERS.get(model.get("runner", model.get("format")))
    if runner_cls is None:
        raise BundleError(f"{bundle_dir / 'manifest.json'}: unknown model runner {model.get('runner')!r}")
    path = bundle_dir / model["file"]
    try:
        return runner_cls(path, threads, model.get("delegate"))
    except ImportError as e:
        raise BundleError(f"{path}: runtime not installed ({e}); run pip install -r requirements.txt") from None
    except Exception as e:  # the runtime's own load errors: one line, not a traceback
        raise BundleError(f"{path}: runtime could not load the model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


def run_batched(runner, x: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    try:
        return np.concatenate([runner(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"model: runtime failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


# ---------------------------------------------------------------- inputs

def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, expected a .npy or IDX file") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise BundleError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return raw


def read_idx(path: Path, magic: int) -> np.ndarray:
    """IDX file of unsigned bytes (raw or gzip): big-endian magic, dims, data."""
    raw = _read_bytes(path)
    ndim = 3 if magic == IDX_IMAGE_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BundleError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise BundleError(f"{path}: IDX magic {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise BundleError(f"{path}: {len(raw)} bytes do not match IDX dimensions {list(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_npy(path: Path) -> np.ndarray:
    import io
    raw = _read_bytes(path)
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        raise BundleError(f"{path}: not a plain .npy array ({str(e).splitlines()[0]})") from None
    except (OSError, EOFError) as e:
        raise BundleError(f"{path}: corrupt .npy file ({e})") from None


def to_pixels(x: np.ndarray, source, features: int = 784) -> np.ndarray:
    """[n, 784] or [n, 28, 28], uint8 0-255 or float 0-1 -> float32 [n, 784] in [0, 1]."""
    side = int(round(features ** 0.5))
    if x.ndim == 3 and x.shape[1:] == (side, side):
        x = x.reshape(len(x), features)
    elif not (x.ndim == 2 and x.shape[1] == features):
        raise BundleError(f"{source}: expected shape [n, {features}] or [n, {side}, {side}], got {list(x.shape)}")
    if len(x) == 0:
        raise BundleError(f"{source}: no images")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise BundleError(f"{source}: expected uint8 (0-255) or float (0-1) pixels, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise BundleError(f"{source}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise BundleError(f"{source}: float pixels must be scaled to [0, 1], found range [{lo:g}, {hi:g}]"
                          " (pass uint8 0-255 or divide by 255)")
    return x.astype(np.float32)


def load_images(path: Path, features: int = 784) -> np.ndarray:
    if path.suffix == ".npy":
        return to_pixels(read_npy(path), path, features)
    return to_pixels(read_idx(path, IDX_IMAGE_MAGIC), path, features)


def load_labels(path: Path) -> np.ndarray:
    y = read_npy(path) if path.suffix == ".npy" else read_idx(path, IDX_LABEL_MAGIC)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise BundleError(f"{path}: labels must be a 1-D integer array, got {y.dtype} {list(y.shape)}")
    return y.astype(np.int64)


# ---------------------------------------------------------------- outputs

def save_npy(path: Path, array: np.ndarray) -> None:
    """Write via a temp file + rename so a reader never sees half a file."""
    path = Path(path)
    if path.suffix != ".npy":
        raise BundleError(f"{path}: output file must end in .npy")
    if not path.parent.is_dir():
        raise BundleError(f"{path}: directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line like every other bad input."""

    def error(self, message):
        raise BundleError(f"{self.prog}: {message} (see --help)")


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 ok, 2 bad input or tampered bundle.")
    p.add_argument("inputs", nargs="*", type=Path, metavar="IMAGES",
                   help=".npy ([n,784] or [n,28,28]; uint8 0-255 or float 0-1) or IDX images (.gz or raw)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    p.add_argument("--out", type=Path, metavar="PREDS.npy", help="also write predicted class ids (int64)")
    p.add_argument("--logits", type=Path, metavar="LOGITS.npy", help="also write raw outputs (float32 [n, 10])")
    p.add_argument("--labels", type=Path, help="true labels (.npy or IDX) to report accuracy")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: runtime's choice)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.add_argument("--verify-only", action="store_true", help="check the bundle's hashes and exit")
    p.add_argument("--selftest", action="store_true",
                   help="run the bundled sample images and compare with the classes recorded at build time")
    args = p.parse_args(argv)
    if not args.inputs and not (args.verify_only or args.selftest):
        p.error("give at least one image file (or --verify-only / --selftest)")
    if args.threads is not None and args.threads < 1:
        raise BundleError(f"--threads: must be >= 1, got {args.threads}")
    return args


def selftest(manifest: dict, runner) -> dict:
    st = manifest.get("selftest")
    if not st:
        raise BundleError(f"{HERE / 'manifest.json'}: this bundle has no self-test data")
    x = load_images(HERE / st["file"])
    logits = run_batched(runner, x)
    classes = logits.argmax(axis=1)
    expected = np.asarray(st["classes"])
    diff = float(np.abs(logits - np.asarray(st["logits"], dtype=np.float32)).max())
    ok = bool((classes == expected).all()) and diff <= st["tolerance"]
    if not ok:
        raise BundleError(f"selftest: {int((classes != expected).sum())}/{len(x)} classes differ, "
                          f"max |logit diff| {diff:.3g} (tolerance {st['tolerance']})")
    return {"selftest": "passed", "n": len(x), "max_abs_diff": diff}


def run(argv=None) -> int:
    args = parse_args(argv)
    manifest = load_manifest()
    if args.verify_only:
        verify_files(manifest)
        if not args.quiet:
            print(f"ok: {len(manifest['files'])} files match manifest.json")
        return 0
    if args.selftest:
        result = selftest(manifest, open_model(manifest, threads=args.threads))
        if not args.quiet:
            print(json.dumps(result) if args.json else f"selftest passed on {result['n']} images "
                  f"(max |logit diff| {result['max_abs_diff']:.2g})")
        return 0
    verify_files(manifest)  # refuse a changed bundle before reading anything else
    features = manifest.get("input", {}).get("features", 784)
    x = np.concatenate([load_images(path, features) for path in args.inputs])
    labels = load_labels(args.labels) if args.labels else None
    if labels is not None and len(labels) != len(x):
        raise BundleError(f"{args.labels}: {len(labels)} labels for {len(x)} images")
    logits = run_batched(open_model(manifest, threads=args.threads, verify=False), x)
    classes = logits.argmax(axis=1).astype(np.int64)
    names = manifest.get("output", {}).get("classes") or [str(i) for i in range(logits.shape[1])]
    if args.out:
        save_npy(args.out, classes)
    if args.logits:
        save_npy(args.logits, logits.astype(np.float32))
    accuracy = float((classes == labels).mean()) if labels is not None else None
    if args.quiet:
        return 0
    if args.json:
        out = {"bundle": manifest.get("name"), "n": len(classes), "classes": classes.tolist(),
               "names": [names[c] for c in classes]}
        if accuracy is not None:
            out["accuracy"] = accuracy
        print(json.dumps(out))
    else:
        lines = [f"{i}\t{c}\t{names[c]}" for i, c in enumerate(classes)]
        if accuracy is not None:
            lines.append(f"# accuracy {accuracy:.4f} on {len(classes)} images")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv=None) -> int:
    try:
        return run(argv)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `predict.py x.npy | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

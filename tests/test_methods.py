"""The method registry: every row complete and consistent, names resolve, defaults as documented."""
import dataclasses

import pytest

from pipeline import methods
from pipeline.errors import PrunedgeError

FAMILIES = {"unstructured", "block", "structured", "lowrank"}


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_row_is_complete(name):
    row = methods.METHODS[name]
    assert row.name == name
    for f in dataclasses.fields(row):  # kw_only without defaults: a missing field cannot even be built
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
    assert callable(row.prune) and row.physical in methods.PHYSICAL and row.family in FAMILIES
    assert row.networks and row.networks <= methods.NETWORKS
    assert set(row.defaults) <= row.networks and row.summary  # network -> tunings make export runs
    tunings = {t for ts in row.defaults.values() for t in ts}
    assert tunings <= set(methods.TUNINGS)
    assert set(methods.NPZ_RUNTIMES) <= set(row.timed_by)
    assert ("scipy-csr" in row.timed_by) == (row.physical == "csr")  # every CSR model is timed as CSR
    assert not ("-gp" in tunings and not row.gradual)


def test_the_runtimes_rows_name_exist():
    from export.runtimes import RUNTIMES
    for row in methods.METHODS.values():
        assert set(row.timed_by) <= set(RUNTIMES), row.name


def test_resolve_and_base_name():
    assert methods.resolve("block-ft")[1] == "-ft" and methods.resolve("block-ft")[0].name == "block"
    assert methods.resolve("block16-gp")[1] == "-gp" and methods.resolve("unit") == (methods.METHODS["unit"], "")
    assert methods.base_name("weight-gp") == "weight" and methods.base_name("other") == "other"
    with pytest.raises(PrunedgeError, match="--methods: unknown method 'x'"):
        methods.resolve("x", "--methods")
    with pytest.raises(PrunedgeError, match="cannot be applied gradually"):
        methods.resolve("lowrank-gp")


def test_defaults_are_what_make_export_runs():
    assert methods.defaults("mlp") == ("weight", "unit", "block", "block16", "lowrank",
                                       "weight-gp", "unit-gp", "block-gp", "block16-gp")
    assert all("cnn" in methods.METHODS[methods.base_name(m)].networks for m in methods.defaults("cnn"))


def test_defaults_per_network():
    assert methods.defaults("mlp") == ("weight", "unit", "block", "block16", "lowrank", "weight-gp", "unit-gp",
                                       "block-gp", "block16-gp")
    assert methods.defaults("cnn") == ("weight", "unit", "block", "unit-gp")

"""The table of pruning methods: one row per method says everything any stage needs about it.

How it prunes (a pure function returning the masked model), how the result is stored (its
physical form), whether it can be fine-tuned (`-ft`) or applied gradually (`-gp`), its family in
the report, which runtimes time its model.npz, which networks it applies to and whether
`make export` runs it by default. Adding a method is one module with its function plus one row.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from pipeline import lowrank as _lowrank, prune as _prune, prune_block as _block
from pipeline.errors import fail
from pipeline.model import Model
from pipeline.shrink import shrink
from pipeline.sparse import to_csr

# physical form name -> how a masked model is stored in model.npz
PHYSICAL: dict[str, Callable[[Model], Model]] = {
    "csr": to_csr,  # weights pruned one by one or in blocks: SciPy CSR
    "shrunk": shrink,  # whole units/filters removed: smaller dense layers
    "dense": lambda model: model.with_layers(model.layers, physical="dense"),  # e.g. low-rank factors
}
# tuning suffix -> what it does (see pipeline.stages.prune_stage)
TUNINGS = {"": "pruned once from the trained model",
           "-ft": "pruned once, then fine-tuned with the mask fixed",
           "-gp": "gradual: each level prunes the previous level's fine-tuned model, then fine-tunes"}
NPZ_RUNTIMES = ("numpy", "torch", "keras")  # run any model.npz (CSR densified)
CSR_RUNTIMES = NPZ_RUNTIMES + ("scipy-csr",)  # and the CSR forward for models stored as CSR
NETWORKS = frozenset({"mlp", "cnn"})


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    prune: Callable[..., Model]  # (model, sparsity, *, include_output) -> masked model
    physical: str  # a PHYSICAL key
    tunable: bool  # "-ft" allowed (its zero pattern survives masked training)
    gradual: bool  # "-gp" allowed (it can prune its own output again)
    family: str  # report grouping: "unstructured" | "block" | "structured" | "lowrank"
    timed_by: tuple[str, ...]  # bench runtimes that time its model.npz
    networks: frozenset  # "mlp" and/or "cnn"
    defaults: dict  # network -> tunings `make export` runs, e.g. {"mlp": ("", "-gp")}
    summary: str

    @property
    def runs_sparse(self) -> bool:
        """Its pruned weights are stored sparse, so sparse kernels and formats apply."""
        return self.physical == "csr"


# On the CNN only filter pruning runs gradually by default: its epoch costs ~95 s on 2 cores, and
# filter pruning is what needs retraining to pay (weight/block one-shot feed the sparse-kernel check).
ONE_SHOT_ON_CNN = {"mlp": ("", "-gp"), "cnn": ("",)}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method(name="weight", prune=_prune.weight_prune, physical="csr", tunable=True, gradual=True,
           family="unstructured", timed_by=CSR_RUNTIMES, networks=NETWORKS, defaults=ONE_SHOT_ON_CNN,
           summary="the k% smallest-|w| weights of each layer"),
    Method(name="unit", prune=_prune.unit_prune, physical="shrunk", tunable=True, gradual=True,
           family="structured", timed_by=NPZ_RUNTIMES, networks=NETWORKS, defaults={"mlp": ("", "-gp"), "cnn": ("", "-gp")},
           summary="the k% units / filters with the smallest L2 norm (coupled channels together)"),
    Method(name="block", prune=_block.block_prune, physical="csr", tunable=True, gradual=True,
           family="block", timed_by=CSR_RUNTIMES, networks=NETWORKS, defaults=ONE_SHOT_ON_CNN,
           summary="1x4 blocks of consecutive inputs (LiteRT's fp32 sparse kernel)"),
    Method(name="block16", prune=partial(_block.block_prune, size=16), physical="csr", tunable=True,
           gradual=True, family="block", timed_by=CSR_RUNTIMES, networks=frozenset({"mlp"}),
           defaults={"mlp": ("", "-gp")}, summary="1x16 blocks (LiteRT's int8 sparse kernel)"),
    Method(name="block-l1", prune=partial(_block.block_prune, norm="l1"), physical="csr", tunable=True,
           gradual=True, family="block", timed_by=CSR_RUNTIMES, networks=frozenset({"mlp"}), defaults={},
           summary="1x4 blocks ranked by L1 norm"),
    Method(name="nm", prune=_block.nm_prune, physical="csr", tunable=True, gradual=False, family="block",
           timed_by=CSR_RUNTIMES, networks=frozenset({"mlp"}), defaults={},
           summary="N:M groups of 4 inputs (k=50: 2:4)"),
    Method(name="balanced", prune=_block.balanced_prune, physical="csr", tunable=True, gradual=True,
           family="unstructured", timed_by=CSR_RUNTIMES, networks=frozenset({"mlp"}), defaults={},
           summary="the same number of inputs removed from every unit"),
    Method(name="lowrank", prune=_lowrank.lowrank, physical="dense", tunable=True, gradual=False,
           family="lowrank", timed_by=NPZ_RUNTIMES, networks=frozenset({"mlp"}), defaults={"mlp": ("",)},
           summary="each layer W ~ U V with the rank that removes k% of its weights"),
)}


def resolve(name: str, subject: str = "method") -> tuple[Method, str]:
    """"weight-gp" -> (METHODS["weight"], "-gp"); a one-line error for anything else."""
    base, tuning = name, ""
    for suffix in TUNINGS:
        if suffix and name.endswith(suffix):
            base, tuning = name.removesuffix(suffix), suffix
    if base not in METHODS:
        known = ", ".join(list(METHODS) + [f"<method>{s}" for s in TUNINGS if s])
        raise fail(subject, f"unknown method {name!r} (choose from {known})")
    method = METHODS[base]
    if (tuning == "-gp" and not method.gradual) or (tuning == "-ft" and not method.tunable):
        raise fail(subject, f"{name!r}: {base} cannot be {'applied gradually' if tuning == '-gp' else 'fine-tuned'} "
                            f"(its result cannot be pruned again level by level)")
    return method, tuning


def base_name(name: str) -> str:
    """"block-gp" -> "block"; names without a tuning suffix are returned unchanged."""
    for suffix in TUNINGS:
        if suffix:
            name = name.removesuffix(suffix)
    return name


def defaults(network: str = "mlp") -> tuple[str, ...]:
    """The method names `make export` runs for a network kind, one-shot ones first."""
    rows = [m for m in METHODS.values() if network in m.networks]
    return tuple(m.name + t for t in TUNINGS for m in rows if t in m.defaults.get(network, ()))


def prune(model: Model, name: str, sparsity, *, include_output: bool = False) -> Model:
    """The masked model of one-shot method `name` (no tuning suffix) at `sparsity` percent."""
    method, tuning = resolve(name)
    if tuning:
        raise fail("method", f"{name!r}: prune() is one-shot; fine-tuning happens in pipeline.stages")
    network = "mlp" if model.is_mlp else "cnn"
    if network not in method.networks:
        raise fail("method", f"{name!r} does not apply to a {network.upper()} (it applies to "
                             f"{', '.join(sorted(method.networks))})")
    return method.prune(model, sparsity, include_output=include_output)


def physical(model: Model) -> Model:
    """The stored form of a masked model: its method's physical form; k00 is dense."""
    if float(model.meta.get("sparsity", 0)) == 0:
        return model.with_layers(model.layers, physical="dense")
    return PHYSICAL[METHODS[base_name(str(model.meta.get("method", "dense")))].physical](model)

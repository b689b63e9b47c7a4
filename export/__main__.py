"""`python -m export run|verify|table|bundle`: the whole chain from training to verified files.

run     train (torch, tf) -> prune at every level (weight, unit) -> export every format of every
        k-dir -> verify each file in its runtime -> artifacts/export/manifest.json -> table.
        k-dirs whose model.npz, formats, options, data and library versions are unchanged are skipped.
        --model PATH [--data PATH] starts from a network you did not train instead.
verify  re-verify the files listed in the manifest (after editing a tolerance, or a runtime upgrade);
        refuses (one line, nothing rewritten) when a listed file changed since export.
table   print the table from the manifest.
bundle  a deploy bundle: the same as `python -m bundle` (see its --help).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from pipeline import cli
from pipeline.cli import FRAMEWORKS, ArgumentParser
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import locked
from pipeline.methods import defaults

# Gradual (-gp) replaced one-shot + fine-tune (-ft) in the default: same epochs per level, better
# at the high levels measured (torch, dense 89.74%: weight 97% 89.31 vs 88.46%, block 95% 89.10
# vs 88.15%, unit 90% 89.10 vs 87.82%); -ft stays available.
DEFAULT_METHODS = defaults("mlp")


def _jobs(value: int) -> int:
    """Local worker processes: at most the cores this process may use (more would only time-slice)."""
    return cli.positive_int("--jobs", value, maximum=len(os.sched_getaffinity(0)))


def _executor(args):
    """Where the stage tasks run: --cluster (or $PRUNEDGE_CLUSTER) names a Dask scheduler, else --jobs local processes."""
    from pipeline.executor import choose
    return choose(_jobs(args.jobs), args.cluster)


# ------------------------------------------------------------------ the chain

def eval_data(args, model_npz: Path | None = None):
    """Fashion-MNIST by default; an imported model's own labeled set with --data, checked
    against the model's input width and class count when the model is known."""
    from export import verify
    if args.data:
        dims = {}
        if model_npz is not None:
            from pipeline.model_io import load
            model = load(model_npz)
            dims = {"input_dim": model.input_dim, "n_classes": model.output_dim, **image_layout(model)}
        return verify.labeled(args.data, **dims)
    return verify.fashion_mnist(args.data_dir)


def training_data(args):
    """A zero-argument loader of the Dataset that fine-tuned (-ft) methods train on."""
    if not args.data:
        from pipeline.data import load_fashion_mnist
        return lambda: load_fashion_mnist(args.data_dir)

    def imported():
        from pipeline.labeled import load_split
        from pipeline.model_io import load
        model = load(Path(args.root) / "import" / (args.name or Path(args.model).stem) / "model.npz")
        return load_split(args.data, input_dim=model.input_dim, n_classes=model.output_dim, **image_layout(model))
    return imported


def image_layout(model) -> dict:
    """How labeled images for `model` may be laid out (see pipeline.labeled.load_labeled)."""
    if len(model.input_shape) != 3:
        return {}
    return {"image_shape": model.input_shape, "layout": model.meta.get("source_input_layout", "nhwc")}


def sources(args) -> dict[str, Path]:
    """framework name -> trained model.npz: trained here, or imported with --model (the hook)."""
    from tqdm import tqdm
    if args.model:
        name = args.name or Path(args.model).stem
        return {name: import_source(args.model, Path(args.root), name=name, arch=args.arch)}
    from dataclasses import replace

    from pipeline.stages import model_name, train_stage
    from pipeline.train import default_config
    config = default_config(args.net)
    if args.epochs is not None:
        config = replace(config, epochs=cli.positive_int("--epochs", args.epochs))
    out = {}
    for framework in tqdm(cli.parse_frameworks(args.frameworks), desc="train", unit="framework"):
        out[model_name(framework, args.net)] = train_stage(framework, seed=args.seed, data_dir=args.data_dir,
                                                           config=config, root=Path(args.root))
    return out


def import_source(model_path, root: Path, *, name: str, arch: str | None = None) -> Path:
    """Describe a foreign network (pipeline.importers) and store it where prune_stage can read it."""
    from pipeline.importers import import_model
    from pipeline.model_io import save
    from pipeline.stages import model_name
    from pipeline.train import NETS
    reserved = {model_name(f, net) for f in FRAMEWORKS for net in NETS} | {"import", "manifest.json"}
    if name in reserved or name in (".", "..") or not name or "/" in name or name.startswith("."):
        raise fail("--name", f"{name!r} cannot name an imported model (pick another with --name)")
    model = import_model(model_path, arch=arch)
    model = model.with_layers(model.layers, framework="imported", name=name)
    return save(model, Path(root) / "import" / name / "model.npz")


def process(kdirs: list[Path], *, root: Path, formats: list[str], options, data, executor,
            strict: bool, reexport: bool = True, desc: str = "export") -> list[dict]:
    """Export (or re-verify) k-dirs through `executor` (export/work.py), with a progress bar."""
    from tqdm import tqdm
    from export.work import run_kdirs
    bar = tqdm(total=len(kdirs), desc=desc, unit="k-dir")

    def progress(record: dict) -> None:
        state = "skipped" if record.get("skipped") else f"{record['seconds']:.1f}s"
        bar.set_postfix_str(f"{record['kdir']} {state}")
        bar.update()
    try:
        return run_kdirs(kdirs, root=root, formats=formats, options=options, data=data, executor=executor,
                         strict=strict, reexport=reexport, progress=progress)
    finally:
        bar.close()


def _config(args, data, options, **extra) -> dict:
    from pipeline.checks import PRECISION
    return {"seed": args.seed, "opset": options.opset, "data": data.source, "data_sha256": data.sha256,
            "n_check": len(data.x_check), "n_test": len(data.x_test), "n_calibration": len(data.x_calibration),
            "tolerances": {name: t.describe() for name, t in PRECISION.items()}, **extra}


def layer_timings(kdirs: list[Path], export_root: Path, formats: list[str], data, *, remeasure: bool):
    """The per-layer timings the auto formats choose from: measured here, in this process before
    the pool starts (so nothing else competes for the cores), for layers not timed before."""
    from export import tflite_auto
    from export.formats import FORMATS
    from pipeline.model_io import load
    rows = [FORMATS[name] for name in formats if FORMATS[name].reads_timings]
    if not rows:
        return None
    path = export_root / tflite_auto.TIMINGS_FILE
    models = [m for m in (load(k / "model.npz") for k in kdirs) if any(f.applies_to(m) for f in rows)]
    with locked(path):  # one run times at a time (two would slow each other's timings) and none loses rows
        table = tflite_auto.empty_table() if remeasure else tflite_auto.load_table(path)
        before = json.dumps(table, sort_keys=True)
        table = tflite_auto.measure_missing(models, table, data.x_check[:256])
        if json.dumps(table, sort_keys=True) != before:
            tflite_auto.save_table(path, table)
    return table


def cmd_run(args) -> int:
    from export.formats import ExportOptions, select
    from export.manifest import write_manifest
    from pipeline.prune_stage import prune_stage

    if args.data and not args.model:
        raise fail("--data", "only used with --model (the labeled set of an imported network)")
    jobs, formats = _jobs(args.jobs), [f.name for f in select(args.formats)]
    methods, levels = cli.parse_methods(args.methods), cli.parse_levels(args.levels)
    start = time.perf_counter()
    if args.arch and not args.model:
        raise fail("--arch", "only used with --model (a state_dict's architecture or a TorchScript CNN's input size)")
    if not args.model:
        cli.parse_frameworks(args.frameworks)
        if args.epochs is not None:
            cli.positive_int("--epochs", args.epochs)
    export_root = cli.output_dir("--root", args.root) / "export"  # after the options: a refusal leaves nothing
    trained = sources(args)
    if methods is None:  # the defaults of the network kind that was trained or imported
        from pipeline.model_io import load
        methods = list(defaults("mlp" if load(next(iter(trained.values()))).is_mlp else "cnn"))
    data = eval_data(args, next(iter(trained.values())) if args.model else None)
    kdirs, executor = [], _executor(args)
    for framework, npz in trained.items():
        paths = prune_stage(npz, framework=framework, methods=methods, levels=levels, out_root=export_root,
                            dataset=training_data(args), executor=executor)
        kdirs += [p.parent for p in paths]
    timings = layer_timings(kdirs, export_root, formats, data, remeasure=args.remeasure)
    options = ExportOptions(calibration=data.x_calibration, layer_timings=timings)
    records = process(kdirs, root=export_root, formats=formats, options=options, data=data,
                      executor=executor, strict=args.strict)
    config = _config(args, data, options, frameworks=list(trained), methods=methods, levels=levels,
                     formats=formats, jobs=jobs)
    fresh_entries = [e for r in records for e in r["files"]]
    with locked(export_root / "manifest.json"):  # another run may be merging its entries right now
        write_manifest(export_root, _earlier_entries(export_root, kdirs) + fresh_entries, config=config)
    return _finish(export_root, records, time.perf_counter() - start, args.strict)


def _earlier_entries(export_root: Path, kdirs: list[Path]) -> list[dict]:
    """Entries of an earlier run for k-dirs this run did not touch (another model, method or
    level), kept while their file is still there, so one manifest lists everything on disk."""
    from export.manifest import load_manifest
    if not (export_root / "manifest.json").is_file():
        return []
    touched = {Path(k).resolve() for k in kdirs}
    try:
        earlier = load_manifest(export_root)["files"]
    except PrunedgeError:
        return []  # unreadable: this run's entries replace it
    return [e for e in earlier if (export_root / e["path"]).parent.resolve() not in touched
            and (export_root / e["path"]).is_file()]


def cmd_verify(args) -> int:
    from export.formats import ExportOptions, select
    from export.manifest import check_manifest, load_manifest, write_manifest

    export_root = Path(args.root) / "export"
    manifest = load_manifest(export_root)
    problems = check_manifest(export_root)
    if problems:  # re-verifying would record the changed file's hash as if it had been exported
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PrunedgeError(f"{problems[0]}{more}; files changed since export: re-run `python -m export run`")
    wanted = {f.name for f in select(args.formats)}
    by_kdir: dict[str, set] = {}
    for entry in manifest["files"]:
        by_kdir.setdefault(str(Path(entry["path"]).parent), set()).add(entry.get("name"))
    start = time.perf_counter()
    data = eval_data(args)
    options = ExportOptions(calibration=data.x_calibration)
    kept, records = [], []
    groups: dict[tuple, list[Path]] = {}
    for rel, names in sorted(by_kdir.items()):
        chosen = tuple(sorted(names & wanted))
        groups.setdefault(chosen, []).append(export_root / rel)
    executor = _executor(args)
    for chosen, kdirs in groups.items():
        records += process(kdirs, root=export_root, formats=list(chosen), options=options, data=data,
                           executor=executor, strict=False, reexport=False, desc="verify")
    redone = {(e["path"]) for r in records for e in r["files"]}
    with locked(export_root / "manifest.json"):
        manifest = load_manifest(export_root)  # as it is now: another run may have added entries
        kept = [e for e in manifest["files"] if e["path"] not in redone]
        config = {**manifest.get("config", {}), "reverified": _config(args, data, options)}
        write_manifest(export_root, kept + [e for r in records for e in r["files"]], config=config)
    return _finish(export_root, records, time.perf_counter() - start, args.strict)


def _finish(export_root: Path, records: list[dict], seconds: float, strict: bool) -> int:
    from export.manifest import load_manifest, passed
    from export.table import format_table

    manifest = load_manifest(export_root)
    print(format_table(manifest))
    done = [r for r in records if not r.get("skipped")]
    per = f" ({sum(r['seconds'] for r in done) / len(done):.1f} s each)" if done else ""
    print(f"{len(done)} k-dirs processed{per}, {len(records) - len(done)} up to date; "
          f"{seconds:.0f} s in all; manifest: {export_root / 'manifest.json'}")
    failed = [e for e in manifest["files"] if not passed(e)]
    if failed:
        print(f"warning: {len(failed)} files failed verification (marked FAILED above and in the manifest)",
              file=sys.stderr)
    return 1 if (failed and strict) else 0


def cmd_table(args) -> int:
    from export.manifest import load_manifest
    from export.table import format_table
    print(format_table(load_manifest(Path(args.root) / "export")))
    return 0


def cmd_bundle(args) -> int:
    """`python -m export bundle ...` is `python -m bundle ...`: bundles are a later stage than export
    (they read bench results), so this spelling hands over to that process instead of importing it."""
    os.execv(sys.executable, [sys.executable, "-m", "bundle", *args.rest])


# ------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--root", type=Path, default=Path("artifacts"),
                       help="artifacts directory (default artifacts; files go to <root>/export)")

    def evaluation(p):
        p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX directory (default $PRUNEDGE_DATA "
                                                        "or /usr/share/datasets/fashion-mnist)")
        p.add_argument("--formats", default="all", help="comma-separated rows of export/formats.py "
                                                        "(default all: onnx,onnx-sparse,tflite,...)")
        p.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                       help="worker processes, one k-dir each (default: 2 or the core count if fewer)")
        p.add_argument("--strict", action="store_true", help="exit 1 if any file fails verification")
        p.add_argument("--cluster", default=None,
                       help="run the tasks on this Dask scheduler, e.g. tcp://scheduler:8786 (default: "
                            "$PRUNEDGE_CLUSTER, else local processes); files travel as bytes, this process writes them")

    p = sub.add_parser("run", help="train, prune, export and verify everything; print the table")
    common(p)
    evaluation(p)
    p.add_argument("--frameworks", default="all", help="torch, tf, or all (default)")
    cli.add_methods(p, None, extra=f"; default for --net mlp: {','.join(DEFAULT_METHODS)}, for --net cnn: "
                                   f"{','.join(defaults('cnn'))}")
    p.add_argument("--net", default="mlp", choices=("mlp", "cnn"),
                   help="the built-in network to train: the challenge MLP (default) or the CNN")
    p.add_argument("--levels", default=None, help="sparsity percents (default 0,25,50,60,70,80,90,95,97,99)")
    p.add_argument("--remeasure", action="store_true",
                   help="time every layer again for the auto formats (default: reuse export/layer_timings.json)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the training epochs (quick runs)")
    p.add_argument("--model", default=None, help="import this trained network instead of training (see README)")
    p.add_argument("--data", default=None, help="labeled data for --model (IDX directory or .npz with x, y)")
    p.add_argument("--arch", default=None, help="architecture of a PyTorch state_dict (e.g. 784-300-100-10:relu) "
                                               "or a TorchScript CNN's input HxWxC (e.g. 28x28x1)")
    p.add_argument("--name", default=None, help="name of an imported model under export/ (default: file stem)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("verify", help="re-verify the files in the manifest and rewrite it")
    common(p)
    evaluation(p)
    p.add_argument("--data", default=None, help="labeled data of an imported model (as given to run --data)")
    p.set_defaults(func=cmd_verify, seed=None)

    p = sub.add_parser("table", help="print the table from the manifest")
    common(p)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("bundle", add_help=False, help="make a deploy bundle (options: bundle --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bundle)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bundle"]:  # argparse.REMAINDER cannot pass a leading "--help" through
        return cmd_bundle(argparse.Namespace(rest=argv[1:]))
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# make test-arm64: run the deploy bundles on an emulated aarch64 Debian bookworm (qemu-user 10,
# QEMU_CPU=cortex-a72 like a Raspberry Pi 4; NCNN bundles on cortex-a76 like a Pi 5, see below)
# and check they give the same classes and logits as on this host.
#
# For each format (onnx, tflite, ncnn): build the bundle (python -m bundle), pip install its
# requirements.txt in the arm64 userland, classify N real test images there and here with the
# bundle's own predict.py, require identical classes and logits within the bundle's self-test
# tolerance, run a short bench_device.py, and write artifacts/arm64/result.json.
# Emulated latency is a FUNCTIONAL CHECK ONLY, not Pi speed. ncnn computes in fp16 by default on
# ARMv8.2 cores (the A76 has fp16 arithmetic), which the bundle's runner turns off: NCNN bundles
# run on ARM64_FP16_CPU so this check would see it if it did not.
#
# Environment (all optional):
#   ARM64_CACHE=/var/cache/prunedge-arm64  userland + qemu cache, reused when present
#   ARM64_FORMATS="onnx tflite ncnn"       bundles to build and check
#   ARM64_FP16_CPU=cortex-a76              the emulated core of NCNN bundles
#   ARM64_BUNDLES="dir dir"                check these bundle directories instead of building
#   ARM64_BUNDLE_ARGS="--model DIR ..."    extra arguments for python -m bundle (a CNN k-dir works too:
#                                          images.npy is uint8 [n, 28, 28], which MLP and CNN bundles take)
#   ARM64_N=1000                           test images to classify
#   ARM64_OUT=artifacts/arm64              where result.json and per-bundle outputs go
# Without artifacts/export/manifest.json the bundles are made from a random-weight network of the
# real shape (export stage code, real test images): the cross-architecture check still holds,
# the accuracy is chance level and result.json says so.
# Exit status: 0 all equal, 1 a mismatch or failed run on arm64, 2 setup problem.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PY:-$REPO/.venv/bin/python}
OUT=$(realpath -m "${ARM64_OUT:-artifacts/arm64}")
N=${ARM64_N:-1000}
FORMATS=${ARM64_FORMATS:-onnx tflite ncnn}
FP16_CPU=${ARM64_FP16_CPU:-cortex-a76}
FP16_RUNNERS="ncnn"  # runtimes that pick fp16 by default where the core has it

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
[ $# -eq 0 ] || { echo "error: $1: no arguments expected (configure with ARM64_* variables, see --help)" >&2; exit 2; }

# shellcheck source=scripts/arm64_env.sh
source "$REPO/scripts/arm64_env.sh"
[ -x "$PY" ] || die "$PY: project venv missing (run make setup)"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "ARM64_N: expected a positive integer, got '$N'"

mkdir -p "$OUT"
TIMINGS="$OUT/timings.tsv"
: > "$TIMINGS"
timed() {  # timed KEY CMD...: run CMD, append "KEY<TAB>seconds" to timings.tsv
  local key=$1 t0 rc=0
  shift
  t0=$(now)
  "$@" || rc=$?
  awk -v a="$t0" -v b="$(now)" -v k="$key" 'BEGIN { printf "%s\t%.1f\n", k, b - a }' >> "$TIMINGS"
  return $rc
}

T_START=$(now)
preflight
exec 9> "$ARM64_CACHE/.lock"
flock -n 9 || die "$ARM64_CACHE/.lock: another test-arm64 run is using the cache"
trap 'leave_rootfs; unregister_binfmt' EXIT

# ---------------------------------------------------------------- host side: images and bundles
log "writing $N test images as .npy"
"$PY" - "$OUT" "$N" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from pipeline.data import FILES, IMAGE_MAGIC, LABEL_MAGIC, data_dir, read_idx
out, n = Path(sys.argv[1]), int(sys.argv[2])
x = read_idx(data_dir() / FILES["test"][0], IMAGE_MAGIC)[:n]
y = read_idx(data_dir() / FILES["test"][1], LABEL_MAGIC)[:n]
if len(x) < n:
    sys.exit(f"error: ARM64_N: only {len(x)} test images available")
np.save(out / "images.npy", np.ascontiguousarray(x))          # uint8 [n, 28, 28]
np.save(out / "labels.npy", y.astype(np.int64))
EOF

MODEL_NOTE="artifacts/export"
if [ -n "${ARM64_BUNDLES:-}" ]; then
  read -r -a BUNDLES <<< "$ARM64_BUNDLES"
else
  BUNDLE_ARGS=()
  if [ -n "${ARM64_BUNDLE_ARGS:-}" ]; then read -r -a BUNDLE_ARGS <<< "$ARM64_BUNDLE_ARGS"; fi
  if [ ${#BUNDLE_ARGS[@]} -eq 0 ] && [ ! -f artifacts/export/manifest.json ]; then
    MODEL_NOTE="random-weight 784-1000-1000-500-200-10 network (no artifacts/export/manifest.json): accuracy is chance level"
    log "no artifacts/export: exporting a random-weight network of the real shape for the check"
    timed export_fallback "$PY" - "$OUT/fallback-export" "$FORMATS" <<'EOF' || die "fallback export failed"
import sys
from pathlib import Path
from export import formats as F
from export.kdir import export_kdir
from export.manifest import write_manifest
from export.verify import fashion_mnist
from pipeline.model import random_model
from pipeline.model_io import save
root = Path(sys.argv[1])
kdir = root / "torch" / "dense" / "k00"
model = random_model([784, 1000, 1000, 500, 200, 10], seed=0, method="dense", sparsity=0.0, physical="dense")
save(model, kdir / "model.npz")
record = export_kdir(kdir, root=root, formats=F.select(sys.argv[2].split()), options=F.ExportOptions(),
                     data=fashion_mnist(), strict=True)
write_manifest(root, record["files"], config={"purpose": "test-arm64 fallback: random weights"})
EOF
    BUNDLE_ARGS=(--model "$OUT/fallback-export/torch/dense/k00" --export-root "$OUT/fallback-export"
                 --out-root "$OUT/bundles")
  fi
  BUNDLES=()
  for fmt in $FORMATS; do
    log "building the $fmt bundle"
    made=$("$PY" -m bundle --format "$fmt" "${BUNDLE_ARGS[@]}") || die "python -m bundle --format $fmt failed"
    BUNDLES+=("${made%%$'\n'*}")  # first line: the bundle directory
  done
fi

for b in "${BUNDLES[@]}"; do
  [ -f "$b/manifest.json" ] && [ -f "$b/predict.py" ] || die "$b: not a bundle directory"
  name=$(basename "$b")
  mkdir -p "$OUT/$name"
  runner=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"]["runner"])' "$b/manifest.json") \
    || die "$b/manifest.json: unreadable"
  cpu=$ARM64_QEMU_CPU
  if [[ " $FP16_RUNNERS " == *" $runner "* ]]; then cpu=$FP16_CPU; fi
  echo "$cpu" > "$OUT/$name/qemu_cpu"
  log "$name: predict on the host"
  timed "$name.host_predict" "$PY" "$b/predict.py" "$OUT/images.npy" --quiet \
    --out "$OUT/$name/host_preds.npy" --logits "$OUT/$name/host_logits.npy" || die "$name: predict.py failed on the host"
done

# ---------------------------------------------------------------- the arm64 userland
timed qemu_fetch fetch_qemu
register_binfmt
timed debootstrap build_rootfs
enter_rootfs
GUEST=$(in_arm64 /bin/sh -c 'echo "$(uname -m) $(python3 -c "import platform; print(platform.python_version())")"') \
  || die "cannot run arm64 binaries (binfmt_misc / qemu)"
log "userland: $GUEST under qemu $(qemu_version), QEMU_CPU=$ARM64_QEMU_CPU"
safe_rm "$ROOTFS/work" && mkdir -p "$ROOTFS/work"
cp "$OUT/images.npy" "$OUT/labels.npy" "$ROOTFS/work/"

# One bundle's install + classification + self-test; bundles run in parallel (2 cores, and
# each emulated process is mostly single-threaded), benches run afterwards one at a time.
check_bundle() {  # runs in its own subshell: the core it sets is its own
  local b=$1 name venv
  name=$(basename "$b")
  ARM64_QEMU_CPU=$(cat "$OUT/$name/qemu_cpu")
  log "$name: pip install -r requirements.txt (arm64, QEMU_CPU=$ARM64_QEMU_CPU)"
  venv=$(timed "$name.pip" arm64_venv "$b/requirements.txt") || { log "$name: pip install FAILED"; return 1; }
  echo "$venv" > "$OUT/$name/arm64_venv"
  log "$name: predict $N images (arm64, 1 thread)"
  if ! timed "$name.arm64_predict" in_arm64 "$venv/bin/python" "/work/$name/predict.py" /work/images.npy \
        --threads 1 --labels /work/labels.npy --json --out "/work/$name-preds.npy" --logits "/work/$name-logits.npy" \
        > "$OUT/$name/arm64_predict.json" 2> "$OUT/$name/arm64_predict.stderr"; then
    log "$name: predict.py FAILED on arm64: $(tail -1 "$OUT/$name/arm64_predict.stderr")"
    return 1
  fi
  cp "$ROOTFS/work/$name-preds.npy" "$OUT/$name/arm64_preds.npy"
  cp "$ROOTFS/work/$name-logits.npy" "$OUT/$name/arm64_logits.npy"
  timed "$name.arm64_selftest" in_arm64 "$venv/bin/python" "/work/$name/predict.py" --selftest --threads 1 \
    > "$OUT/$name/arm64_selftest.txt" 2>&1 || { log "$name: predict.py --selftest FAILED on arm64"; return 1; }
  log "$name: done ($(tail -1 "$OUT/$name/arm64_selftest.txt"))"
}

FAILED=0
PIDS=()
for b in "${BUNDLES[@]}"; do
  name=$(basename "$b")
  rm -f "$OUT/$name"/arm64_* "$OUT/$name"/device_results.*
  cp -r "$b" "$ROOTFS/work/$name"
  check_bundle "$b" > "$OUT/$name/arm64.log" 2>&1 &
  PIDS+=($!)
done
for pid in "${PIDS[@]}"; do wait "$pid" || FAILED=1; done
for b in "${BUNDLES[@]}"; do cat "$OUT/$(basename "$b")/arm64.log" >&2; done

for b in "${BUNDLES[@]}"; do
  name=$(basename "$b")
  [ -f "$OUT/$name/arm64_venv" ] || continue
  venv=$(cat "$OUT/$name/arm64_venv")
  cpu=$(cat "$OUT/$name/qemu_cpu")
  log "$name: short bench_device.py (arm64, emulated)"
  if ARM64_QEMU_CPU=$cpu timed "$name.arm64_bench" in_arm64 "$venv/bin/python" "/work/$name/bench_device.py" \
       --out "/work/$name-device.csv" --warmup 3 --reps 50 --max-seconds 2 > "$OUT/$name/arm64_bench.txt" 2>&1; then
    cp "$ROOTFS/work/$name-device.csv" "$OUT/$name/device_results.csv"
    cp "$ROOTFS/work/$name-device.json" "$OUT/$name/device_results.json"
  else
    log "$name: bench_device.py FAILED on arm64: $(tail -1 "$OUT/$name/arm64_bench.txt")"
    FAILED=1
  fi
done
leave_rootfs

# ---------------------------------------------------------------- compare and report
awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "total\t%.1f\n", b - a }' >> "$TIMINGS"
rc=0
"$PY" - "$OUT" "$N" "$(qemu_version)" "$ARM64_QEMU_CPU" "$GUEST" "$MODEL_NOTE" "$FAILED" "${BUNDLES[@]}" <<'EOF' || rc=$?
import csv, json, platform, sys
from pathlib import Path
import numpy as np
from pipeline.fileio import write_json

out, n, qemu, cpu, guest, model_note, failed = sys.argv[1:8]
out, bundles = Path(out), [Path(b) for b in sys.argv[8:]]
timings = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
timings = {k: float(v) for k, v in timings.items()}
labels = np.load(out / "labels.npy")
result = {
    "what": "deploy bundles run on emulated aarch64 vs this x86_64 host",
    "latency_note": "EMULATED (qemu-user TCG on an x86 host): a functional check only, NOT Raspberry Pi speed",
    "emulator": {"qemu": qemu, "QEMU_CPU": cpu, "guest": guest, "host": platform.machine()},
    "model_source": model_note, "n_images": int(n), "bundles": {}, "timings_s": timings,
    "host_load_avg_1_5_15": [round(v, 2) for v in __import__("os").getloadavg()],  # timings depend on it
}
ok = failed == "0"
for b in bundles:
    name = b.name
    m = json.loads((b / "manifest.json").read_text())
    entry = {"format": m["model"]["format"], "variant": m["model"]["variant"], "artifact": m["model"]["artifact"],
             "input": {k: m["input"][k] for k in ("layout", "sample_shape")}, "requirements": m["requirements"]}
    d = out / name
    entry["qemu_cpu"] = (d / "qemu_cpu").read_text().strip()
    if (d / "arm64_preds.npy").is_file():
        host, arm = np.load(d / "host_preds.npy"), np.load(d / "arm64_preds.npy")
        hl, al = np.load(d / "host_logits.npy"), np.load(d / "arm64_logits.npy")
        same = host.shape == arm.shape and bool((host == arm).all())
        diff = float(np.abs(hl - al).max()) if hl.shape == al.shape else None
        tol = m["selftest"]["tolerance"] if m["selftest"] else 0.0  # what the bundle allows itself on a device
        entry.update(classes_equal=same, n_differ=int((host != arm).sum()) if host.shape == arm.shape else None,
                     max_abs_logit_diff=diff, logit_tolerance=tol, logits_close=diff is not None and diff <= tol,
                     accuracy_host=float((host == labels).mean()), accuracy_arm64=float((arm == labels).mean()),
                     selftest=(d / "arm64_selftest.txt").read_text().strip().splitlines()[-1:])
        ok &= same and entry["logits_close"]
    else:
        entry["classes_equal"] = False
        ok = False
    if (d / "device_results.csv").is_file():
        rows = list(csv.DictReader(open(d / "device_results.csv", newline="")))
        num = lambda v: int(v) if v.isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v
        entry["emulated_latency_us"] = [{k: num(r[k]) for k in ("runtime", "threads", "batch", "status", "p50_us",
                                                                "p90_us", "p99_us", "reps")} for r in rows]
        entry["device_results_csv"] = str(d / "device_results.csv")
    result["bundles"][name] = entry
result["passed"] = bool(ok)
write_json(out / "result.json", result)
for name, e in result["bundles"].items():
    lat = ", ".join(f"{r['threads']}t p50 {float(r['p50_us']):.0f}us" for r in e.get("emulated_latency_us", [])
                    if r["status"] == "ok")
    print(f"{name} ({e['qemu_cpu']}): classes equal {e.get('classes_equal')} ({e.get('n_differ')} differ, max |logit "
          f"diff| {e.get('max_abs_logit_diff')} <= {e.get('logit_tolerance')}: {e.get('logits_close')}), accuracy "
          f"arm64 {e.get('accuracy_arm64')}; emulated latency: {lat}")
print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
print(f"wrote {out / 'result.json'}: {'PASSED' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
exit $rc

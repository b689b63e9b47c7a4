"""The gradual-pruning peer REPORT.md compares with: TF Model Optimization's prune_low_magnitude with PolynomialDecay.

One single-target run per level, each started from the same trained TF model (a prunedge
model.npz), Adam 1e-3, batch 128, masks updated every 100 steps, sparsity ramped by tfmot's
cubic PolynomialDecay from 0 to the target between begin_step 0 and end_step (default: the last
step, as tfmot's guide does), the given number of epochs. Prunes the hidden Dense layers only,
like prunedge's default (the 10-unit output layer stays dense), so "97%" means the same thing.
Accuracy is top-1 of a numpy forward pass of the stripped weights on the 10k test images.

Needs its own venv (tfmot needs Keras 2):
  python3 -m venv venv-tfmot && venv-tfmot/bin/pip install tensorflow-cpu==2.21.0 \
      tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 numpy==2.4.6
Run from the repository root (it imports pipeline.data for the same train/val/test split):
  venv-tfmot/bin/python scripts/peer_tfmot.py --model artifacts/train/tf/s0/model.npz \
      --levels 97:16,99:18 --out artifacts/peer/tfmot.json
The output is what report/peer.py reads: {"runs": [{"framework", "sparsity", "epochs", "accuracy",
"dense_accuracy", ...}], "versions", "settings", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot wraps Keras 2 (tf_keras) layers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402


def load_dense(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Weights [in, out], biases and meta of a dense prunedge model.npz (no pipeline import)."""
    with np.load(path) as z:
        header = json.loads(z["meta.json"].tobytes().decode())
        n = len(header["layers"])
        if any(f"layer{i}.weight" not in z for i in range(n)):
            raise SystemExit(f"{path}: not a dense prunedge MLP (expected layer<i>.weight entries)")
        return ([z[f"layer{i}.weight"].astype(np.float32) for i in range(n)],
                [z[f"layer{i}.bias"].astype(np.float32) for i in range(n)], header.get("meta", {}))


def forward_accuracy(weights, biases, x, y) -> float:
    """Top-1 of the ReLU MLP in numpy float32 (identity output), like prunedge's reference."""
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0)
    return float(np.mean(np.argmax(h, axis=1) == y))


def run_level(weights, biases, data, *, sparsity: float, epochs: int, seed: int, lr: float,
              batch_size: int, frequency: int, end_fraction: float) -> dict:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    layers = [keras.Input(shape=(weights[0].shape[0],))]
    for i, w in enumerate(weights):
        layers.append(keras.layers.Dense(w.shape[1], activation="relu" if i < len(weights) - 1 else None))
    dense = keras.Sequential(layers)
    for layer, w, b in zip(dense.layers, weights, biases):
        layer.set_weights([w, b])
    steps_per_epoch = int(np.ceil(len(data.x_train) / batch_size))
    end_step = max(1, int(round(end_fraction * steps_per_epoch * epochs)))
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity / 100.0,
                                                    begin_step=0, end_step=end_step, frequency=frequency)
    last = dense.layers[-1]

    def wrap(layer):
        if isinstance(layer, keras.layers.Dense) and layer is not last:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    model = keras.models.clone_model(dense, clone_function=wrap)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.t, time.process_time() - self.c))

    history = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                        validation_data=(data.x_val, data.y_val), verbose=0,
                        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Clock()])
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    ws = [l.get_weights()[0] for l in stripped.layers]
    bs = [l.get_weights()[1] for l in stripped.layers]
    pruned = ws[:-1]
    achieved = 100.0 * sum(int((w == 0).sum()) for w in pruned) / sum(w.size for w in pruned)
    return {"sparsity": sparsity, "epochs": epochs, "steps": steps_per_epoch * epochs, "end_step": end_step,
            "accuracy": forward_accuracy(ws, bs, data.x_test, data.y_test),
            "achieved_sparsity": round(achieved, 4),
            "val_acc": [round(v, 4) for v in history.history["val_accuracy"]],
            "seconds_per_epoch_wall": round(float(np.mean([t[0] for t in times])), 2),
            "seconds_per_epoch_cpu": round(float(np.mean([t[1] for t in times])), 2)}


def versions() -> dict:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras
    return {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "tensorflow_model_optimization": tfmot.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="trained dense TF model.npz (prunedge)")
    p.add_argument("--levels", default="97:16,99:18", help="sparsity:epochs pairs, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="JSON to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--frequency", type=int, default=100, help="steps between mask updates")
    p.add_argument("--end-fraction", type=float, default=1.0,
                   help="PolynomialDecay end_step as a fraction of the run's steps (1: the last step)")
    p.add_argument("--threads", type=int, default=0, help="TF intra/inter-op threads (0: TF's default)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    levels = []
    for item in args.levels.split(","):
        k, _, e = item.partition(":")
        if not e or not 0 < float(k) < 100 or int(e) < 1:
            raise SystemExit(f"--levels: expected sparsity:epochs with 0<sparsity<100, epochs>=1, got {item!r}")
        levels.append((float(k), int(e)))
    sys.path.insert(0, str(Path.cwd()))
    from pipeline.data import load_fashion_mnist  # numpy-only: the split every prunedge stage uses

    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    data = load_fashion_mnist(args.data_dir)
    weights, biases, meta = load_dense(args.model)
    dense_acc = forward_accuracy(weights, biases, data.x_test, data.y_test)
    result = {"peer": "tfmot prune_low_magnitude + PolynomialDecay (power 3), one run per level",
              "model": str(args.model), "model_framework": meta.get("framework"), "seed": args.seed,
              "settings": {"optimizer": "Adam", "lr": args.lr, "batch_size": args.batch_size,
                           "frequency": args.frequency, "begin_step": 0, "end_fraction": args.end_fraction,
                           "pruned_layers": "hidden Dense (output layer dense)", "threads": args.threads},
              "dense_accuracy": dense_acc, "versions": versions(), "runs": []}
    for k, epochs in levels:
        row = run_level(weights, biases, data, sparsity=k, epochs=epochs, seed=args.seed, lr=args.lr,
                        batch_size=args.batch_size, frequency=args.frequency, end_fraction=args.end_fraction)
        row.update(dense_accuracy=dense_acc, framework=meta.get("framework", "tf"))
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")  # after each level
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

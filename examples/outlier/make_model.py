"""A small digits CNN whose second activation has a few outlier channels: plain int8 breaks, int8-mixed holds.

    python examples/outlier/make_model.py [--out DIR]

Writes ``model.onnx`` (input ``x`` float32 (batch, 1, 8, 8), output ``logits``), ``calib.npz`` and ``eval.npz``
(with ``labels``) built from scikit-learn's digits. No training loop: four random 3x3 conv layers and a ridge
read-out fitted in closed form (a second or two). Then two channels of ``conv2`` are scaled up 1000x and ``conv3``'s
weights for them scaled down 1000x: in float the function is unchanged (ReLU is positively homogeneous), but a
per-tensor activation scale on ``conv2``'s output is set by those two channels and rounds every other channel to
zero, which is where the model's information is. Keeping that activation in float (its producer ``conv2`` and its
consumer ``conv3``) restores it; ``conv1``, ``conv4`` and ``fc`` stay int8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUTLIER_CHANNELS = (0, 1)
OUTLIER_SCALE = 1000.0
WIDTH = 8
LAYERS = 4
OUTLIER_LAYER = 2  # conv2's output gets the outlier channels


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3x3 convolution, padding 1, NCHW (numpy reference used to fit the read-out)."""
    _, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=2)  # n,c,9,h,w
    return np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9)) + b[None, :, None, None]


def make(out: Path, seed: int = 0, outlier_scale: float = OUTLIER_SCALE) -> dict[str, Path]:
    """The model and its data in ``out``. ``outlier_scale=1e5`` puts ``conv2``'s outlier channels beyond fp16's
    range (65504): plain fp16 overflows there, an fp16 build keeping ``conv2`` / ``relu2`` / ``conv3`` in fp32 holds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    ws, bs = [], []
    cin = 1
    for _ in range(LAYERS):
        ws.append((rng.standard_normal((WIDTH, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32))
        bs.append((rng.standard_normal(WIDTH) * 0.05).astype(np.float32))
        cin = WIDTH
    ws[OUTLIER_LAYER][:, list(OUTLIER_CHANNELS)] *= 0.01  # the outlier channels carry little of the signal
    h = x_tr
    for w, b in zip(ws, bs, strict=True):
        h = np.maximum(_conv(h, w, b), 0)
    feats = h.reshape(len(x_tr), -1)
    onehot = np.eye(10, dtype=np.float64)[y_tr]
    f64 = feats.astype(np.float64)
    wr = np.linalg.solve(f64.T @ f64 + 1.0 * np.eye(f64.shape[1]), f64.T @ onehot)  # ridge read-out
    w3 = wr.T.astype(np.float32)
    b3 = np.zeros(10, np.float32)
    # the outliers: same float function, a crushing per-tensor range for conv2's output
    for c in OUTLIER_CHANNELS:
        ws[OUTLIER_LAYER - 1][c] *= outlier_scale
        bs[OUTLIER_LAYER - 1][c] *= outlier_scale
        ws[OUTLIER_LAYER][:, c] /= outlier_scale
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs, strict=True), start=1):
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        prev = f"r{i}"
    nodes += [helper.make_node("Flatten", [prev], ["f"], name="flatten", axis=1),
              helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], name="fc", transB=1)]
    inits += [numpy_helper.from_array(w3, "wfc"), numpy_helper.from_array(b3, "bfc")]
    graph = helper.make_graph(nodes, "outlier_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"model": out / "model.onnx", "calib": out / "calib.npz", "eval": out / "eval.npz"}
    onnx.save(model, str(paths["model"]))
    np.savez(paths["calib"], x=x_tr[:200])
    np.savez(paths["eval"], x=x_ev, labels=y_ev)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--outlier-scale", type=float, default=OUTLIER_SCALE,
                    help="how much larger the outlier channels are (1e5: beyond fp16's range)")
    args = ap.parse_args()
    for k, p in make(args.out, outlier_scale=args.outlier_scale).items():
        print(f"{k}: {p}")


if __name__ == "__main__":
    main()

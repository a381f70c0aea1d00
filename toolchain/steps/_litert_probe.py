"""Loads a ``.tflite`` in LiteRT and runs it once: ``python -m edgeify.steps._litert_probe MODEL [INPUT.npy ...]``.

The inputs (by position; zeros where missing or of another shape) are cast to each input's dtype. Exit 0 and
``ok`` on success; a Python error prints one line and exits 3; a kernel that aborts kills the process, which is
why ``tflite-convert`` runs this in a subprocess before it keeps a converter's variant.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=argv[0])
        interp.allocate_tensors()
        for k, det in enumerate(interp.get_input_details()):
            value = np.load(argv[1 + k]) if len(argv) > 1 + k else None
            if value is None or tuple(value.shape) != tuple(det["shape"]):
                value = np.zeros(det["shape"], det["dtype"])
            interp.set_tensor(det["index"], value.astype(det["dtype"]))
        interp.invoke()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        print(f"{type(exc).__name__}: {text[0] if text else ''}")
        return 3
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

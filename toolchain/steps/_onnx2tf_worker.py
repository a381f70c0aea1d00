"""Runs onnx2tf in its own process for the ``tflite-convert`` step: ``python -m edgeify.steps._onnx2tf_worker REQ``.

onnx2tf reads files from and writes files into its working directory and calls ``sys.exit`` on errors, so
edgeify never runs it inside the build process. The request (JSON) names the ONNX copy, the output folder,
the batch size, the quantization type, onnxsim on/off and one calibration ``.npy`` per input (already
channels-last where onnx2tf moves channels; used as is: mean 0, std 1).
"""

from __future__ import annotations

import json
import sys

from edgeify.steps.base import fault_point


def main(argv: list[str]) -> int:
    import numpy as np
    import onnx2tf

    fault_point("onnx2tf")  # interrupt tests: the build is signalled while this subprocess runs

    with open(argv[0], encoding="utf-8") as f:
        req = json.load(f)
    onnx2tf.convert(
        input_onnx_file_path=req["onnx"],
        output_folder_path=req["out"],
        batch_size=req["batch"],
        copy_onnx_input_output_names_to_tflite=True,
        output_integer_quantized_tflite=True,
        quant_type=req["quant_type"],
        custom_input_op_name_np_data_path=[[name, path, np.asarray(0.0, np.float32), np.asarray(1.0, np.float32)]
                                           for name, path in req["calib"]],
        input_quant_dtype="int8",
        output_quant_dtype="int8",
        not_use_onnxsim=not req["onnxsim"],
        replace_to_pseudo_operators=list(req.get("pseudo_ops", [])),
        non_verbose=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

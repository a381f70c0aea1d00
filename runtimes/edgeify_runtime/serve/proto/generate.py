"""Regenerate the gRPC stubs from ``grpc_predict_v2.proto`` (run from anywhere; needs grpcio-tools==1.85.1):

    python runtimes/edgeify_runtime/serve/proto/generate.py

Runs ``python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. grpc_predict_v2.proto`` here, then makes
the stubs fit the runtime package: ``from __future__ import annotations`` first (the package's Python 3.8 rule)
and a relative import of the messages module in the service stub.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUTURE = "from __future__ import annotations\n"


def main() -> int:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.",
                    "grpc_predict_v2.proto"], cwd=HERE, check=True)
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py"):
        path = HERE / name
        text = path.read_text(encoding="utf-8")
        text = text.replace("import grpc_predict_v2_pb2 as", "from . import grpc_predict_v2_pb2 as")
        lines = text.splitlines(keepends=True)
        head = 0
        while head < len(lines) and (lines[head].startswith("#") or not lines[head].strip()):
            head += 1
        path.write_text("".join(lines[:head]) + FUTURE + "".join(lines[head:]), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Install edgeify with every backend into the current Python environment.
#   ./install.sh          edgeify + edgeify-runtime (editable) with all engines and converters
#   ./install.sh --dev    also test dependencies and the system packages the test suite needs
#                         (openssh-server for real sshd devices, iproute2 for network namespaces,
#                          qemu-user-static + binfmt-support + debootstrap for the emulated arm64 device,
#                          postgresql for the team results store, chromium to open the HTML report)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# One Python version: constraints.txt is one environment resolved and tested on CPython 3.11 (numpy 2.4.6 has no
# 3.10 wheels; on 3.12/3.13 the pinned set was never tested). Refuse others before touching anything.
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "?")
if [ "$pyver" != "3.11" ]; then
  echo "install.sh: edgeify needs Python 3.11 (this is $PY, Python $pyver): constraints.txt is resolved and tested" >&2
  echo "  for 3.11 only. fix: python3.11 -m venv .venv && . .venv/bin/activate && ./install.sh  (or PYTHON=python3.11 ./install.sh)" >&2
  exit 2
fi

if [ "$dev" = 1 ]; then
  pkgs=(openssh-server iproute2 qemu-user-static binfmt-support debootstrap postgresql chromium prometheus)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "system packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

extras="all"
[ "$dev" = 1 ] && extras="all,dev"
say "python packages: edgeify[$extras] + edgeify-runtime ($("$PY" --version))"
"$PY" -m pip install -q --upgrade pip
# torch: the CPU-only build, on purpose (edgeify converts and checks on the CPU; the CUDA build is several GB
# more). torch==2.13.0+cpu satisfies constraints.txt's torch==2.13.0. Where your package index has no CPU build,
# say so with EDGEIFY_TORCH (e.g. EDGEIFY_TORCH=torch==2.13.0: whatever build the index gives, maybe CUDA).
TORCH=${EDGEIFY_TORCH:-torch==2.13.0+cpu}
say "torch: $TORCH"
if ! "$PY" -m pip install -q -c constraints.txt "$TORCH"; then
  echo "install.sh: $TORCH is not on your package index. fix: add PyTorch's CPU wheel index (pip's" >&2
  echo "  --extra-index-url, the CPU choice of the install selector on PyTorch's website), or EDGEIFY_TORCH=torch==2.13.0 ./install.sh" >&2
  exit 1
fi
# the runtime with its serving extras (the device service: `python -m edgeify_runtime.serve`, REST + gRPC), pinned by
# constraints.txt like everything else (a bare `pip install ./runtimes[serve]` would take the newest uvicorn)
"$PY" -m pip install -q -c constraints.txt -e "./runtimes[serve,grpc]" -e ".[$extras]"

# Packages whose declared dependencies would break the environment are installed with --no-deps here.
# onnx2tf pins numpy 1.26.4, onnx 1.19, onnxruntime 1.23, protobuf 4.25 and tensorflow 2.19 (it would downgrade
# all of them); tf-keras 2.21 depends on "tensorflow", while this environment has the same release as
# tensorflow-cpu. Everything they import at run time comes with edgeify[tflite]. `pip check` then lists their
# unmet pins: expected, see README "Install".
# onnx2torch (ONNX transformers to TFLite through litert-torch) requires torchvision, which must not sit beside
# this torch (FACTS.md); edgeify imports it without torchvision (its NMS / RoiAlign converters are refused by name).
# executorch 1.5.1 asks for pandas, hydra-core, omegaconf, coremltools 9.0 (x86-64 Linux), scikit-learn and more
# that its export/XNNPACK/runtime path never imports; what it does import comes with edgeify[executorch].
NO_DEPS=("onnx2tf==1.29.24" "tf-keras==2.21.0" "onnx2torch==1.5.15" "executorch==1.5.1")
if [ "${#NO_DEPS[@]}" -gt 0 ]; then
  "$PY" -m pip install -q --no-deps "${NO_DEPS[@]}"
fi

# Engine plugins shipped in this repository, each its own distribution registered only through entry points
# (README "Engines"): ncnn (pnnx conversion on the host, the ncnn wheel on the device).
"$PY" -m pip install -q -c constraints.txt "./plugins/ncnn[host]"

"$PY" -m pip check || echo "pip check: see README 'Install' for the expected messages of --no-deps packages"
say "done: $(edgeify version 2>/dev/null || echo '?') — try: edgeify targets"

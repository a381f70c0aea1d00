"""What makes a TensorRT engine valid on a Jetson: the device's identity, read from files (no engine import).

A TensorRT engine plan only runs on the GPU and TensorRT version that built it, so edgeify builds it on the
device and keys it by the device fingerprint below: the L4T release (``/etc/nv_tegra_release``; JetPack is a
label derived from it), the TensorRT and CUDA versions installed, the GPU compute capability (from the device
tree), plus the build's own inputs (precision, DLA core, ONNX sha256, build options) in ``engine_cache_key``.

Every reader takes ``root`` (default ``/``) and never raises for a missing or unreadable file: the field is then
None. Sources, in order:

* L4T: the first line of ``etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.3, GCID: ..., BOARD: ...``).
* board: ``proc/device-tree/model``, else ``sys/firmware/devicetree/base/model`` (NUL-terminated text).
* compute capability: the SoC in ``.../compatible`` (``nvidia,tegra234`` = Orin = 8.7), else the model name.
* TensorRT: the ``tensorrt`` Python distribution's metadata, else the Debian package database
  (``libnvinfer-bin``, ``libnvinfer10``, ``libnvinfer8``, ``tensorrt``), else ``libnvinfer.so.X.Y.Z`` in the
  library directories, else the banner of ``trtexec --help`` (the only one that runs a program).
* CUDA: ``usr/local/cuda/version.json``, else ``usr/local/cuda/version.txt``, else the ``cuda-cudart-*`` package.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
from typing import Any

from .trtexec import parse_version_tag

#: L4T release -> JetPack release, for the releases whose pairing is NVIDIA-documented (a label only: the
#: fingerprint keys on the L4T release itself, so a missing entry never changes a cache decision)
JETPACK_BY_L4T = {
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}

#: device-tree SoC compatible string -> CUDA compute capability of its integrated GPU
COMPUTE_CAPABILITY_BY_SOC = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}

#: (words in the device-tree model, edgeify board name, compute capability), first match wins
BOARDS = (
    (("agx", "orin"), "jetson-agx-orin", "8.7"),
    (("orin", "nx"), "jetson-orin-nx", "8.7"),
    (("orin", "nano"), "jetson-orin-nano", "8.7"),
    (("orin",), None, "8.7"),
    (("xavier",), None, "7.2"),
    (("tx2",), None, "6.2"),
    (("nano",), None, "5.3"),
)

TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-cu13", "tensorrt_cu13",
                          "tensorrt-libs")
TENSORRT_PACKAGES = ("libnvinfer-bin", "libnvinfer10", "libnvinfer8", "tensorrt", "python3-libnvinfer")
LIB_DIRS = ("usr/lib/aarch64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/local/tensorrt/lib", "usr/lib64")

#: what a Jetson needs for TensorRT engines, in one line (EngineMissingError hints)
INSTALL_HINT = ("on the Jetson: sudo apt-get install nvidia-jetpack (JetPack: TensorRT, trtexec in "
                "/usr/src/tensorrt/bin, the tensorrt Python module), or just sudo apt-get install tensorrt "
                "python3-libnvinfer; running the engine from Python also needs a CUDA binding: "
                "pip install cuda-python (or pycuda)")


def _read(root: str, rel: str) -> str | None:
    try:
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def parse_nv_tegra_release(text: str | None) -> dict[str, Any] | None:
    """``# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, ...`` -> l4t ``36.4.3`` and its fields."""
    if not text:
        return None
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = re.search(r"R(\d+)\s*\(([^)]*)\)\s*,\s*REVISION:\s*([\d.]+)", first)
    if not m:
        return None
    revision = m.group(3).strip(".")
    parts = [m.group(1), *revision.split(".")]
    while len(parts) < 3:
        parts.append("0")
    fields = {}
    for item in first.lstrip("# ").split(","):
        key, sep, value = item.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    l4t = ".".join(parts[:3])
    return {"l4t": l4t, "release": f"R{m.group(1)}", "revision": revision, "kind": m.group(2),
            "board": fields.get("board"), "gcid": fields.get("gcid"), "raw": first}


def jetpack_for(l4t: str | None) -> str | None:
    return JETPACK_BY_L4T.get(l4t or "")


def device_tree(root: str, name: str) -> str | None:
    text = _read(root, f"proc/device-tree/{name}")
    if text is None:
        text = _read(root, f"sys/firmware/devicetree/base/{name}")
    return text


def board_for_model(model: str | None) -> tuple[str | None, str | None]:
    """(edgeify board name or None, compute capability or None) from a device-tree model string."""
    words = (model or "").lower()
    if "jetson" not in words and "orin" not in words and "tegra" not in words:
        return None, None
    for keys, board, cc in BOARDS:
        if all(k in words for k in keys):
            return board, cc
    return None, None


def compute_capability(root: str = "/", model: str | None = None) -> str | None:
    compatible = device_tree(root, "compatible") or ""
    for token in compatible.replace("\x00", ",").split(","):
        soc = token.strip().split("-")[0]
        if soc in COMPUTE_CAPABILITY_BY_SOC:
            return COMPUTE_CAPABILITY_BY_SOC[soc]
    return board_for_model(model)[1]


def _dpkg_versions(root: str, names: tuple[str, ...] | None = None, prefix: str | None = None) -> dict[str, str]:
    """Installed package -> version from the Debian package database (no dpkg-query needed)."""
    text = _read(root, "var/lib/dpkg/status") or ""
    found: dict[str, str] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(" "):
                fields[key.strip()] = value.strip()
        pkg, status = fields.get("Package"), fields.get("Status", "")
        if not pkg or "installed" not in status.split() or "Version" not in fields:
            continue
        if (names and pkg in names) or (prefix and pkg.startswith(prefix)):
            found[pkg] = fields["Version"]
    return found


def _release(version: str | None) -> str | None:
    """``10.3.0.30-1+cuda12.5`` -> ``10.3.0``; ``8.5.2-1+cuda11.4`` -> ``8.5.2``."""
    if not version:
        return None
    m = re.match(r"(?:\d+:)?(\d+(?:\.\d+){0,2})", version.strip())
    return m.group(1) if m else None


def find_trtexec(root: str = "/") -> str | None:
    """trtexec on PATH, else where JetPack and the TensorRT tarballs put it."""
    if root in ("/", ""):
        found = shutil.which("trtexec")
        if found:
            return found
    for loc in TRTEXEC_LOCATIONS:
        path = os.path.join(root, loc.lstrip("/"))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def trtexec_banner_version(trtexec: str, timeout: float = 60.0) -> str | None:
    """The TensorRT version in ``trtexec --help``'s banner (``[TensorRT v100300]`` -> ``10.3.0``)."""

    try:
        proc = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version_tag(proc.stdout + "\n" + proc.stderr)


def tensorrt_version(root: str = "/", trtexec: str | None = None) -> tuple[str | None, str | None]:
    """(TensorRT version, where it was found) or (None, None)."""
    if root in ("/", ""):
        try:
            from importlib import metadata
        except ImportError:  # pragma: no cover - Python < 3.8
            metadata = None  # type: ignore[assignment]
        for dist in TENSORRT_DISTRIBUTIONS if metadata else ():
            try:
                return _release(metadata.version(dist)), f"python distribution {dist}"
            except Exception:
                continue
    pkgs = _dpkg_versions(root, TENSORRT_PACKAGES)
    for name in TENSORRT_PACKAGES:
        if name in pkgs and _release(pkgs[name]):
            return _release(pkgs[name]), f"debian package {name} {pkgs[name]}"
    for lib_dir in LIB_DIRS:
        for path in sorted(glob.glob(os.path.join(root, lib_dir, "libnvinfer.so.*.*.*"))):
            m = re.search(r"libnvinfer\.so\.(\d+\.\d+\.\d+)", path)
            if m:
                return m.group(1), f"library {os.path.basename(path)}"
    if trtexec:
        version = trtexec_banner_version(trtexec)
        if version:
            return version, f"banner of {trtexec} --help"
    return None, None


def cuda_version(root: str = "/") -> str | None:
    text = _read(root, "usr/local/cuda/version.json")
    if text:
        try:
            return _release(str(json.loads(text)["cuda"]["version"]))
        except (ValueError, KeyError, TypeError):
            pass
    text = _read(root, "usr/local/cuda/version.txt")
    if text:
        m = re.search(r"CUDA Version\s+([\d.]+)", text)
        if m:
            return _release(m.group(1))
    pkgs = _dpkg_versions(root, prefix="cuda-cudart-")
    for name in sorted(pkgs):
        if not name.startswith("cuda-cudart-dev"):
            return _release(pkgs[name])
    return None


def tensorrt_python_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def jetson_fingerprint(root: str = "/") -> dict[str, Any]:
    """The device facts a TensorRT engine depends on. ``is_jetson`` is False on anything without L4T."""
    release = parse_nv_tegra_release(_read(root, "etc/nv_tegra_release"))
    model_text = device_tree(root, "model")
    model = model_text.replace("\x00", "").strip() if model_text else None
    board, _ = board_for_model(model)
    trtexec = find_trtexec(root)
    trt, trt_source = tensorrt_version(root, trtexec)
    l4t = release["l4t"] if release else None
    return {
        "is_jetson": release is not None,
        "model": model,
        "board": board,
        "l4t": l4t,
        "jetpack": jetpack_for(l4t),
        "nv_tegra_release": release["raw"] if release else None,
        "compute_capability": compute_capability(root, model),
        "tensorrt": trt,
        "tensorrt_source": trt_source,
        "cuda": cuda_version(root),
        "trtexec": trtexec,
        "tensorrt_python": tensorrt_python_available() if root in ("/", "") else False,
    }


#: the fingerprint fields that decide whether an engine plan is still valid
ENGINE_KEY_FIELDS = ("l4t", "tensorrt", "cuda", "compute_capability")


def engine_cache_key(fingerprint: dict[str, Any], *, precision: str, onnx_sha256: str, dla_core: int | None,
                     build: dict[str, Any] | None = None) -> str:
    """sha256 over the device facts and the build inputs; a different key means the plan must be rebuilt."""
    payload = {k: fingerprint.get(k) for k in ENGINE_KEY_FIELDS}
    payload.update({"precision": precision, "onnx_sha256": onnx_sha256, "dla_core": dla_core,
                    "build": build or {}})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two key payloads (fingerprint fields + build inputs)."""
    changes = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            changes.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return changes


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgeify_runtime.jetson",
                                     description="Print the Jetson/TensorRT fingerprint as JSON.")
    parser.add_argument("--root", default="/", help="read the identity files under this root")
    args = parser.parse_args(argv)
    print(json.dumps(jetson_fingerprint(args.root), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

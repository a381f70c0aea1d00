"""Run a bundle's device steps on the device: ``python -m edgeify_runtime.device_steps --bundle DIR``.

``edgeify build`` runs the host steps and records the steps that must run on the device in the manifest's
``device_steps`` (today: ``tensorrt-engine``, the TensorRT engine built on the Jetson). ``edgeify deploy`` and
``edgeify bench --device`` run this module on the device after installing the bundle. It prints ONE JSON object
on stdout::

    {"ok": true, "bundle": "...", "steps": [{"id": "engine", "uses": "tensorrt-engine",
                                             "decision": "built|reused|rebuilt", "reason": "...",
                                             "key": "...", "plan": "...", "meta": {...}}]}

or ``{"ok": false, "error": {"type", "message", "hint", "exit_code"}}`` with the error's exit code (11: TensorRT
is not installed, 8: the build failed, 12: the bundle is damaged, 2: bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .bench import RequestError
from .envelope import respond
from .errors import BundleError
from .manifest import Manifest
from .trt_engine import STEP_KIND, ensure_engine


def run_device_steps(bundle: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = Manifest.read(bundle)
    manifest.verify_files(bundle)
    done = []
    for step in manifest.raw.get("device_steps") or []:
        kind = step.get("uses") if isinstance(step, dict) else None
        if kind != STEP_KIND:
            raise BundleError(f"device step {step!r}: this edgeify-runtime cannot run step kind {kind!r}",
                              hint="pip install --upgrade edgeify-runtime (the bundle may come from a newer edgeify)")
        record = ensure_engine(bundle, manifest, options)
        done.append({"id": step.get("id"), "uses": kind, **record.to_dict()})
    return {"ok": True, "bundle": bundle, "bundle_digest": manifest.bundle_digest, "steps": done}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeify_runtime.device_steps",
                                     description="Run the bundle's device steps (e.g. build its TensorRT engine).")
    parser.add_argument("--bundle", required=True, help="the bundle directory on this device")
    parser.add_argument("--options", default=None, help="JSON object of engine options (e.g. '{\"dla_core\": 0}')")
    args = parser.parse_args(argv)

    def call() -> dict[str, Any]:
        try:
            options = json.loads(args.options) if args.options else None
        except ValueError as exc:
            raise RequestError(f"--options is not JSON: {exc}", hint="pass a JSON object") from None
        if options is not None and not isinstance(options, dict):
            raise RequestError("--options must be a JSON object", hint="pass a JSON object")
        return run_device_steps(args.bundle, options)

    return respond(call)


if __name__ == "__main__":
    sys.exit(main())

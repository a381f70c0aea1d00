"""``edgeify bench BUNDLE --device NAME`` / ``--devices tag:pi``: the benchmark agent on real devices.

For each device: connect, make sure the bundle and the runtime are deployed (uploading only what is missing;
``edgeify deploy`` does the same with a full hash check), run ``python -m edgeify_runtime.bench`` there with
``PYTHONPATH`` pointing at the cached runtime zip and the protocol as its JSON request, with a deadline; parse
and validate the JSON it prints, and store it in the results store under the device's name. The result carries
the fingerprint the agent took on the device at run time.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any

from ..errors import BundleError, RemoteCommandError
from .deployer import DeployReport, DeviceSite, deploy, runtime_package
from .fleet import Outcome, run_fleet
from .inventory import Device, Inventory

#: seconds allowed on top of the protocol's own bounds (engine import, model load, verify)
DEADLINE_SLACK_S = 120.0
#: the client waits this much longer than the device-side deadline, so the device reports its own timeout
CLIENT_GRACE_S = 15.0
#: run "$@" under coreutils/busybox `timeout` when the device has it (then the agent cannot outlive its
#: deadline even when the connection is gone), else plainly; $1 is the deadline in seconds
DEVICE_DEADLINE = ('d=$1; shift; if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 "$d" "$@"; fi; '
                   'exec "$@"')


def agent_deadline(proto: dict[str, Any]) -> float:
    """Warmup and timed phases are each bounded by ``max_duration_s``; plus import/load/verify slack."""
    return 2 * float(proto.get("max_duration_s") or 120.0) + DEADLINE_SLACK_S


def run_agent_on_site(site: DeviceSite, report: DeployReport, proto: dict[str, Any], *,
                      timeout: float | None = None) -> dict[str, Any]:
    """Run the agent on the deployed ``current`` version of ``report.name``; return its validated result."""
    from ..bench_local import parse_agent_output
    from ..benchmark import validate_result

    rt = runtime_package()
    workdir = report.workdir or ""
    remote_bundle = posixpath.join(workdir, "bundles", report.name, "current")
    request = {"bundle": remote_bundle, **{k: v for k, v in proto.items() if v is not None}}
    env = {"PYTHONPATH": posixpath.join(workdir, "runtime", rt.file)}
    if os.environ.get("EDGEIFY_DEBUG") == "1":
        env["EDGEIFY_DEBUG"] = "1"
    deadline = timeout or agent_deadline(proto)
    cmd = ["sh", "-c", DEVICE_DEADLINE, "sh", str(int(deadline)), *site.python, "-m", "edgeify_runtime.bench"]
    rc, out, err = site.transport.run(cmd, input=json.dumps(request), env=env, timeout=deadline + CLIENT_GRACE_S)
    if rc == 124:  # `timeout` stopped it (the agent may have printed an "interrupted" result first)
        raise RemoteCommandError(f"device {site.name}: the benchmark agent ran past its {int(deadline)} s deadline "
                                 "and was stopped on the device",
                                 hint="lower --runs/--min-duration, or check what else runs on the device")
    if rc in (126, 127) and not out.strip():
        raise RemoteCommandError(f"device {site.name}: cannot run `{' '.join(site.python)}`: "
                                 f"{err.strip()[-300:]}",
                                 hint="install Python 3 on the device or set it: edgeify devices add "
                                      f"{site.name} ... --python /path/to/python3 --replace")
    result = validate_result(parse_agent_output(out, err, rc, f"device {site.name}"))
    if result.get("bundle_digest") != report.digest:
        raise BundleError(f"device {site.name} benchmarked bundle {str(result.get('bundle_digest'))[:12]}, "
                          f"not {report.digest[:12]} (another deploy replaced it meanwhile?)",
                          hint="rerun the benchmark")
    return result


#: seconds allowed for a bundle's device steps (a TensorRT engine build takes minutes on an Orin Nano)
DEVICE_STEPS_TIMEOUT_S = 3600.0


def run_device_steps_on_site(site: DeviceSite, report: DeployReport, *, options: dict[str, Any] | None = None,
                             timeout: float = DEVICE_STEPS_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run ``python -m edgeify_runtime.device_steps`` on the installed bundle; return what each step did.

    Raises the typed error the device reported: EngineMissingError (exit 11) when the device has no TensorRT,
    ConversionError (8) when the engine build failed, BundleError (12)."""
    from ..bench_local import parse_agent_output

    rt = runtime_package()
    workdir = report.workdir or ""
    remote_bundle = posixpath.join(workdir, "bundles", report.name, "current")
    env = {"PYTHONPATH": posixpath.join(workdir, "runtime", rt.file)}
    if os.environ.get("EDGEIFY_DEBUG") == "1":
        env["EDGEIFY_DEBUG"] = "1"
    cmd = ["sh", "-c", DEVICE_DEADLINE, "sh", str(int(timeout)), *site.python, "-m", "edgeify_runtime.device_steps",
           "--bundle", remote_bundle]
    if options:
        cmd += ["--options", json.dumps(options)]
    rc, out, err = site.transport.run(cmd, env=env, timeout=timeout + CLIENT_GRACE_S)
    if rc == 124:
        raise RemoteCommandError(f"device {site.name}: the device steps ran past their {int(timeout)} s deadline",
                                 hint="see the engine build log in the bundle's engines/ directory on the device")
    result = parse_agent_output(out, err, rc, f"device {site.name} (device steps)")
    return list(result.get("steps") or [])


def bench_device(device: Device, bundle: str | os.PathLike[str], proto: dict[str, Any], *, store: bool = True,
                 force: bool = False, trust_new_host_key: bool = False, timeout: float | None = None,
                 passphrase: str | None = None) -> dict[str, Any]:
    """Deploy-if-needed, benchmark on ``device``, store; returns the agent's result plus device and deploy info."""
    from .connect import open_site

    with open_site(device, trust_new_host_key=trust_new_host_key, passphrase=passphrase) as site:
        report = deploy(site, bundle, device=device, force=force, hash_check=False)
        result = run_agent_on_site(site, report, proto, timeout=timeout)
    result["device"] = device.name
    result["deploy"] = {"status": report.status, "uploaded_bytes": report.uploaded_bytes,
                        "timings_s": report.timings_s, "warnings": report.warnings}
    if report.device_steps:
        result["deploy"]["device_steps"] = report.device_steps
    if store:
        from ..paths import results_db
        from ..results import ResultsStore

        result["result_id"] = ResultsStore(results_db()).add(result, device=device.name,
                                                             bundle=str(Path(bundle).resolve()))
    return result


def benchmark_on_device(bundle: str | os.PathLike[str], device: str, proto: dict[str, Any], *,
                        store: bool = True, force: bool = False, trust_new_host_key: bool = False,
                        inventory: Inventory | None = None, timeout: float | None = None) -> dict[str, Any]:
    """``benchmark.benchmark_bundle``'s path for ``--device NAME`` (a device in the devices file)."""
    inv = inventory or Inventory()
    if device.startswith("tag:") or "," in device:
        from ..errors import ConfigError

        raise ConfigError(f"--device takes one device name, not {device!r}", hint=f"use --devices {device}")
    return bench_device(inv.get(device), bundle, proto, store=store, force=force,
                        trust_new_host_key=trust_new_host_key, timeout=timeout)


def benchmark_fleet(bundle: str | os.PathLike[str], selector: str, proto: dict[str, Any], *, store: bool = True,
                    force: bool = False, trust_new_host_key: bool = False, inventory: Inventory | None = None,
                    max_workers: int | None = None, timeout: float | None = None) -> list[Outcome[dict[str, Any]]]:
    """``--devices tag:pi``: every selected device in parallel; one result or one error per device."""
    inv = inventory or Inventory()
    devices = inv.select(selector)
    runtime_package()  # build the zip once, before the threads
    return run_fleet(devices, lambda d: bench_device(d, bundle, proto, store=store, force=force,
                                                     trust_new_host_key=trust_new_host_key, timeout=timeout),
                     max_workers=max_workers)


def outputs_on_site(site: DeviceSite, report: DeployReport, inputs_npz: str | os.PathLike[str], local_dir: Path,
                    *, proto: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Run the deployed bundle on a fixed input set on the device; bring its outputs back as a local .npz.

    Used to prove a bundle gives the same answers on the device as on the host (host-vs-device parity).
    Returns (agent result, local path of the outputs .npz). Remote files are removed afterwards.
    """
    import uuid

    tag = uuid.uuid4().hex[:12]
    io_dir = posixpath.join(report.workdir or "", "io")
    remote_in, remote_out = posixpath.join(io_dir, f"{tag}-inputs.npz"), posixpath.join(io_dir, f"{tag}-outputs.npz")
    site.transport.run(["mkdir", "-p", io_dir], timeout=30)
    try:
        site.transport.put(str(inputs_npz), remote_in)
        quick = {"warmup": 1, "runs": 3, "min_duration_s": 0.0, "max_duration_s": 60.0}
        result = run_agent_on_site(site, report, {**quick, **(proto or {}), "inputs_npz": remote_in,
                                                  "outputs_npz": remote_out})
        local_dir.mkdir(parents=True, exist_ok=True)
        local = local_dir / f"{site.name}-{tag}-outputs.npz"
        site.transport.get(remote_out, str(local))
    finally:
        site.transport.run(["rm", "-f", remote_in, remote_out], timeout=30)
    return result, local


__all__ = ["agent_deadline", "bench_device", "benchmark_fleet", "benchmark_on_device", "outputs_on_site",
           "run_agent_on_site", "run_device_steps_on_site"]

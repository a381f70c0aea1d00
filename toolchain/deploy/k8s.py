"""``edgeify apps manifests BUNDLE --device DEV -o DIR``: Kubernetes manifests (an edge cluster, e.g. k3s on the
device) for the service, ``python -m edgeify_runtime.serve``.

Written: a Deployment (one replica pinned to the device's node with
``nodeSelector kubernetes.io/hostname``, the bundle mounted read-only from where ``edgeify deploy`` installs it
on that node: ``WORKDIR/bundles/NAME/current``), liveness and readiness probes on ``/v2/health/live|ready``,
memory requests from the bundle's measured peak RSS (the newest benchmark of it in the results store, else
``memory_mib``), Prometheus scrape annotations, and a Service. The image must hold Python, edgeify-runtime with
the ``serve`` extra and the bundle's engine (``image``; edgeify builds no images).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .deployer import LocalBundle, bundle_name
from .inventory import Device

#: Kubernetes version whose schemas the manifests are checked against in tests (kubernetes-validate)
K8S_VERSION = "1.33"
DEFAULT_IMAGE = "edgeify-runtime-serve:0.1.0"
#: memory request when no benchmark of the bundle recorded a peak RSS (MiB), and the limit's headroom
FALLBACK_MEMORY_MIB = 512
LIMIT_FACTOR = 2.0


def measured_peak_rss_mb(bundle: Path) -> float | None:
    """The peak RSS (MB) of the newest stored benchmark of ``bundle``, or None."""
    try:
        from ..results import open_store

        for result in open_store().query(bundle=str(bundle.resolve()), limit=5, samples=False):
            if result.peak_rss_mb:
                return float(result.peak_rss_mb)
    except Exception:  # no store yet, or an unreadable one: the fallback applies
        return None
    return None


def manifests(bundle: str | os.PathLike[str], device: Device, *, name: str | None = None, port: int = 8080,
              image: str = DEFAULT_IMAGE, memory_mib: int | None = None, max_batch: int = 8,
              namespace: str = "default") -> list[dict[str, Any]]:
    """The Deployment and Service for serving ``bundle`` on ``device``'s node."""
    local = LocalBundle.read(bundle)
    app = bundle_name(local, name)
    k8s_name = "edgeify-" + app.lower().replace("_", "-").replace(".", "-")[:50]
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a TCP port (1-65535)")
    workdir = device.remote_workdir
    if workdir.startswith("~"):
        raise ConfigError(f"device {device.name}: the work directory {workdir!r} is relative to a home directory; "
                          "a hostPath volume needs an absolute path",
                          hint=f"edgeify devices add {device.name} ... --workdir /var/lib/edgeify --replace")
    bundle_dir = posixpath.join(workdir, "bundles", app, "current")
    measured = measured_peak_rss_mb(local.path)
    request_mib = memory_mib or (int(measured * 1.25) + 64 if measured else FALLBACK_MEMORY_MIB)
    labels = {"app.kubernetes.io/name": "edgeify-serve", "app.kubernetes.io/instance": k8s_name}
    meta = {"namespace": namespace, "labels": labels}
    args = ["--bundle", "/bundle", "--host", "0.0.0.0", "--port", str(port), "--max-batch", str(max_batch),
            "--model-name", app]
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    ready = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": k8s_name, **meta},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics",
                "edgeify.io/bundle-digest": local.digest,
                "edgeify.io/memory-request": f"{'measured peak RSS' if measured and not memory_mib else 'given'}"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": device.name},
                "containers": [{
                    "name": "serve", "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "edgeify_runtime.serve"], "args": args,
                    "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                    "livenessProbe": {**probe, "initialDelaySeconds": 5}, "readinessProbe": ready,
                    "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2,
                                     "failureThreshold": 60},
                    "resources": {"requests": {"memory": f"{request_mib}Mi", "cpu": "250m"},
                                  "limits": {"memory": f"{int(request_mib * LIMIT_FACTOR)}Mi"}},
                    "volumeMounts": [{"name": "bundle", "mountPath": "/bundle", "readOnly": True},
                                     {"name": "tmp", "mountPath": "/tmp"}],
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "runAsNonRoot": True, "runAsUser": 65534},
                }],
                "volumes": [{"name": "bundle", "hostPath": {"path": bundle_dir, "type": "Directory"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
            }}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": k8s_name, **meta},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": "http",
                                                       "protocol": "TCP"}]}}
    return [deployment, service]


def write_manifests(docs: list[dict[str, Any]], out: str | os.PathLike[str]) -> list[Path]:
    """One YAML file per object in ``out`` (created; existing files of the same names are replaced)."""
    import yaml

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"-o {root}: not a directory", hint="pass a directory for the manifests")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in docs:
        path = root / f"{doc['metadata']['name']}-{doc['kind'].lower()}.yaml"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


__all__ = ["K8S_VERSION", "manifests", "measured_peak_rss_mb", "write_manifests"]

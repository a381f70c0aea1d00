"""``edgeify apps manifests BUNDLE --device DEV -o DIR``: Kubernetes manifests (an edge cluster, e.g. k3s on the
devices) for the service, ``python -m edgeify_runtime.serve``.

Written, as plain YAML (no anchors):

- a **Deployment** pinned to the device's node by a real node label: ``kubernetes.io/hostname=NODE`` with
  ``--node``, else ``edgeify.io/device=<device>``, a label you put on the node once
  (``kubectl label node NODE edgeify.io/device=DEVICE``); the bundle mounted read-only from the versioned path
  ``WORKDIR/bundles/NAME/sha256-<digest>`` that ``edgeify deploy`` keeps on the node (never the ``current`` link,
  which flips under a running pod); liveness / readiness / startup probes on the Open Inference Protocol health
  endpoints; memory requests from the bundle's measured peak RSS (the newest benchmark in the results store),
  else the value given, else a default, each labelled as what it is; Prometheus scrape annotations;
- or, with ``kind="daemonset"`` (``--kind daemonset``), a **DaemonSet**: one pod on every node labelled
  ``edgeify.io/serve=<app>`` (``kubectl label node NODE edgeify.io/serve=APP`` on each node the bundle was
  deployed to; ``--node`` pins it to one hostname instead), rolled node by node (``maxUnavailable: 1``); the same
  pod spec, probes and versioned bundle path. A DaemonSet has no scale subresource, so no autoscaler or adapter
  rule is written with it (one pod per node is the point);
- a **Service**;
- (Deployment only) an ``autoscaling/v2`` **HorizontalPodAutoscaler** that scales on the service's p95 request latency
  (``edgeify_request_latency_p95_seconds``, a Pods metric);
- the **prometheus-adapter rule** that computes that metric from the service's Prometheus histogram, as a
  ConfigMap (``config.yaml`` for prometheus-adapter's ``--config``) beside it.

The image must hold Python, edgeify-runtime with the ``serve`` extra and the bundle's engine (``image``; edgeify
builds no images).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from edgeify_runtime.device_files import DIGEST_LINK_PREFIX

from ..errors import ConfigError
from ..results import open_store
from .deployer import LocalBundle, bundle_name
from .inventory import Device

#: Kubernetes version whose schemas the manifests are checked against in tests (kubernetes-validate)
K8S_VERSION = "1.33"
DEFAULT_IMAGE = "edgeify-runtime-serve:0.1.0"
#: memory request when no benchmark of the bundle recorded a peak RSS (MiB), and the limit's headroom
FALLBACK_MEMORY_MIB = 512
LIMIT_FACTOR = 2.0
#: the node label the README tells users to set when they do not pass --node
DEVICE_LABEL = "edgeify.io/device"
#: the node label a DaemonSet selects (set on every node that should run the service)
SERVE_LABEL = "edgeify.io/serve"
#: the workload kinds ``apps manifests --kind`` writes
KINDS = ("deployment", "daemonset")
#: the custom metric the HPA scales on, and the adapter rule that serves it
LATENCY_METRIC = "edgeify_request_latency_p95_seconds"
#: HPA latency target when neither --latency-target-ms, the bundle's latency budget nor a measurement gives one
FALLBACK_TARGET_MS = 100.0
#: the inference endpoints whose latency counts (health and metrics requests do not)
INFER_ENDPOINTS = "/v1/predict|/v2/models/.*infer"
#: prometheus-adapter's metricsQuery for the metric (its template: <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>>)
ADAPTER_QUERY = ('histogram_quantile(0.95, sum by (<<.GroupBy>>, le) (rate(<<.Series>>{<<.LabelMatchers>>,'
                 f'endpoint=~"{INFER_ENDPOINTS}"}}[2m])))')


def measured(bundle: Path) -> dict[str, float]:
    """``{"peak_rss_mb": ..., "p95_ms": ...}`` from the newest stored benchmarks of ``bundle`` (what is known)."""
    out: dict[str, float] = {}
    try:
        for result in open_store().query(bundle=str(bundle.resolve()), limit=5, samples=False):
            if result.peak_rss_mb and "peak_rss_mb" not in out:
                out["peak_rss_mb"] = float(result.peak_rss_mb)
            p95 = getattr(result.latency_ms, "p95", None)
            if p95 and "p95_ms" not in out:
                out["p95_ms"] = float(p95)
    except Exception:  # no store yet, or an unreadable one: the defaults apply, labelled as defaults
        return out
    return out


def measured_peak_rss_mb(bundle: Path) -> float | None:
    return measured(bundle).get("peak_rss_mb")


def adapter_rule() -> dict[str, Any]:
    """The prometheus-adapter rule that serves :data:`LATENCY_METRIC` per pod."""
    return {
        "seriesQuery": 'edgeify_request_duration_seconds_bucket{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^edgeify_request_duration_seconds_bucket$", "as": LATENCY_METRIC},
        "metricsQuery": ADAPTER_QUERY,
    }


def render_adapter_query(label_matchers: str, group_by: str) -> str:
    """The PromQL prometheus-adapter runs for the rule, with its template filled in (for checks against a live
    Prometheus: the latency the HPA would see)."""
    return (ADAPTER_QUERY.replace("<<.Series>>", "edgeify_request_duration_seconds_bucket")
            .replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by))


def _seconds_quantity(ms: float) -> str:
    """A Kubernetes quantity in seconds for ``ms`` milliseconds, e.g. 50 ms -> "50m"."""
    return f"{max(1, round(ms))}m"


def manifests(bundle: str | os.PathLike[str], device: Device, *, name: str | None = None, port: int = 8080,
              image: str = DEFAULT_IMAGE, memory_mib: int | None = None, max_batch: int = 8,
              namespace: str = "default", node: str | None = None, latency_target_ms: float | None = None,
              min_replicas: int = 1, max_replicas: int = 4,
              adapter_namespace: str = "monitoring", kind: str = "deployment") -> list[dict[str, Any]]:
    """Deployment, Service, HorizontalPodAutoscaler and the prometheus-adapter rule (ConfigMap); with
    ``kind="daemonset"`` a DaemonSet and a Service."""
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    local = LocalBundle.read(bundle)
    app = bundle_name(local, name)
    k8s_name = "edgeify-" + app.lower().replace("_", "-").replace(".", "-")[:50]
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a TCP port (1-65535)")
    if not 1 <= min_replicas <= max_replicas:
        raise ConfigError(f"--min-replicas {min_replicas} / --max-replicas {max_replicas}: need 1 <= min <= max")
    workdir = device.remote_workdir
    if workdir.startswith("~"):
        raise ConfigError(f"device {device.name}: the work directory {workdir!r} is relative to a home directory; "
                          "a hostPath volume needs an absolute path",
                          hint=f"edgeify devices add {device.name} ... --workdir /var/lib/edgeify --replace")

    bundle_dir = posixpath.join(workdir, "bundles", app, DIGEST_LINK_PREFIX + local.digest)
    facts = measured(local.path)
    if memory_mib:
        request_mib, memory_source = memory_mib, "given (--memory-mib)"
    elif "peak_rss_mb" in facts:
        request_mib = int(facts["peak_rss_mb"] * 1.25) + 64
        memory_source = f"measured: peak RSS {facts['peak_rss_mb']:.0f} MB (results store) x1.25 + 64 MiB"
    else:
        request_mib = FALLBACK_MEMORY_MIB
        memory_source = f"default {FALLBACK_MEMORY_MIB} MiB: no measured peak RSS (run edgeify bench on the bundle)"
    budget = local.manifest.raw.get("latency_budget_ms")
    if latency_target_ms:
        target_ms, target_source = float(latency_target_ms), "given (--latency-target-ms)"
    elif budget:
        target_ms, target_source = float(budget), "the bundle's latency budget"
    elif "p95_ms" in facts:
        target_ms = 2.0 * facts["p95_ms"] + 5.0
        target_source = f"measured: 2 x p95 {facts['p95_ms']:.2f} ms (results store) + 5 ms for HTTP"
    else:
        target_ms, target_source = FALLBACK_TARGET_MS, f"default {FALLBACK_TARGET_MS:g} ms (nothing measured)"
    if node:
        selector = {"kubernetes.io/hostname": node}
    else:
        selector = {SERVE_LABEL: k8s_name} if kind == "daemonset" else {DEVICE_LABEL: device.name}

    def labels() -> dict[str, str]:  # a fresh dict per use: the YAML has no anchors
        return {"app.kubernetes.io/name": "edgeify-serve", "app.kubernetes.io/instance": k8s_name}

    def meta(ns: str = namespace, **annotations: str) -> dict[str, Any]:
        m: dict[str, Any] = {"namespace": ns, "labels": labels()}
        if annotations:
            m["annotations"] = annotations
        return m

    args = ["--bundle", "/bundle", "--host", "0.0.0.0", "--port", str(port), "--max-batch", str(max_batch),
            "--model-name", app]
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    ready = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2}
    workload = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": k8s_name, **meta()},
        "spec": {"replicas": min_replicas, "selector": {"matchLabels": labels()}, "template": {
            "metadata": {"labels": labels(), "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics",
                "edgeify.io/bundle-digest": local.digest, "edgeify.io/memory-request": memory_source}},
            "spec": {
                "nodeSelector": selector,
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
    if kind == "daemonset":  # one pod per labelled node, replaced node by node
        spec = workload["spec"]
        del spec["replicas"]
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
        workload["kind"] = "DaemonSet"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": k8s_name, **meta()},
               "spec": {"selector": labels(), "ports": [{"name": "http", "port": port, "targetPort": "http",
                                                         "protocol": "TCP"}]}}
    if kind == "daemonset":
        return [workload, service]
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": k8s_name, **meta(**{"edgeify.io/latency-target": target_source})},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": k8s_name},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": LATENCY_METRIC},
                "target": {"type": "AverageValue", "averageValue": _seconds_quantity(target_ms)}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }}
    adapter = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{k8s_name}-adapter-rules", **meta(adapter_namespace)},
        "data": {"config.yaml": dump({"rules": [adapter_rule()]})},
    }
    return [workload, service, hpa, adapter]


def _plain_dumper() -> Any:
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # never write &id001 / *id001
            return True

    return Plain


def dump(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.dump(doc, Dumper=_plain_dumper(), sort_keys=False)


def write_manifests(docs: list[dict[str, Any]], out: str | os.PathLike[str]) -> list[Path]:
    """One YAML file per object in ``out`` (created; existing files of the same names are replaced)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"-o {root}: not a directory", hint="pass a directory for the manifests")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in docs:
        path = root / f"{doc['metadata']['name']}-{doc['kind'].lower()}.yaml"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(dump(doc), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


__all__ = ["ADAPTER_QUERY", "DEVICE_LABEL", "K8S_VERSION", "KINDS", "LATENCY_METRIC", "SERVE_LABEL", "adapter_rule",
           "dump", "manifests", "measured", "measured_peak_rss_mb", "render_adapter_query", "write_manifests"]

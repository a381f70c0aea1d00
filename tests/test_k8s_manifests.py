"""``edgeify apps manifests`` (issue 15.4): the real CLI writes a Deployment + Service for a real bundle, which
the Kubernetes JSON schemas accept (kubernetes-validate, offline, strict: unknown fields are errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "ssh"))
import sshlab  # the tiny real bundles of the SSH tests
from edgeify.deploy.k8s import K8S_VERSION


def _edgeify(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeify", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EDGEIFY_HOME": str(home)})


def test_manifests_validate_against_the_kubernetes_schemas(tmp_path: Path) -> None:
    bundle = sshlab.make_bundle(tmp_path / "b" / "digits", seed=2)
    home = tmp_path / "home"
    add = _edgeify(home, "devices", "add", "pi-01", "--host", "10.200.0.9", "--target", "x86-avx2",
                   "--workdir", "/var/lib/edgeify")
    assert add.returncode == 0, add.stderr
    out = tmp_path / "k8s"
    run = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-01", "-o", str(out), "--port", "8000",
                   "--memory-mib", "300", "--latency-target-ms", "40", "--max-replicas", "6", "--format", "json")
    assert run.returncode == 0, run.stderr
    files = [Path(p) for p in json.loads(run.stdout)["files"]]
    texts = [p.read_text() for p in files]
    assert not any("&id" in t or "*id" in t for t in texts)  # plain YAML: no anchors or aliases
    docs = {d["kind"]: d for d in (yaml.safe_load(t) for t in texts)}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema violation
    pod = docs["Deployment"]["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["requests"]["memory"] == "300Mi" and c["args"][c["args"].index("--port") + 1] == "8000"
    assert pod["metadata"]["annotations"]["edgeify.io/memory-request"] == "given (--memory-mib)"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    # a real node label (set once by the user, see README), not the device alias as a hostname
    assert pod["spec"]["nodeSelector"] == {"edgeify.io/device": "pi-01"}
    digest = json.loads((bundle / "manifest.json").read_text())["bundle_digest"]
    # the versioned path of exactly this bundle, never the `current` link that flips under a running pod
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == f"/var/lib/edgeify/bundles/digits/sha256-{digest}"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"] and hpa["maxReplicas"] == 6
    metric = hpa["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "edgeify_request_latency_p95_seconds"
    assert metric["target"] == {"type": "AverageValue", "averageValue": "40m"}  # 40 ms
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert rules[0]["name"]["as"] == "edgeify_request_latency_p95_seconds"
    assert "histogram_quantile(0.95" in rules[0]["metricsQuery"]

    # --node: the node's real hostname label; no measured RSS and no --memory-mib: a default, labelled as one
    run2 = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-01", "-o", str(tmp_path / "k2"),
                    "--node", "k3s-node-7", "--format", "json")
    assert run2.returncode == 0, run2.stderr
    dep = next(yaml.safe_load(Path(p).read_text()) for p in json.loads(run2.stdout)["files"] if "deployment" in p)
    tpl = dep["spec"]["template"]
    assert tpl["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "k3s-node-7"}
    assert tpl["metadata"]["annotations"]["edgeify.io/memory-request"].startswith("default 512 MiB")

    # a schema checker that works: a broken manifest is refused
    broken = json.loads(json.dumps(docs["Deployment"]))
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_a_home_relative_workdir_is_refused(tmp_path: Path) -> None:
    bundle = sshlab.make_bundle(tmp_path / "b" / "m", seed=2)
    home = tmp_path / "home"
    assert _edgeify(home, "devices", "add", "pi-02", "--host", "10.200.0.9", "--target", "x86-avx2").returncode == 0
    run = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-02", "-o", str(tmp_path / "k"))
    assert run.returncode == 4 and "hostPath" in run.stderr and "--workdir" in run.stderr
    assert not (tmp_path / "k").exists()


def test_daemonset_variant_validates_and_runs_on_every_labelled_node(tmp_path: Path) -> None:
    bundle = sshlab.make_bundle(tmp_path / "b" / "digits", seed=2)
    home = tmp_path / "home"
    assert _edgeify(home, "devices", "add", "pi-01", "--host", "10.200.0.9", "--target", "x86-avx2",
                    "--workdir", "/var/lib/edgeify").returncode == 0
    run = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-01", "-o", str(tmp_path / "ds"),
                   "--kind", "daemonset", "--memory-mib", "200", "--format", "json")
    assert run.returncode == 0, run.stderr
    texts = [Path(p).read_text() for p in json.loads(run.stdout)["files"]]
    assert not any("&id" in t or "*id" in t for t in texts)
    docs = {d["kind"]: d for d in (yaml.safe_load(t) for t in texts)}
    # no HPA / adapter rule: a DaemonSet has no scale subresource (one pod per node)
    assert set(docs) == {"DaemonSet", "Service"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    ds = docs["DaemonSet"]
    assert "replicas" not in ds["spec"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    tpl = ds["spec"]["template"]
    # every node carrying the serve label runs one pod, not the one device's alias
    assert tpl["spec"]["nodeSelector"] == {"edgeify.io/serve": ds["metadata"]["name"]}
    c = tpl["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    digest = json.loads((bundle / "manifest.json").read_text())["bundle_digest"]
    assert tpl["spec"]["volumes"][0]["hostPath"]["path"] == f"/var/lib/edgeify/bundles/digits/sha256-{digest}"
    assert docs["Service"]["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    # --node pins it to one real hostname; an unknown kind is a usage error naming the choices
    run2 = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-01", "-o", str(tmp_path / "ds2"),
                    "--kind", "daemonset", "--node", "k3s-7", "--format", "json")
    assert run2.returncode == 0, run2.stderr
    ds2 = next(yaml.safe_load(Path(p).read_text()) for p in json.loads(run2.stdout)["files"] if "daemonset" in p)
    assert ds2["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "k3s-7"}
    bad = _edgeify(home, "apps", "manifests", str(bundle), "--device", "pi-01", "-o", str(tmp_path / "ds3"),
                   "--kind", "statefulset")
    assert bad.returncode == 4 and "deployment, daemonset" in bad.stderr

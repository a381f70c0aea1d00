"""``edgeify apps status|stop``: the apps ``edgeify deploy BUNDLE --app serve`` started on devices."""

from __future__ import annotations

from pathlib import Path

import typer
from edgeify.deploy.apps import app_status, stop_app
from edgeify.deploy.fleet import on_sites
from edgeify.deploy.inventory import Inventory
from edgeify.deploy.k8s import DEFAULT_IMAGE, manifests, write_manifests

from .output import Format, FormatOpt, TrustOpt, console, examples, print_app_status, print_json

apps_app = typer.Typer(help="Apps started on devices by `edgeify deploy BUNDLE --app serve`.", no_args_is_help=True)


@apps_app.command("status", epilog=examples("edgeify apps status --device pi-01",
                                             "edgeify apps status -d pi-01 --format json"))
def apps_status(
    device: str = typer.Option(..., "--device", "-d", help="device name (`edgeify devices list`)"),
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """The apps on a device: name, app, port, pid, running or its exit code and last log lines."""

    dev = Inventory().get(device)
    data = on_sites(dev, lambda site, _dev: app_status(site), trust_new_host_key=trust_new_host_key)[0].unwrap()
    if fmt == Format.json:
        print_json({"device": device, **data})
        return
    print_app_status(device, data)


@apps_app.command("stop", epilog=examples("edgeify apps stop digits-rpi5 --device pi-01",
                                           "edgeify apps stop digits-rpi5 -d pi-01 --timeout 30"))
def apps_stop(
    name: str = typer.Argument(..., help="the app's name on the device (the bundle's name; `edgeify apps status`)"),
    device: str = typer.Option(..., "--device", "-d", help="device name (`edgeify devices list`)"),
    timeout: float = typer.Option(15.0, "--timeout", min=0.0, help="seconds after SIGTERM before SIGKILL"),
    trust_new_host_key: bool = TrustOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Stop an app: SIGTERM (it finishes the requests in flight), then SIGKILL after --timeout."""

    dev = Inventory().get(device)
    out = on_sites(dev, lambda site, _dev: stop_app(site, name, timeout=timeout),
                   trust_new_host_key=trust_new_host_key)[0].unwrap()
    if fmt == Format.json:
        print_json({"device": device, **out})
    elif out.get("was_running"):
        console.print(f"[green]✓[/] {device}: stopped {name} (pid {out['pid']}, SIG{out['signal']}, "
                      f"exit {out.get('exit_code')}, {out['seconds']:.2f} s)")
    else:
        console.print(f"{device}: {name} was not running")


@apps_app.command("manifests")
def apps_manifests(
    bundle: Path = typer.Argument(..., help="bundle directory written by `edgeify build`"),
    device: str = typer.Option(..., "--device", "-d", help="the device (a node of the cluster) to run it on"),
    out: Path = typer.Option(..., "-o", "--out", help="directory for the YAML files"),
    name: str = typer.Option(None, "--name", help="the bundle's name on the device [default: the directory's]"),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="the service's port"),
    image: str = typer.Option(None, "--image", help="container image with Python, edgeify-runtime[serve] and "
                                                    "the bundle's engine [default: edgeify-runtime-serve:VERSION]"),
    memory_mib: int = typer.Option(None, "--memory-mib", min=16, help="memory request [default: from the "
                                                                      "bundle's measured peak RSS]"),
    node: str = typer.Option(None, "--node", help="the Kubernetes node name (kubernetes.io/hostname) [default: "
                                                  "the node labelled edgeify.io/device=DEVICE]"),
    latency_target_ms: float = typer.Option(None, "--latency-target-ms", min=0.1,
                                            help="p95 latency the autoscaler holds each pod to [default: the "
                                                 "bundle's budget, else 2 x its measured p95 + 5 ms]"),
    min_replicas: int = typer.Option(1, "--min-replicas", min=1, help="autoscaler minimum"),
    max_replicas: int = typer.Option(4, "--max-replicas", min=1, help="autoscaler maximum"),
    kind: str = typer.Option("deployment", "--kind", help="deployment (one node, autoscaled) or daemonset (a pod "
                                                          "on every node labelled edgeify.io/serve=APP, no HPA)"),
    fmt: Format = FormatOpt,
) -> None:
    """Kubernetes manifests for an edge cluster: a Deployment pinned to the device's node with the deployed
    bundle mounted from its versioned path there, probes on /v2/health/*, Prometheus scrape annotations; a
    Service; a HorizontalPodAutoscaler on the service's p95 latency and the prometheus-adapter rule behind it."""

    dev = Inventory().get(device)
    docs = manifests(bundle, dev, name=name, port=port, image=image or DEFAULT_IMAGE, memory_mib=memory_mib,
                     node=node, latency_target_ms=latency_target_ms, min_replicas=min_replicas,
                     max_replicas=max_replicas, kind=kind)
    paths = write_manifests(docs, out)
    if fmt == Format.json:
        print_json({"device": device, "files": [str(p) for p in paths]})
        return
    for p in paths:
        console.print(f"[green]✓[/] wrote {p}")
    if not node:
        label = (f"edgeify.io/serve={docs[0]['metadata']['name']} (each node that runs it)" if kind == "daemonset"
                 else f"edgeify.io/device={device}")
        console.print(f"label the device's node once: kubectl label node NODE {label}")
    console.print(f"apply on the cluster: kubectl apply -f {out} (deploy the bundle first: edgeify deploy "
                  f"{bundle} --device {device})" + ("; the *-adapter-rules ConfigMap is prometheus-adapter's "
                                                    "--config" if kind == "deployment" else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(apps_app, name="apps")

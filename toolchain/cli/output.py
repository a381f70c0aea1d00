"""What every command module shares: the options (``--format``, ``--target-file``, the device options), the
consoles, JSON output, and the renderers (rich tables for people on stdout, progress and errors on stderr).

Command modules import from here; nothing here imports a command module or domain code at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from edgeify.deploy.outcome import first_failure
from edgeify.errors import EdgeifyError, UsageError
from edgeify.noise import human_size
from rich.console import Console
from rich.table import Table

# Not a terminal (pipes, CI logs): a wide fixed width instead of rich's 80 columns, so tables stay readable.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


# -- shared options --------------------------------------------------------------------------------------------
class Format(str, Enum):
    table = "table"
    json = "json"


class Percentile(str, Enum):
    """The percentile a latency budget applies to (``--percentile``; bench and optimize)."""

    p50 = "p50"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"


FormatOpt = typer.Option(Format.table, "--format", help="table for people, json for machines")
TargetFiles = typer.Option([], "--target-file", help="extra target spec TOML file (repeatable)")
TrustOpt = typer.Option(False, "--trust-new-host-key",
                        help="accept and remember the host key of a device not yet in known_hosts (check its "
                             "fingerprint first); a CHANGED key is never accepted")
AskPassOpt = typer.Option(False, "--ask-passphrase", help="prompt for the passphrase of an encrypted key "
                                                          "(never stored; ssh-agent is the better way)")
DeviceOpt = typer.Option(None, "--device", "-d", help="device name (`edgeify devices list`)")
DevicesOpt = typer.Option(None, "--devices", help="several devices in parallel: tag:TAG, NAME1,NAME2 or all")


def examples(*commands: str) -> str:
    """A ``--help`` epilog: example command lines, kept verbatim (not re-wrapped)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {c}" for c in commands)


def passphrase(ask: bool) -> str | None:
    return typer.prompt("key passphrase", hide_input=True, err=True) if ask else None


def selection(device: str | None, devices: str | None) -> tuple[str, bool]:
    """``--device NAME`` xor ``--devices SELECTOR`` -> (selector, many); neither or both is a usage error."""

    if bool(device) == bool(devices):
        raise UsageError("give exactly one of --device NAME or --devices SELECTOR",
                         hint="e.g. --device pi-01, or --devices tag:pi")
    return (device or devices or ""), bool(devices)


def fail_fleet(outcomes: list[Any]) -> None:
    """Print each failure; exit with the first failing device's error (its class = its exit code)."""

    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        e = o.error_dict() or {}
        err_console.print(f"[red]✗[/] {o.device}: [{e.get('exit_code')}] {e.get('message')}")
    first = first_failure(outcomes)
    if first is None:
        return
    err = first.error
    summary = f"{len(failed)} of {len(outcomes)} devices failed; first: {first.device}"
    if isinstance(err, EdgeifyError):
        raise type(err)(f"{summary}: {err.message}", hint=err.hint or None)
    raise err  # type: ignore[misc]


# -- JSON --------------------------------------------------------------------------------------------------------
#: whether this process already wrote a JSON document on stdout (then an error adds none: one document)
json_printed = False


def print_json(data: Any, *, compact: bool = False) -> None:
    """One JSON document on stdout; ``compact``: one line (large results, e.g. raw samples)."""
    global json_printed
    json_printed = True
    text = json.dumps(data, default=str, separators=(",", ":")) if compact else json.dumps(data, indent=2,
                                                                                         default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _f(v: Any, spec: str = ".3f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


# -- build -------------------------------------------------------------------------------------------------------
#: below this p50 a call's fixed cost (engine dispatch, I/O copies) outweighs what int8 kernels save
TINY_CALL_MS = 0.2


def print_build_summary(s: dict[str, Any]) -> None:
    steps = s.get("steps") or []
    convert = [st for st in steps if st.get("uses") != "check"]
    took = (f"conversion cached, {s['seconds']:.1f} s" if convert and all(st.get("cached") for st in convert)
            else f"{s['seconds']:.1f} s")
    console.print(f"[bold green]built[/] {s['bundle']}  ({s['target']}, {s['engine']}, {s['precision']}, "
                  f"{human_size(s['size_bytes'])}, {took})")
    if s.get("parity"):
        t = Table(title="parity vs source model")
        for col in ("output", "inputs", "max abs err", "cosine", "top-1 agree", "limit", "gated", "pass"):
            t.add_column(col)
        for r in s["parity"]:
            t.add_row(r["output"], r["inputs"], _f(r.get("max_abs"), ".3g"), _f(r.get("cosine"), ".5f"),
                      _f(r.get("top1_agreement"), ".3f"), r.get("limit", ""), str(r.get("gated")),
                      "[green]yes[/]" if r.get("pass") else "[yellow]no[/]" if r.get("gated", True)
                      else "[dim]not gated[/]")  # random inputs of an int8 build: reported for information
        console.print(t)
    acc = s.get("accuracy")
    if acc:
        w = acc["worst_class"]
        console.print(f"accuracy: source {acc['source_accuracy']:.2%} → built {acc['built_accuracy']:.2%} "
                      f"(drop {acc['drop_points']:.2f} pt; worst class {w['class']}: {w['delta_points']:+.2f} pt)")
    lat = (s.get("latency") or {}).get("latency_ms")
    if lat:
        console.print(f"local latency (quick run): p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms")
        if lat.get("p50") is not None and lat["p50"] < TINY_CALL_MS and s.get("precision", "").startswith("int8"):
            err_console.print(f"note: at {lat['p50']:.3f} ms a call, per-call overhead dominates a model this small, "
                              "so int8 kernels may not pay off: another engine or fp32 can be faster here "
                              f"(`edgeify optimize MODEL --target {s.get('target', '')}` measures them)")


# -- bench / results ---------------------------------------------------------------------------------------------
def print_bench(r: Any) -> None:
    """One BenchResult as a table plus its facts; warnings, fallback and budget on stderr."""
    lat, eng, proto = r.latency_ms, r.engine, r.protocol
    t = Table(title=f"{r.device} · {r.target} · {eng.name} {eng.version} · {r.precision} · {proto.threads} threads"
                    + (f" · batch {proto.batch}" if proto.batch and proto.batch != 1 else ""))
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv")
    for col in keys:
        t.add_column(col + (" ms" if col != "cv" else ""), justify="right")
    t.add_row(*[_f(lat.get(k), ".4f" if k == "cv" else ".3f") for k in keys])
    console.print(t)
    console.print(f"throughput {_f(r.throughput_ips, '.1f')}/s · load {_f(r.load_ms, '.1f')} ms · "
                  f"first inference {_f(r.first_inference_ms, '.2f')} ms · peak RSS {_f(r.peak_rss_mb, '.1f')} MB · "
                  f"{proto.runs_done} runs · bundle {str(r.bundle_digest)[:12]}"
                  + (f" · stored as #{r.result_id}" if r.result_id else ""))
    if proto.dynamic_axes:
        axes = ", ".join(f"{name}.{axis}={size}" for name, dims in proto.dynamic_axes.items()
                         for axis, size in dims.items())
        console.print(f"dynamic axes: {axes} (choose with --input-shape NAME:DIMS / --batch N)")
    _print_notes(r)


def print_warnings(r: Any) -> None:
    """A result's fallback and warnings, on stderr (also under --format json: stdout stays one document)."""
    fb = r.fallback
    if fb is not None and fb.used:
        skipped = f"; skipped {', '.join(fb.skipped)}" if fb.skipped else ""
        err_console.print(f"[yellow]fallback[/] on {r.device}: {fb.reason}{skipped}; ran on "
                          f"{', '.join(fb.active) or r.engine.accelerator or 'the CPU'}")
    for w in r.warnings:
        err_console.print(f"[yellow]warning[/] ({r.device}): {w}")


def _print_notes(r: Any) -> None:
    print_warnings(r)
    b = r.budget
    if b is not None:
        verdict = "[green]met[/]" if b.met else "[red]over[/]"
        console.print(f"budget {b.percentile} ≤ {b.max_ms:g} ms: {verdict} ({_f(b.value_ms)} ms)")


def print_fleet_bench(outcomes: list[Any], title: str) -> None:
    t = Table(title=title)
    for col in ("device", "p50 ms", "p95 ms", "p99 ms", "ips", "engine", "threads", "budget", "stored", "s"):
        t.add_column(col)
    for o in outcomes:
        if o.ok:
            r = o.result
            lat = r.latency_ms
            budget = "-" if r.budget is None else ("met" if r.budget.met else "[red]over[/]")
            t.add_row(o.device, _f(lat.p50), _f(lat.p95), _f(lat.p99), _f(r.throughput_ips, ".1f"),
                      f"{r.engine.name} {r.engine.version}", str(r.protocol.threads), budget,
                      f"#{r.result_id}" if r.result_id else "-", f"{o.seconds:.1f}")
        else:
            e = o.error_dict() or {}
            t.add_row(o.device, f"[red]error {e.get('exit_code')}[/]", "", "", "", e.get("type", ""), "", "", "",
                      f"{o.seconds:.1f}")
    console.print(t)
    for o in outcomes:
        if o.ok:
            _print_notes(o.result)


def print_results(rows: list[dict[str, Any]], store: Path) -> None:
    if not rows:
        console.print(f"no results yet in {store}; run `edgeify bench BUNDLE`")
        return
    t = Table(title=f"results ({store})")
    for col in ("id", "when", "device", "target", "engine", "prec", "threads", "p50 ms", "p95 ms", "p99 ms",
                "ips", "bundle"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["id"]), r["created_at"][:19], r["device"], str(r["target"]),
                  f"{r['engine']} {r['engine_version'] or ''}", str(r["precision"]), str(r["threads"]),
                  _f(r["p50_ms"]), _f(r["p95_ms"]), _f(r["p99_ms"]), _f(r["throughput_ips"], ".1f"),
                  r["bundle_digest"][:12])
    console.print(t)


# -- devices -----------------------------------------------------------------------------------------------------
def print_check(r: dict[str, Any]) -> None:
    fp = r["fingerprint"]
    cpu = fp.get("cpu") or {}
    osi = fp.get("os") or {}
    fit = r["fit"]
    console.print(f"[green]✓[/] [bold]{r['device']}[/] reachable in {r['connect_s']:.2f} s  host key {r['host_key']}"
                  + ("  [yellow](newly trusted)[/]" if r["host_key_trusted_now"] else ""))
    console.print(f"  arch {fp.get('arch')} · {osi.get('distro') or osi.get('system')} · kernel {osi.get('kernel')} · "
                  f"Python {(fp.get('python') or {}).get('version')} · numpy {fp.get('numpy')}")
    console.print(f"  CPU {cpu.get('model')} · {cpu.get('physical_cores')} cores ({cpu.get('usable_cores')} usable) · "
                  f"ISA {', '.join(cpu.get('isa') or []) or '-'} · memory {fp.get('memory_total_mb')} MB · "
                  f"governor {fp.get('governor') or '-'}")
    engines = fp.get("engines") or {}
    console.print(f"  engines: {', '.join(f'{k} {v}' for k, v in engines.items()) or 'none'} · "
                  f"work dir {r['workdir']} ({r['free_mb']} MB free)")
    if fit.get("target_known"):
        if not fit["arch_ok"]:
            console.print(f"  [red]arch {fp.get('arch')} does not match target {r['target']} "
                          f"({fit['target_arch']})[/]")
        for eng, hint in fit["engines_missing"].items():
            console.print(f"  [yellow]engine {eng} of target {r['target']} is missing: {hint}[/]")
        if fit["cpu_features_missing"]:
            console.print(f"  [yellow]CPU lacks {', '.join(fit['cpu_features_missing'])} that target "
                          f"{r['target']} assumes[/]")


def print_status(name: str, data: dict[str, Any]) -> None:
    console.print(f"[bold]{name}[/] work dir {data['workdir']} ({data.get('free_bytes', 0) / 1e6:.1f} MB free)")
    for bname, entry in data["bundles"].items():
        cur, prev = entry.get("current") or {}, entry.get("previous") or {}
        cur_s = str(cur.get("digest"))[:12] if cur.get("digest") else "none"
        prev_s = str(prev.get("digest"))[:12] if prev.get("digest") else "none (nothing to roll back to)"
        console.print(f"  {bname}: current {cur_s}  previous {prev_s}")


# -- deploy / apps -----------------------------------------------------------------------------------------------
def print_deploys(reports: list[dict[str, Any]], fmt: Format) -> None:
    if fmt == Format.json:
        print_json(reports[0] if len(reports) == 1 else {"devices": reports})
        return
    for r in reports:
        tm = r["timings_s"]
        parts = " · ".join(f"{k} {v:.3f}" for k, v in tm.items() if k != "total")
        console.print(f"[green]✓[/] {r['device']}: {r['name']} {r['digest'][:12]} [bold]{r['status']}[/] "
                      f"({r['uploaded_bytes'] / 1e6:.2f} MB sent, {r['reused_files']} files reused"
                      f"{', runtime sent' if r['runtime_uploaded'] else ''}) in {tm['total']:.2f} s ({parts} s)")
        for w in r.get("warnings") or []:
            err_console.print(f"  [yellow]forced:[/] {w}")
        for step in r.get("device_steps") or []:  # e.g. the TensorRT engine, built on the device
            console.print(f"  {step['uses']} on the device: [bold]{step['decision']}[/] ({step['reason']}) "
                          f"{step['plan']}")


def print_apps(reports: list[dict[str, Any]], fmt: Format) -> None:
    if fmt == Format.json:
        print_json(reports[0] if len(reports) == 1 else {"devices": reports})
        return
    for r in reports:
        print_deploys([r["deploy"]], fmt)
        tm = r["timings_s"]
        before = r.get("restarted")
        was = f"; restarted, was pid {before['pid']}" if before else ""
        console.print(f"[green]✓[/] {r['device']}: {r['app']} [bold]healthy[/] at [bold]{r['url']}[/] "
                      f"(pid {r['pid']}, bundle {r['bundle_digest'][:12]}{was}) in {r['seconds']:.2f} s "
                      f"(deploy {tm.get('deploy', 0):.2f} · start {tm.get('start', 0):.2f} · "
                      f"health {tm.get('health', 0):.2f} s)")
        console.print(f"  log {r['log']} · stop: edgeify apps stop {r['name']} --device {r['device']}")
        for w in r.get("warnings") or []:
            err_console.print(f"[yellow]warning:[/] {r['device']}: {w}", markup=True, highlight=False)


def print_app_status(device: str, data: dict[str, Any]) -> None:
    if not data["apps"]:
        console.print(f"no apps on {device} (edgeify deploy BUNDLE --device {device} --app serve)")
    for a in data["apps"]:
        state = "[green]running[/]" if a["running"] else f"[red]stopped[/] (exit {a.get('exit_code')})"
        console.print(f"{a['name']}: {a['app']} {state} pid {a['pid']} port {a['port']} "
                      f"bundle {str(a['digest'])[:12]} since {a['started_at']}  log {a['log']}")
        for line in a.get("log_tail") or []:
            console.print(f"  | {line}", markup=False)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """With ``--format json`` stdout carries one JSON object: whatever converters print there (NNCF's progress
    bars, TensorFlow's logs; pool workers inherit the descriptors) goes to stderr, at the file-descriptor level,
    while the work runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)

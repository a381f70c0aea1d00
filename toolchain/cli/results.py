"""``edgeify results`` (history, filters), ``results show ID`` and ``results tag ID... NAME``."""

from __future__ import annotations

from typing import Any

import click
import typer
from edgeify.errors import UsageError
from edgeify.results import open_store
from edgeify.store.select import make_filters, nothing_matched
from edgeify.store.sql import model_name
from typer.core import TyperGroup

from .output import Format, FormatOpt, TargetFiles, _f, console, err_console, print_bench, print_json


class _ResultsGroup(TyperGroup):
    """``edgeify results 4`` is a usage error that names the command that shows result 4."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0].lstrip("#").isdigit():
            n = args[0].lstrip("#")
            raise UsageError(f"`edgeify results {args[0]}`: results takes options, not an id",
                             hint=f"to show result #{n}: edgeify results show {n}")
        return super().resolve_command(ctx, args)


results_app = typer.Typer(help="Benchmark history from the results store (newest first); `results show ID`, "
                               "`results tag ID NAME`.", invoke_without_command=True, cls=_ResultsGroup)

DeviceFilter = typer.Option(None, "--device", help="only this device (as `edgeify devices list` names it)")
TargetFilter = typer.Option(None, "--target", help="only this target; a family alias (x86) means all its boards")
BundleFilter = typer.Option(None, "--bundle", help="only this bundle: its directory (build/m) or digest prefix")
RunFilter = typer.Option(None, "--run", help="only the results of this optimize run id")
SinceFilter = typer.Option(None, "--since", help="only results stored since: 3d, 12h, 30m, 2w or an ISO date")


def filters(device: str | None, target: str | None, bundle: str | None, run_id: str | None,
            since: str | None, target_files: list[str] | None = None) -> Any:
    return make_filters(device=device, target=target, bundle=bundle, run_id=run_id, since=since,
                        target_files=target_files or ())


@results_app.callback()
def results_list(
    ctx: typer.Context,
    device: str = DeviceFilter,
    target: str = TargetFilter,
    bundle: str = BundleFilter,
    run_id: str = RunFilter,
    since: str = SinceFilter,
    limit: int = typer.Option(20, "--limit", min=1, help="at most this many results"),
    samples: bool = typer.Option(False, "--samples", "--full", help="JSON with the raw samples of each result"),
    fmt: Format = FormatOpt,
    target_file: list[str] = TargetFiles,
) -> None:
    """Benchmark history from the results store (newest first).

    Example: edgeify results --target x86 --bundle build/digits-x86 --since 3d
    """
    if ctx.invoked_subcommand is not None:
        return

    f = filters(device, target, bundle, run_id, since, target_file)
    with open_store() as store:
        found = store.query(**f.as_query(), limit=limit, samples=samples)
        tags = store.tags() if found else {}
        empty = nothing_matched(store, f) if not found else ""
        location = store.location
    if fmt == Format.json or samples:
        print_json({"store": location, "results": [r.to_dict(samples=samples) for r in found],
                    **({"message": empty} if empty else {})}, compact=samples)
        return
    if not found:
        console.print(empty)
        return
    by_id: dict[int, list[str]] = {}
    for name, ids in tags.items():
        for i in ids:
            by_id.setdefault(i, []).append(name)
    print_table(found, f"results ({location})", by_id)


def print_table(found: list[Any], title: str, tags: dict[int, list[str]] | None = None) -> None:
    from rich.table import Table

    t = Table(title=title)
    optimized = any(isinstance(r.extra.get("candidate"), dict) for r in found)
    for col in ("id", "when", "device", "target", "model / bundle", "engine", "prec", "thr", "p50 ms", "p95 ms",
                "p99 ms", "ips", "bundle id", "tags") + (("optimize",) if optimized else ()):
        t.add_column(col, overflow="fold")
    for r in found:
        lat = r.latency_ms
        when = str(r.extra.get("stored_at") or r.started_at or "")[:19].replace("T", " ")
        t.add_row(str(r.result_id), when, r.device, str(r.target or "-"), _model(r),
                  f"{r.engine.name or '-'} {r.engine.version or ''}".strip(), str(r.precision or "-"),
                  str(r.protocol.threads or "-"), _f(lat.p50), _f(lat.p95), _f(lat.p99), _f(r.throughput_ips, ".1f"),
                  r.identity[:12], ", ".join((tags or {}).get(int(r.result_id or 0), [])),
                  *((optimize_mark(r),) if optimized else ()))
    console.print(t)
    if optimized:
        console.print("[dim]optimize: screen = the short screening run, full = the target's full protocol, "
                      "confirm = a finalist's re-measure round; ★ chosen = the candidate the run published (same "
                      "candidate: same #c)[/]")


def optimize_mark(r: Any) -> str:
    """An optimize run's benchmark: its candidate number, protocol (screen / full), drop, and ★ when chosen."""
    cand = r.extra.get("candidate")
    if not isinstance(cand, dict):
        return ""
    drop = cand.get("accuracy_drop")
    return (("★ chosen " if cand.get("chosen") else "") + f"#c{cand.get('index')} {cand.get('protocol') or '?'}"
            + (f" drop {drop:.2f}pt" if isinstance(drop, (int, float)) else ""))


def _model(r: Any) -> str:
    from pathlib import Path

    name = model_name(r) or "-"
    folder = Path(r.bundle).name if r.bundle else ""
    return f"{name} ({folder})" if folder and folder != name else name


@results_app.command("show")
def results_show(
    result_id: int = typer.Argument(..., help="the result id (`edgeify results`; bench prints 'stored as #ID')"),
    samples: bool = typer.Option(False, "--samples", help="JSON with the raw samples"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also the CPU's flags (the ISA summary is always "
                                 "shown)"),
    fmt: Format = FormatOpt,
) -> None:
    """One stored result: latency, protocol, device fingerprint and state, budget, fallback, warnings, tags.

    Example: edgeify results show 4 --format json
    """

    with open_store() as store:
        r = store.get(result_id, samples=True)
        tags = sorted(store.tags(result_id))
    if fmt == Format.json:
        print_json({**r.to_dict(samples=samples), "tags": tags}, compact=samples)
        return

    print_bench(r)
    proto = {k: v for k, v in r.to_dict()["protocol"].items() if v not in (None, {}, [])}
    console.print("protocol: " + ", ".join(f"{k}={v}" for k, v in proto.items()))
    fp = {k: v for k, v in r.fingerprint.items() if v not in (None, {}, [], "")}
    if not verbose and isinstance(fp.get("cpu"), dict) and fp["cpu"].get("flags"):
        fp["cpu"] = {**fp["cpu"], "flags": f"<{len(fp['cpu']['flags'])} flags: --verbose>"}
    console.print("fingerprint: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
    for line in device_state_lines(r.device_state):
        console.print(line)
    console.print(f"model {_model(r)} · bundle {r.bundle or '-'} · identity {r.identity} · files digest "
                  f"{r.bundle_digest}" + (f" · series {r.series['id']} run {r.series['index'] + 1}/{r.series['count']}"
                                          if r.series else "")
                  + (f" · run {r.run_id}" if r.run_id else "") + (f" · tags {', '.join(tags)}" if tags else "")
                  + f" · stored {r.extra.get('stored_at', '-')}")
    cand = r.extra.get("candidate")
    if isinstance(cand, dict):
        console.print(f"optimize run {cand.get('run_id')}: candidate #c{cand.get('index')} {cand.get('label')}, "
                      f"{cand.get('protocol')} protocol, accuracy drop {cand.get('accuracy_drop')} pt "
                      f"({cand.get('accuracy_measure')})" + (f" · ★ chosen, published at {cand.get('chosen_bundle')}"
                                                               if cand.get("chosen") else " · not chosen"))


def device_state_lines(state: dict[str, Any] | None) -> list[str]:
    """``results show``: the device's state during the run, one line, plus the disturbed flag and the rule."""
    if not state:
        return ["device state: not recorded (a result from before edgeify recorded it)"]

    def na(v: Any) -> str:
        return "n/a" if v is None else str(v)

    freq, temp, load, cpu = (state.get(k) or {} for k in ("cpu_freq_mhz", "temperature_c", "load_avg", "cpu"))
    thr, psi, energy = state.get("throttling"), state.get("pressure") or {}, state.get("energy") or {}
    parts = [f"freq {na(freq.get('start'))}→{na(freq.get('end'))} of {na(freq.get('max'))} MHz" if freq
             else "freq n/a", f"governor {na(state.get('governor'))}",
             f"throttling {thr.get('events', thr.get('flags'))} ({thr.get('source')})" if thr else "throttling n/a",
             f"temp {na(temp.get('start'))}→{na(temp.get('end'))} °C ({temp.get('max_zone')})" if temp else "temp n/a",
             f"load {na((load.get('end') or [None])[0])}" if load else "load n/a",
             f"steal {cpu['steal_pct']}% · others busy {cpu['others_busy_pct']}%" if cpu else "steal n/a",
             "pressure " + (", ".join(f"{k.replace('_some_pct', '')} {v}%" for k, v in psi.items()) or "n/a"),
             (f"energy {energy['per_inference_mj']} mJ/inference ({energy['source']})"
              if energy.get("per_inference_mj") is not None else f"energy: {energy.get('reason', 'n/a')}")]
    lines = ["device state: " + " · ".join(parts)]
    if state.get("disturbed"):
        lines.append("[yellow]disturbed[/]: " + "; ".join(state.get("disturbed_because") or ())
                     + f" [dim]({state.get('rule')})[/]")
    return lines


@results_app.command("tag")
def results_tag(
    args: list[str] = typer.Argument(..., metavar="ID... NAME",
                                     help="one or more result ids, then the tag name"),
    fmt: Format = FormatOpt,
) -> None:
    """Name a result (or a set of results) for compare and gate; tagging again moves the name.

    Example: edgeify results tag 41 baseline-main
    """

    if len(args) < 2 or not all(a.lstrip("#").isdigit() for a in args[:-1]) or args[-1].lstrip("#").isdigit():
        raise UsageError("results tag takes result ids and then a name",
                         hint="e.g. `edgeify results tag 41 baseline-main` (or `... tag 41 42 43 nightly`)")
    name = args[-1]
    with open_store() as store:
        before = store.tagged(name)
        ids = store.tag(name, [int(a.lstrip("#")) for a in args[:-1]])
    if fmt == Format.json:
        print_json({"tag": name, "result_ids": ids, "moved_from": before})
        return
    moved = f" (moved from #{', #'.join(map(str, before))})" if before and before != ids else ""
    console.print(f"tagged #{', #'.join(map(str, ids))} as {name}{moved}")
    if before and before != ids:
        err_console.print(f"[yellow]note[/]: {name} no longer names #{', #'.join(map(str, before))}")


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")

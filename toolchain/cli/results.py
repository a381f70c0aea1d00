"""``edgeify results``: benchmark history from the results store."""

from __future__ import annotations

import typer

from .output import Format, FormatOpt, print_json


def results(
    device: str = typer.Option(None, "--device", help="only this device"),
    target: str = typer.Option(None, "--target", help="only this target"),
    bundle_digest: str = typer.Option(None, "--bundle", help="only this bundle digest (prefix)"),
    limit: int = typer.Option(20, "--limit", min=1),
    full: bool = typer.Option(False, "--full", help="with raw samples, protocol and fingerprint (json)"),
    fmt: Format = FormatOpt,
) -> None:
    """Benchmark history from the local results store (newest first)."""
    from edgeify.paths import results_db
    from edgeify.results import ResultsStore

    rows = ResultsStore(results_db()).query(device=device, target=target, bundle_digest=bundle_digest,
                                            limit=limit, full=full)
    if fmt == Format.json or full:
        print_json({"store": str(results_db()), "results": rows})
        return
    from .output import print_results

    print_results(rows, results_db())


def register(app: typer.Typer) -> None:
    app.command("results")(results)

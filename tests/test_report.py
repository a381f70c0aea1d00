"""`edgeify report`: one offline HTML file, opened in a real headless Chromium (Debian's `chromium`): after its
scripts run the plot elements exist and the console stays silent; a screenshot is kept as a test artifact. Also
a store of 1,000 results (the page stays bounded: aggregated and paginated)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _kit import run_cli
from _tiers import starting
from edgeify.results import open_store
from edgeify_runtime.result import BenchResult, EngineInfo, Latency, Protocol

_CONSOLE = re.compile(r":CONSOLE[:(]")
pytestmark = pytest.mark.browser


def chromium() -> str:
    starting("browser")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; ./install.sh --dev)")
    return exe


def open_in_chromium(page: Path, work: Path, *, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console message the page produced."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--enable-logging=stderr", "--v=0", f"--user-data-dir={work}",
            "--virtual-time-budget=15000", "--window-size=1400,2400"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if _CONSOLE.search(line)]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.found.append(f"<{tag} {name}={value}>")


def external_references(page: str) -> list[str]:
    """Every tag that would load something (script src, link href, img src) other than data: URLs."""
    parser = _Refs()
    parser.feed(page)
    return parser.found


def test_the_harness_sees_console_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); notDefined();</script></body></html>")
    _, console = open_in_chromium(bad, tmp_path / "profile")
    assert any("boom" in line for line in console) and any("notDefined" in line for line in console)


def _synthetic_run(store, digest: str, run_id: str) -> None:
    """An optimize run's candidates as the orchestrator stores them (run_id; accuracy figures in extra)."""
    rng = np.random.default_rng(3)
    for i, (scale, drop) in enumerate(((1.0, 0.0), (0.6, 0.4), (0.45, 2.5), (0.7, 1.0))):
        s = tuple(float(x) for x in rng.gamma(20, 0.02, 400) * scale)
        store.add(BenchResult(bundle_digest=digest, device="local", run_id=run_id, precision="int8",
                              engine=EngineInfo(name="openvino", version="2026.4.1"), samples_ms=s,
                              latency_ms=Latency(p50=float(np.median(s)), p95=float(np.percentile(s, 95)),
                                                 p99=float(np.percentile(s, 99))),
                              protocol=Protocol(threads=2), extra={"accuracy_drop": drop, "chosen": i == 1,
                                                                   "label": f"candidate {i}"},
                              profile={"ops": [{"name": f"conv{k}", "type": "Conv", "time_ms": 0.01 * (5 - k),
                                                "share": 0.1, "fallback": k == 4} for k in range(5)]}))


def test_report_opens_in_chromium_with_plots_and_no_console_errors(digits, tmp_path: Path, results_db: Path) -> None:
    bundle = tmp_path / "build" / "digits-x86"
    built = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "fp32", "--eval",
                    str(digits["eval"]), "-o", str(bundle), "--no-latency")
    assert built.returncode == 0, built.stderr
    for threads in ("1", "2"):
        res = run_cli("bench", str(bundle), "--threads", threads, "--min-duration", "0.1", "--format", "json")
        assert res.returncode == 0, res.stderr
    with open_store() as store:
        _synthetic_run(store, "cd" * 32, "opt-test-run")
    out = tmp_path / "report.html"
    made = run_cli("report", "-o", str(out), "--format", "json")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["results"] == 6 and info["runs"] == 1 and out.stat().st_size == info["bytes"]
    page = out.read_text(encoding="utf-8")
    assert external_references(page) == []  # offline: scripts and styles inlined, nothing fetched
    assert "Plotly.newPlot" in page
    assert "per-class accuracy" in page.lower() and "Pareto front" in page and "top 5 ops" in page

    dom, console = open_in_chromium(out, tmp_path / "profile")
    assert console == [], console
    graphs = dom.count('class="plotly-graph-div')
    rendered = len(re.findall(r'class="main-svg"', dom))
    # 1 trend + 1 run + 1 per-class + 6 distributions + 4 profiles
    assert graphs == 13 and rendered >= graphs, (graphs, rendered)
    assert 'id="pager-info">page 1 of 1 (6 results)' in dom  # the table script ran

    shot = tmp_path / "report.png"
    open_in_chromium(out, tmp_path / "profile2", screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"report screenshot: {shot}")

    only = run_cli("report", "-o", str(tmp_path / "one.html"), "--bundle", str(bundle), "--device", "local",
                   "--target", "x86", "--since", "1d", "--format", "json")
    assert json.loads(only.stdout)["results"] == 2 and json.loads(only.stdout)["runs"] == 0
    assert run_cli("report", "-o", str(tmp_path)).returncode == 2  # a directory is not a file name


def test_report_of_1000_results_stays_bounded(tmp_path: Path, results_db: Path) -> None:
    rng = np.random.default_rng(0)
    with open_store() as store:
        for i in range(1000):
            s = tuple(float(x) for x in rng.gamma(20, 0.01, 300))
            store.add(BenchResult(bundle_digest=f"{i % 4:02x}" * 32, device=f"pi-{i % 5}", samples_ms=s,
                                  latency_ms=Latency(p50=float(np.median(s)), p95=float(np.percentile(s, 95))),
                                  protocol=Protocol(threads=1)))
    out = tmp_path / "big.html"
    made = run_cli("report", "-o", str(out), "--format", "json")
    info = json.loads(made.stdout)
    assert info["results"] == 1000 and info["rows"] == 1000 and info["detailed"] == 12
    assert any("newest 12" in n for n in info["notes"])
    page = out.read_text(encoding="utf-8")
    assert page.count("<tr><td>") == 1000  # every result in the paginated table
    assert out.stat().st_size < 8_000_000
    dom, console = open_in_chromium(out, tmp_path / "profile")
    assert console == [], console
    assert 'page 1 of 20 (1000 results)' in dom

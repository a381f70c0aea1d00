"""Progress for people (stderr only): one bar per cell state and a line per finished cell."""

from __future__ import annotations

from typing import Any

from .cells import Cell
from .runner import CellRecord

STATES = ("queued", "running", "built", "failed", "skipped", "cancelled")
_STYLE = {"built": "green", "failed": "red", "skipped": "yellow", "cancelled": "magenta", "running": "cyan",
          "queued": "dim"}


class RichMatrixProgress:
    """A ``MatrixObserver``: bars for queued/running/built/failed/skipped/cancelled cells."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self._progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=True)
        self._tasks: dict[str, Any] = {}
        self._counts = dict.fromkeys(STATES, 0)

    def planned(self, cells: list[Cell]) -> None:
        total = len(cells)
        self._counts["queued"] = sum(c.status == "planned" for c in cells)
        for s in STATES:
            self._tasks[s] = self._progress.add_task(f"[{_STYLE[s]}]{s}", total=total,
                                                     completed=self._counts[s])
        self._progress.start()

    def submitted(self, cell: Cell) -> None:
        self._move("queued", "running")

    def finished(self, record: CellRecord) -> None:
        if record.status == "skipped":
            self._counts["skipped"] += 1
            self._refresh()
        elif record.status == "cancelled":  # in flight, or never started
            self._move("running" if self._counts["running"] > 0 else "queued", "cancelled")
        else:
            self._move("running", record.status)
        err = (record.error or {}).get("message") or record.reason or ""
        node = (record.node or {}).get("ip") or (record.node or {}).get("id") or ""
        from rich.markup import escape

        line = f"[{_STYLE[record.status]}]{record.status:<9}[/] {escape(record.cell)}"
        if record.status in ("built", "failed"):
            line += f"  {record.seconds:.1f} s" + (f"  on {node}" if node else "")
        if err:
            line += f"  [dim]{escape(err.splitlines()[0][:160])}[/]"
        self._progress.console.print(line, highlight=False, markup=True)

    def _move(self, src: str, dst: str) -> None:
        self._counts[src] = max(0, self._counts[src] - 1)
        self._counts[dst] += 1
        self._refresh()

    def _refresh(self) -> None:
        for s, tid in self._tasks.items():
            self._progress.update(tid, completed=self._counts[s])

    def close(self) -> None:
        self._progress.stop()

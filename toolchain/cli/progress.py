"""Progress of a long command on stderr: a live status line (rich) on a terminal, plain lines otherwise.

``optimize`` reports each step of its search as one message (``[3] building onnxruntime int8 (default)``,
``... 2 done, 5 left, about 40 s left``); on a terminal the current one is also shown in a spinner, so a build
that takes a minute does not look stuck. Not a terminal (CI logs, pipes): one plain ``optimize: ...`` line per
message, no markup and no control codes.
"""

from __future__ import annotations

from typing import Any


class OptimizeProgress:
    def __init__(self, console: Any, prefix: str = "optimize") -> None:
        self.console, self.prefix = console, prefix
        self.tty = bool(console.is_terminal)
        self._status: Any = None

    def say(self, message: str) -> None:
        if not self.tty:
            self.console.file.write(f"{self.prefix}: {message}\n")
            self.console.file.flush()
            return
        from rich.markup import escape

        self.console.print(f"[dim]{self.prefix}:[/] {escape(message)}")
        if self._status is None:
            self._status = self.console.status(escape(message))
            self._status.start()
        else:
            self._status.update(escape(message))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

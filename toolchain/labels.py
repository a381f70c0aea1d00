"""Class labels for a bundle's ``labels`` (what ``edgeify_runtime``'s ``model.labels`` returns).

Where they come from, first match wins: ``--labels FILE`` (one label per line), a ``labels.txt`` next to the
model file (what ``examples/digits/train.py`` writes; the build says it picked it up), else the ``classes`` of
an image folder's preprocessing TOML. A label file with a count other than the model's number of classes
(the last dim of its first output) is refused (exit 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

AUTO_NAME = "labels.txt"
MAX_BYTES = 4 << 20


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    origin: Path
    found: bool  # picked up next to the model (not passed with --labels)


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line (UTF-8; blank lines at the end ignored; a blank line in between is an error)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise DataError(f"--labels {path}: larger than {MAX_BYTES >> 20} MiB",
                            hint="one class name per line, in the model's output order")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--labels {path}: not found", hint="a text file with one class name per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--labels {path}: cannot be read as UTF-8 text ({type(exc).__name__})",
                        hint="a text file with one class name per line") from None
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"--labels {path}: no labels", hint="a text file with one class name per line")
    if "" in lines:
        raise DataError(f"--labels {path}: line {lines.index('') + 1} is empty",
                        hint="one class name per line, no blank lines in between")
    return tuple(lines)


def model_dir(model: str | Path) -> Path | None:
    """The folder of the model file (``module.py:factory``: of the ``.py``); None for a non-file source."""
    text = str(model)
    if ":" in text and not Path(text).exists():
        text = text.rsplit(":", 1)[0]
    path = Path(text)
    return path.parent if path.is_file() else None


def resolve(model: str | Path, labels_file: str | Path | None) -> Labels | None:
    """``--labels FILE``, else ``labels.txt`` beside the model, else None (checked before any step runs)."""
    if labels_file is not None:
        path = Path(labels_file)
        return Labels(read_labels(path), path, found=False)
    folder = model_dir(model)
    if folder is not None and (folder / AUTO_NAME).is_file():
        path = folder / AUTO_NAME
        return Labels(read_labels(path), path, found=True)
    return None


def check_count(labels: Labels, outputs: list[dict]) -> None:
    """The label count must be the model's class count (last dim of the first output, when fixed)."""
    shape = outputs[0].get("shape") if outputs else None
    classes = shape[-1] if shape and isinstance(shape[-1], int) else None
    if classes is not None and classes != len(labels.names):
        where = "found next to the model" if labels.found else "--labels"
        raise DataError(f"{labels.origin} ({where}) has {len(labels.names)} labels, the model has {classes} "
                        f"classes (output {outputs[0].get('name')!r} shape {list(shape)})",
                        hint="one label per class, in output order; or pass --labels with the right file")

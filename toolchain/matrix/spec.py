"""``matrix.toml``: which models to build for which targets, precisions and (optionally) engines.

Shape::

    targets = ["x86-avx2", "rpi5", "jetson-orin-nano"]   # every model, unless it says otherwise
    precisions = ["fp32", "int8"]
    engines = ["onnxruntime"]          # optional: one cell per engine too (a target without it: skipped)
    target_files = ["my-boards.toml"]  # optional extra target spec files

    [[models]]
    name = "digits"
    path = "examples/digits/model.pt2"
    calib = "examples/digits/calib.npz"
    eval = "examples/digits/eval.npz"
    precisions = ["fp32"]              # replaces the list for this model (narrow or widen)
    extra_targets = ["rpi4"]           # appended to the list for this model

Relative paths resolve against the matrix file's directory. Every problem with the file is a ``ConfigError``
(exit 4) naming the file and the field.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..values import Frozen as _Frozen

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Precision = Literal["fp32", "fp16", "bf16", "int8", "int8-dynamic", "int16x8"]  # int8-mixed: the ladder's, needs layers
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


def _unique(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{what} listed twice: {', '.join(dup)}")
    return values


class MatrixModel(_Frozen):
    """One model of the matrix and its data. ``targets``/``precisions``/``engines`` replace the matrix-wide
    lists for this model; ``extra_*`` append to them."""

    name: str = Field(pattern=NAME_PATTERN, description="directory name under OUT")
    path: str = Field(description="model.onnx | model.pt2 | model.pt | module.py:factory")
    calib: Path | None = Field(default=None, description="calibration inputs (.npz/.npy/image folder)")
    eval: Path | None = Field(default=None, description="labelled inputs for accuracy")
    preprocess: Path | None = None
    input_shape: tuple[int, ...] | None = Field(default=None, description="shape of the single input")
    input_shapes: tuple[str, ...] | None = Field(default=None, description="as `edgeify build --input-shape`")
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    targets: tuple[str, ...] | None = None
    precisions: tuple[Precision, ...] | None = None
    engines: tuple[str, ...] | None = None
    extra_targets: tuple[str, ...] = ()
    extra_precisions: tuple[Precision, ...] = ()
    extra_engines: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_shape_form(self) -> MatrixModel:
        if self.input_shape is not None and self.input_shapes is not None:
            raise ValueError("give input_shape (one input) or input_shapes, not both")
        return self

    @property
    def model_file(self) -> Path:
        """The file part of ``path`` (``module.py`` for ``module.py:factory``)."""
        return Path(self.path.split(":", 1)[0]) if _is_factory(self.path) else Path(self.path)

    def shapes(self) -> list[str] | None:
        if self.input_shape is not None:
            return [",".join(str(d) for d in self.input_shape)]
        return list(self.input_shapes) if self.input_shapes is not None else None


class MatrixSpec(_Frozen):
    targets: tuple[str, ...] = Field(min_length=1)
    precisions: tuple[Precision, ...] = Field(min_length=1)
    engines: tuple[str, ...] | None = Field(default=None, description="None: the target's default engine")
    target_files: tuple[Path, ...] = ()
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    models: tuple[MatrixModel, ...] = Field(min_length=1)
    source: str = Field(default="", description="the file this matrix was read from")

    @field_validator("targets", "engines")
    @classmethod
    def _no_dup(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _unique(v, "entry")

    @model_validator(mode="after")
    def _unique_models(self) -> MatrixSpec:
        _unique(tuple(m.name for m in self.models), "model name")
        return self

    def lists_for(self, model: MatrixModel) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]:
        """(targets, precisions, engines) for one model, after its own replacements and extensions."""
        def merged(own, extra, default):
            base = tuple(own) if own is not None else (tuple(default) if default is not None else None)
            if base is None:
                return tuple(extra) or None
            return base + tuple(e for e in extra if e not in base)
        return (merged(model.targets, model.extra_targets, self.targets),
                merged(model.precisions, model.extra_precisions, self.precisions),
                merged(model.engines, model.extra_engines, self.engines))


def _is_factory(path: str) -> bool:
    head, sep, tail = path.rpartition(":")
    return bool(sep) and head.endswith(".py") and bool(tail)


def _resolve(base: Path, p: str | Path | None) -> Path | None:
    if p is None:
        return None
    p = Path(p).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_model_path(base: Path, path: str) -> str:
    if _is_factory(path):
        file, _, factory = path.rpartition(":")
        return f"{_resolve(base, file)}:{factory}"
    return str(_resolve(base, path))


def load_matrix(path: str | Path) -> MatrixSpec:
    """Read and validate ``path``; relative paths in it resolve against its directory; inputs must exist."""
    path = Path(path)
    hint = "see README, 'Build matrices' for the matrix.toml format"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"matrix file {path}: not found", hint="pass the path of a matrix.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"matrix file {path}: cannot read it ({exc})", hint=hint) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"matrix file {path}: invalid TOML: {exc}", hint=hint) from None
    try:
        spec = MatrixSpec.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                         for e in exc.errors())
        raise ConfigError(f"matrix file {path}: {errs}", hint=hint) from None
    base = path.resolve().parent
    models = []
    for m in spec.models:
        fixed = m.model_copy(update={
            "path": _resolve_model_path(base, m.path), "calib": _resolve(base, m.calib),
            "eval": _resolve(base, m.eval), "preprocess": _resolve(base, m.preprocess)})
        for field, p in (("path", fixed.model_file), ("calib", fixed.calib), ("eval", fixed.eval),
                         ("preprocess", fixed.preprocess)):
            if p is not None and not p.exists():
                raise ConfigError(f"matrix file {path}: model {m.name!r}: {field} {p} does not exist",
                                  hint=f"relative paths are resolved against {base}")
        models.append(fixed)
    files = tuple(_resolve(base, f) for f in spec.target_files)
    for f in files:
        if not f.is_file():
            raise ConfigError(f"matrix file {path}: target_files: {f} does not exist",
                              hint=f"relative paths are resolved against {base}")
    return spec.model_copy(update={"models": tuple(models), "target_files": files})

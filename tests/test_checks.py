"""The parity gates themselves, on outputs built to expose them (issue 11 item 11, issue 17 item 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgeify import build
from edgeify.checks import compare, sample_cosines
from edgeify.targets.spec import DEFAULT_TOLERANCES


def _few_bad_samples(n: int = 100, bad: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Most samples large and exact; a minority small and wrong: the batch-wide cosine stays near 1."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((n, 10)) * 100
    ref[:bad] *= 0.01
    got = ref.copy()
    got[:bad] = rng.standard_normal((bad, 10))  # those samples: unrelated outputs
    return ref.astype(np.float32), got.astype(np.float32)


def test_a_minority_of_wrong_samples_fails_the_int8_gate() -> None:
    ref, got = _few_bad_samples()
    tol = DEFAULT_TOLERANCES["int8"]
    rows, bad = compare(["logits"], [ref], [got], tol, "real", gate=True)
    row = rows[0]
    assert row.cosine >= tol.min_cosine  # the old batch-wide gate alone would pass this
    assert row.sample_cosine < tol.min_sample_cosine and row.passed is False
    assert [m.what for m in bad] == ["p5 sample cos"]
    assert row.top1_agreement < 0.95 and row.samples == 100
    rows, bad = compare(["logits"], [ref], [ref.copy()], tol, "real", gate=True)
    assert not bad and rows[0].sample_cosine == pytest.approx(1.0)


def test_sample_cosines_per_row() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    got = np.array([[0.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    assert sample_cosines(ref, got) == pytest.approx([0.0, 1.0, 1.0])


def test_int8_validation_report_records_the_per_sample_figures(digits, tmp_path: Path) -> None:
    out = tmp_path / "b"
    build(digits["model"], target="x86", precision="int8", calib=digits["calib"], out=out, measure_latency=False)
    manifest = json.loads((out / "manifest.json").read_text())
    real = [r for r in manifest["validation"]["outputs"] if r["inputs"].startswith("real")]
    assert real and all(r["gated"] and r["sample_cosine"] >= 0.9 and "per-sample" in r["limit"] for r in real)
    assert manifest["validation"]["tolerance"]["min_sample_cosine"] == 0.9
    assert "per-sample cosine" in (out / "report.md").read_text()
    print({k: real[0][k] for k in ("cosine", "sample_cosine", "sample_cosine_min", "top1_agreement")})


def _tight_fp16_target(tmp_path: Path, rtol: float, name: str) -> Path:
    f = tmp_path / f"{name}.toml"
    f.write_text(f'[[targets]]\nname = "{name}"\nextends = "x86-cpu"\nstatus = "test: tight fp16 tolerance"\n'
                 f'tolerances = {{ fp16 = {{ metric = "max-abs", rtol = {rtol!r}, atol = 0.0 }} }}\n')
    return f


def test_fp16_near_miss_is_decided_by_accuracy(digits, tmp_path: Path) -> None:
    """Issue 17 item 16: an fp16 build that misses parity by a hair builds when accuracy on --eval holds."""
    from edgeify.errors import ParityError

    base = build(digits["model"], target="x86", precision="fp16", eval=digits["eval"], out=tmp_path / "base",
                 measure_latency=False)
    rows = base.validation.outputs
    rtol = 0.8 * max(r.max_abs / r.ref_max_abs for r in rows)  # every row misses by at most 1.25x
    near = _tight_fp16_target(tmp_path, rtol, "x86-near")
    res = build(digits["model"], target="x86-near", target_files=[str(near)], precision="fp16",
                eval=digits["eval"], out=tmp_path / "near", measure_latency=False)
    v = res.validation
    assert v.passed and v.near_miss and v.near_miss.decided_by == "accuracy" and 1.0 < v.near_miss.ratio <= 1.3
    assert v.accuracy and v.accuracy.drop_points <= v.near_miss.max_accuracy_drop == 0.5
    assert "accepted because accuracy" in (tmp_path / "near" / "report.md").read_text()
    with pytest.raises(ParityError) as exc:  # without labelled data: refused, and told how to decide
        build(digits["model"], target="x86-near", target_files=[str(near)], precision="fp16",
              calib=digits["eval"], out=tmp_path / "nolabels", measure_latency=False)
    assert "--max-accuracy-drop" in exc.value.hint
    far = _tight_fp16_target(tmp_path, rtol / 100, "x86-far")
    with pytest.raises(ParityError):  # far over the limit: accuracy does not get to decide
        build(digits["model"], target="x86-far", target_files=[str(far)], precision="fp16", eval=digits["eval"],
              out=tmp_path / "far", measure_latency=False)

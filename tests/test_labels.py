"""Class labels (issue 17.12): `labels.txt` next to the model is picked up and said so; `--labels FILE` picks
another; a file whose count is not the model's class count, or that is missing or empty, is refused (exit 7)."""

from __future__ import annotations

import json
from pathlib import Path

import edgeify_runtime
import pytest
from _kit import run_cli


def test_labels_txt_next_to_the_model_is_picked_up(digits, tmp_path: Path) -> None:
    assert (digits["dir"] / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    out = tmp_path / "digits-x86"
    res = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "fp32", "-o", str(out),
                  "--no-latency")
    assert res.returncode == 0, res.stderr
    assert "labels: 10 from" in res.stderr and "found next to the model" in res.stderr
    assert json.loads((out / "manifest.json").read_text())["labels"] == [str(i) for i in range(10)]
    with edgeify_runtime.load(out) as model:
        assert model.labels == [str(i) for i in range(10)]


@pytest.mark.slow  # several CLI builds (the other labels test keeps labels.txt in the quick tier)
def test_labels_flag_and_its_refusals(digits, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("".join(f"digit {i}\n" for i in range(10)) + "\n")
    out = tmp_path / "b"
    res = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "fp32", "-o", str(out),
                  "--labels", str(names), "--no-latency")
    assert res.returncode == 0, res.stderr
    assert "found next to the model" not in res.stderr
    assert json.loads((out / "manifest.json").read_text())["labels"][9] == "digit 9"
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    blank = tmp_path / "blank.txt"
    blank.write_text("a\n\nb\n")
    for path, message in ((three, "has 3 labels, the model has 10 classes"), (tmp_path / "nope.txt", "not found"),
                          (blank, "line 2 is empty")):
        res = run_cli("build", str(digits["model"]), "--target", "x86", "--precision", "fp32",
                      "-o", str(tmp_path / "x"), "--labels", str(path), "--no-latency")
        assert res.returncode == 7, res.stderr
        assert message in res.stderr and "fix:" in res.stderr and not (tmp_path / "x").exists()

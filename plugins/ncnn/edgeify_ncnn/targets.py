"""The plugin's target file (entry point ``edgeify.targets``: ``ncnn = "edgeify_ncnn.targets:target_file"``)."""

from __future__ import annotations

from pathlib import Path


def target_file() -> Path:
    return Path(__file__).with_name("targets.toml")

"""write_atomic: readers see the old file or the new one, and no temporary is left behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from iglubuild.atomic import write_atomic


def test_replaces_with_mode_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_text("old")
    write_atomic(target, "néw\n", mode=0o600)
    assert target.read_bytes() == "néw\n".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "recipe.yaml"
    target.write_text("old")

    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]  # fails after the temp exists
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.yaml"]

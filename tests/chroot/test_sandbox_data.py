"""The chroot sandbox as data: mount order, descriptions, bad folders (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iglubuild.errors import BuildError
from iglubuild.executor import Mount, PhaseJob
from iglubuild.executors.chroot import ChrootExecutor
from iglubuild.executors.sandbox import describe, phase_mounts, sandbox_argv


def test_mount_order_overlay_then_base_then_shallowest_binds() -> None:
    mounts = phase_mounts(Path("/r"), Path("/s"), [Path("/w/pkg/pkgdir"), Path("/w/pkg")],
                          [Path("/sys/root")], [Mount("bind", Path("/x"), Path("/y"))])
    assert [m.kind for m in mounts[:4]] == ["overlay", "proc", "dev", "tmpfs"]
    binds = [m.target for m in mounts[4:]]
    assert binds.index(Path("/w/pkg")) < binds.index(Path("/w/pkg/pkgdir"))
    assert mounts[0].options == ("lowerdir=/r", "upperdir=/s/upper", "workdir=/s/work")
    ro = [m for m in mounts if m.target == Path("/sys/root")]
    assert ro[0].readonly and "(ro)" in ro[0].describe()
    text = describe(mounts, network=False)
    assert text.splitlines()[0] == "namespaces: mount, pid, uts, ipc, net (loopback only)"
    assert "  overlay: /r -> / [lowerdir=/r,upperdir=/s/upper,workdir=/s/work]" in text


def test_network_namespace_only_without_network(tmp_path: Path) -> None:
    assert "--net" in sandbox_argv(tmp_path / "spec", network=False)
    assert "--net" not in sandbox_argv(tmp_path / "spec", network=True)


@pytest.mark.parametrize("bad", ["/r,x", "/r:x"])
def test_overlay_refuses_paths_it_cannot_express(bad: str) -> None:
    with pytest.raises(BuildError, match="cannot use a path containing"):
        phase_mounts(Path(bad), Path("/s"))


def test_missing_phase_folder_is_a_one_line_error(tmp_path: Path) -> None:
    ex = ChrootExecutor(tmp_path, "id", tmp_path / "scratch")
    job = PhaseJob("curl", "build", "true", tmp_path, {}, writable=(tmp_path / "nope",))
    with pytest.raises(BuildError, match=r"curl build: cannot mount .*/nope: no such folder"):
        ex.mounts_for(job, tmp_path / "scratch")

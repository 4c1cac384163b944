"""Global options: command line > environment > iglubuild.toml > default; CLI basics."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iglubuild.cli import main, parse_args
from iglubuild.errors import UsageError
from iglubuild.settings import resolve
from tests.conftest import REPO_ROOT


def _args(*argv: str) -> argparse.Namespace:
    return parse_args([*argv, "lint"])


def test_defaults(tmp_path: Path) -> None:
    s = resolve(_args(), environ={}, cwd=tmp_path)
    assert s.recipes == tmp_path / "recipes"
    assert s.build_dir == tmp_path / "build"
    assert s.distfiles_dir == tmp_path / "build" / "distfiles"
    assert s.jobs == (os.cpu_count() or 1)
    assert s.executor == "host" and s.mirrors == () and not s.farm


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "iglubuild.toml").write_text(
        'jobs = 3\nexecutor = "chroot"\nmirrors = ["file:///m1/", "http://127.0.0.1/m2"]\n'
        'build-dir = "out"\n')
    s = resolve(_args(), environ={}, cwd=tmp_path)
    assert (s.jobs, s.executor, s.build_dir) == (3, "chroot", tmp_path / "out")
    assert s.mirrors == ("file:///m1", "http://127.0.0.1/m2")
    s = resolve(_args(), environ={"IGLUBUILD_JOBS": "5", "IGLUBUILD_MIRRORS": "a b"},
                cwd=tmp_path)
    assert s.jobs == 5 and s.mirrors == ("a", "b") and s.executor == "chroot"
    s = resolve(_args("--jobs", "7", "--mirror", "c"), environ={"IGLUBUILD_JOBS": "5"},
                cwd=tmp_path)
    assert s.jobs == 7 and s.mirrors == ("c",)


@pytest.mark.parametrize("argv, env, fragment", [
    (("--jobs", "0"), {}, "invalid value '0' for --jobs"),
    (("--executor", "vm"), {}, "expected one of host, chroot, docker"),
    ((), {"IGLUBUILD_JOBS": "many"}, "from IGLUBUILD_JOBS"),
    ((), {"IGLUBUILD_FARM": "maybe"}, "expected true or false"),
])
def test_bad_values_are_usage_errors(argv, env, fragment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError) as exc:
        resolve(_args(*argv), environ=env, cwd=tmp_path)
    assert fragment in exc.value.message


def test_bad_config_file(tmp_path: Path) -> None:
    (tmp_path / "iglubuild.toml").write_text("jobz = 3\n")
    with pytest.raises(UsageError, match="unknown key 'jobz'"):
        resolve(_args(), environ={}, cwd=tmp_path)
    (tmp_path / "iglubuild.toml").write_text("jobs = [\n")
    with pytest.raises(UsageError, match="iglubuild.toml"):
        resolve(_args(), environ={}, cwd=tmp_path)


def test_global_options_after_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lint", "--recipes", str(tmp_path / "none")])
    assert code == 2
    assert str(tmp_path / "none") in capsys.readouterr().err


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument COMMAND: invalid choice: 'frobnicate'")
    assert "Traceback" not in err
    assert main([]) == 2


def test_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "iglubuild", "--version"], capture_output=True,
                         text=True, cwd=REPO_ROOT, check=True).stdout
    assert out.startswith("iglubuild ")
    helptext = subprocess.run([sys.executable, "-m", "iglubuild", "--help"], capture_output=True,
                              text=True, cwd=REPO_ROOT, check=True).stdout
    for verb in ("world", "pkg", "lint", "graph", "why", "schema"):
        assert verb in helptext
    sub = subprocess.run([sys.executable, "-m", "iglubuild", "graph", "--help"],
                         capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    assert "--format" in sub and "--jobs" in sub


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "iglubuild", "--debug", "--recipes",
                           str(tmp_path / "none"), "lint"], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_schema_is_json_schema(cli) -> None:  # type: ignore[no-untyped-def]
    import json

    result = cli("schema")
    schema = json.loads(result.out)
    assert schema["additionalProperties"] is False
    assert {"name", "version", "deps", "sources"} <= set(schema["properties"])
    assert schema["required"] == ["name", "version"]

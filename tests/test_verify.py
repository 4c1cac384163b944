"""`iglubuild verify`: real rebuilds on the host executor, compared byte for byte.

Shell-only recipes (a stand-in C library and packages whose package phase
writes files) keep each rebuild under a second; what is tested is that a
perturbation that reaches the phases shows (a file holding the build path
differs), that what must not reach them does not (iglubuild's own time zone
and umask), that a mismatch names the package, the file and the member, and
the exit codes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from iglubuild.verify import members_of
from tests.conftest import write_recipe

MUSL = ('name: musl\nversion: "1"\npackage: |\n'
        '  mkdir -p "$pkgdir/usr/lib" "$pkgdir/usr/include"\n'
        '  echo x > "$pkgdir/usr/lib/p"; echo y > "$pkgdir/usr/include/p.h"\n'
        "subpackages:\n  dev: [usr/include]\n")


def _pkg(recipes: Path, name: str, script: str, extra: str = "") -> None:
    body = "\n".join("  " + line for line in script.splitlines())
    write_recipe(recipes, name, f'name: {name}\nversion: "1"\n{extra}package: |\n'
                 f'  mkdir -p "$pkgdir/usr/share/{name}"\n{body}\n')


def _tree(recipes: Path) -> None:
    write_recipe(recipes, "musl", MUSL)
    # Files made with the shell's umask: the same modes whatever iglubuild's is.
    _pkg(recipes, "plain", 'echo hi > "$pkgdir/usr/share/plain/hi"\n'
                           'mkdir "$pkgdir/usr/share/plain/d"')
    # The hour of the epoch in the phase's time zone: 00 in UTC, 14 had the
    # rebuild's TZ=Etc/GMT-14 (iglubuild's own) reached the phase.
    _pkg(recipes, "tzdep", 'date -d @0 +%H > "$pkgdir/usr/share/tzdep/hour"')
    # Where it was built: another build path gives another file. (A hash of it:
    # a package naming the build's folder outright is refused by the build.)
    _pkg(recipes, "pathdep", 'pwd | cksum > "$pkgdir/usr/share/pathdep/where"')
    _pkg(recipes, "stamp", 'date +%s%N > "$pkgdir/usr/share/stamp/built-at"',
         extra="unreproducible: records the time of its build\n")


def _run(cli, recipes: Path, build: Path, *args: str):  # type: ignore[no-untyped-def]
    return cli("--recipes", str(recipes), "--build-dir", str(build), "verify", *args)


def test_a_reproducible_package_passes_and_its_modes_ignore_the_umask(  # type: ignore[no-untyped-def]
        cli, recipes: Path, tmp_path: Path) -> None:
    _tree(recipes)
    build = tmp_path / "b"
    r = _run(cli, recipes, build, "plain", "tzdep", "--json")
    assert r.code == 0, r.err
    assert "plain: reproducible (2 file(s) identical)" in r.err
    assert "tzdep: reproducible (2 file(s) identical)" in r.err  # the phase's TZ is UTC
    assert "iglubuild umask 0027" in r.err and "TZ=Etc/GMT-14" in r.err
    verdicts = json.loads(r.out)
    assert verdicts["ok"] is True
    assert [p["package"] for p in verdicts["packages"]] == ["plain", "tzdep"]
    # The rebuild really ran elsewhere, and its package carries the pinned modes.
    rebuild = Path(verdicts["rebuild"])
    assert rebuild != build and (rebuild / "packages" / "x86_64").is_dir()
    assert not (rebuild / "work").exists()  # work folders removed, packages kept
    members = members_of(next((rebuild / "packages" / "x86_64").glob("plain-1-r*.tar.zst")))
    assert members["usr/share/plain/hi"]["mode"] == oct(0o644)
    assert members["usr/share/plain/d"]["mode"] == oct(0o755)


def test_a_difference_names_package_file_and_member_and_fails(  # type: ignore[no-untyped-def]
        cli, recipes: Path, tmp_path: Path) -> None:
    _tree(recipes)
    build = tmp_path / "b"
    r = _run(cli, recipes, build, "pathdep", "plain")
    assert r.code == 1, r.err
    lines = r.err.splitlines()
    assert "pathdep: NOT REPRODUCIBLE" in lines
    assert any(line.strip().startswith("pathdep-1-r1.x86_64.tar.zst: differs") for line in lines)
    assert any("usr/share/pathdep/where: " in line and "content" in line for line in lines), r.err
    assert "plain: reproducible (2 file(s) identical)" in r.err
    assert "verify: 1 of 2 reproducible" in r.err
    if shutil.which("diffoscope"):
        report = next(line for line in lines if line.strip().startswith("diffoscope: "))
        text = Path(report.split(": ", 1)[1]).read_text()
        assert "where" in text and "perturbed-build-path" in text


def test_a_known_exception_is_reported_and_does_not_fail(  # type: ignore[no-untyped-def]
        cli, recipes: Path, tmp_path: Path) -> None:
    _tree(recipes)
    r = _run(cli, recipes, tmp_path / "b", "stamp", "--json")
    assert r.code == 0, r.err
    assert "stamp: differs (known: records the time of its build)" in r.err
    [verdict] = json.loads(r.out)["packages"]
    assert verdict["reproducible"] is False and verdict["ok"] is True


def test_bad_use_is_a_one_line_error(cli, recipes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _tree(recipes)
    for args in ((), ("plain", "--world"), ("nosuch",)):
        r = _run(cli, recipes, tmp_path / "b", *args)
        assert r.code == 2, (args, r.err)
        assert r.err.startswith("error: ") and "hint: " in r.err and "Traceback" not in r.err


def test_verify_world_rebuilds_everything(cli, recipes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_recipe(recipes, "musl", MUSL)
    _pkg(recipes, "plain", 'echo hi > "$pkgdir/usr/share/plain/hi"')
    r = _run(cli, recipes, tmp_path / "b", "--world", "--json")
    assert r.code == 0, r.err
    verdicts = json.loads(r.out)
    assert {p["package"] for p in verdicts["packages"]} == {"musl", "plain"}
    assert all(p["reproducible"] for p in verdicts["packages"])

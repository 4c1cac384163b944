"""`iglubuild import`: real Iglunix build.sh files (tests/fixtures/iglunix) to recipes.

Every fixture is a file copied unchanged from Iglunix's tree (see the NOTICE
there). Each must convert to a recipe that lints, and no line of shell may
disappear without a trace.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from iglubuild.errors import RecipeError, UsageError
from iglubuild.importer import (
    convert,
    parse_build_sh,
    split_list,
    subpackage_name,
    write_recipe,
)
from iglubuild.recipe import load_recipe
from tests.conftest import DISTFILES as SHARED_DISTFILES

FIXTURES = Path(__file__).parent / "fixtures" / "iglunix"
BUILD_SHS = sorted(FIXTURES.glob("*/*/build.sh"))


def _distfiles() -> Path | None:
    return SHARED_DISTFILES if (SHARED_DISTFILES / "SOURCES.tsv").is_file() else None


DISTFILES = _distfiles()
needs_distfiles = pytest.mark.skipif(DISTFILES is None, reason="shared distfiles not present")


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.parent.name}/{p.parent.name}" for p in paths]


def _import(build_sh: Path, tmp_path: Path, places: list[Path] | None = None) -> Path:
    result = convert(build_sh, places or [])
    out = tmp_path / "recipes" / result.repo / result.name
    return write_recipe(result, out)


def test_enough_real_fixtures() -> None:
    assert len(BUILD_SHS) >= 10
    assert (FIXTURES / "NOTICE").is_file()


@pytest.mark.parametrize("build_sh", BUILD_SHS, ids=_ids(BUILD_SHS))
def test_every_fixture_imports_to_a_recipe_that_lints(build_sh: Path, tmp_path: Path) -> None:
    target = _import(build_sh, tmp_path, [DISTFILES] if DISTFILES else [])
    if "TODO: could not resolve the version" in target.read_text():
        # Loud on purpose: a version set inside a `case` (linux) is refused
        # by lint until someone picks it; nothing else may be wrong.
        with pytest.raises(RecipeError) as info:
            load_recipe(target)
        assert [p.message.split(":")[0] for p in info.value.problems] == ["version"]
        return
    lr = load_recipe(target)  # raises RecipeError on any problem
    script = parse_build_sh(build_sh)
    assert lr.recipe.name == script.variables["pkgname"]
    text = target.read_text()
    # A URL held in a variable (linux: "$src_tar", set in a case), or a fetch()
    # that downloads nothing (base/iglunix copies files), is flagged instead.
    assert lr.recipe.sources or "TODO: fetch() downloads nothing" in text
    # The round-trip loader sees the comments the converter wrote.
    assert text.startswith("# Imported from Iglunix ")
    YAML(typ="rt").load(text)


# Lines whose meaning the recipe carries in another form; each is checked
# for its effect below, everything else must be in the text verbatim.
_STRUCTURE = re.compile(r"^(\}|[A-Za-z_][A-Za-z0-9_+-]*\s*\(\)\s*\{|return|:|"
                        r"(pkgname|pkgver|pkgrel|deps|mkdeps|bad|ext|desc)=.*)$")
_CD = re.compile(r"^cd\s+[\"']?\$\{?pkgname\}?-\$\{?pkgver\}?[\"']?/?$")
_UNPACK = re.compile(r"^(tar\s+-?x\S*\s+\S+|mv\s+\S+\s+\$pkgname-\$pkgver)$")


def _unaccounted(build_sh: Path, text: str) -> list[str]:
    """Non-empty, non-comment lines of build_sh found neither translated nor kept."""
    lr_text = text
    data = YAML(typ="safe").load(text)
    flat = re.sub(r"\s+", " ", re.sub(r"\\\n\s*#?", " ", lr_text).replace("\n#", "\n"))
    flat = flat.replace("../../", "../")
    urls = [s.get("url", "") for s in data.get("sources", [])]
    files = [s["file"] for s in data.get("sources", []) if "file" in s] + \
        data.get("patches", [])
    missing = []
    for line in re.sub(r"\\\n", " ", build_sh.read_text()).splitlines():
        stripped = re.sub(r"\s+", " ", line.strip())
        if not stripped or stripped.startswith("#") or _STRUCTURE.match(stripped):
            continue
        stripped = re.sub(r"\bbad --gmake ", "", stripped)
        if _CD.match(stripped) or (_UNPACK.match(stripped) and urls):
            continue
        if re.match(rf"^mv \S+ {re.escape(data['name'])}-\$pkgver/?$", stripped) and urls:
            continue  # the engine names the source folder <name>-<version> itself
        if stripped.startswith("curl "):
            host = re.search(r"[a-z]+://[^/\"']+", stripped)
            if host and any(u.startswith(host.group(0)) for u in urls):
                continue
        m = re.match(r"^mkdir (-p )?\$pkgname-\$pkgver/build$", stripped)
        if m and f"mkdir {m.group(1) or ''}build" in flat:
            continue
        m = re.match(r"^(?:patch -p1 < |cp )(?:\.\./)+(\S+)( \S+)?$", stripped)
        if m and (m.group(1) in files or "*" in m.group(1) and files):
            continue
        m = re.match(r"^cat (\S+)$", stripped)  # license(): named in the license comment
        if m and re.search(r"^license: .*" + re.escape(m.group(1)), text, re.M):
            continue
        if stripped.startswith("find ") and all(
                w in flat for w in stripped.split()[1:]):
            continue
        if stripped.replace("../../", "../") not in flat:
            missing.append(line.strip())
    return missing


@pytest.mark.parametrize("build_sh", BUILD_SHS, ids=_ids(BUILD_SHS))
def test_no_shell_line_is_silently_dropped(build_sh: Path, tmp_path: Path) -> None:
    """Property: every non-empty, non-comment line appears translated or in a TODO."""
    text = _import(build_sh, tmp_path).read_text()
    missing = _unaccounted(build_sh, text)
    assert not missing, "dropped without a trace:\n" + "\n".join(missing)


def test_curl_tag_name_becomes_version_underscore(tmp_path: Path) -> None:
    lr = load_recipe(_import(FIXTURES / "base/curl/build.sh", tmp_path))
    assert lr.recipe.sources[0].url == \
        "https://github.com/curl/curl/releases/download/curl-8_5_0/curl-8.5.0.tar.xz"
    assert lr.recipe.deps == ["openssl"] and lr.recipe.makedeps == ["bmake"]
    # cd $pkgname-$pkgver is gone: the phase runs in the source folder.
    assert "cd " not in (lr.recipe.build or "")
    assert "--with-openssl" in (lr.recipe.build or "")


def test_bad_gmake_goes_to_gnu_and_patches_are_copied(tmp_path: Path) -> None:
    target = _import(FIXTURES / "base/libffi/build.sh", tmp_path)
    lr = load_recipe(target)
    assert lr.recipe.gnu == ["gmake"]
    assert all("bad --gmake" not in (phase or "") for phase in lr.recipe.phases.values())
    assert "gmake install DESTDIR=$pkgdir" in (lr.recipe.package or "")
    assert lr.recipe.patches == ["undef.patch"]
    assert (target.parent / "undef.patch").read_bytes() == \
        (FIXTURES / "base/libffi/undef.patch").read_bytes()
    assert lr.recipe.subpackages["dev"] == ["usr/include", "usr/lib/pkgconfig", "usr/lib/*.a"]


def test_mkdeps_bad_gmake_is_not_a_package(tmp_path: Path) -> None:
    lr = load_recipe(_import(FIXTURES / "linux/musl/build.sh", tmp_path))
    assert lr.recipe.makedeps == [] and lr.recipe.gnu == ["gmake"]
    # $PREFIX came from top-level shell that cannot be translated: flagged.
    assert "# TODO: build() uses $PREFIX" in (lr.recipe.build or "")
    assert "PREFIX=$FOR_CROSS_DIR" in lr.text  # the original kept as a comment


def test_files_beside_build_sh_become_file_sources(tmp_path: Path) -> None:
    target = _import(FIXTURES / "base/openssl/build.sh", tmp_path)
    lr = load_recipe(target)
    assert any(s.file == "update-ca.sh" for s in lr.recipe.sources)
    assert (target.parent / "update-ca.sh").is_file()
    assert "TODO: package() uses ../../update-ca.sh" in (lr.recipe.package or "")
    assert lr.recipe.makedeps == ["perl", "bmake"]  # mkdeps=perl:bmake (colon list)


def test_llvm_subpackage_functions_become_globs(tmp_path: Path) -> None:
    target = _import(FIXTURES / "base/llvm/build.sh", tmp_path)
    subs = load_recipe(target).recipe.subpackages
    assert subs["binutils"][:2] == ["usr/bin/llvm-addr2line", "usr/bin/llvm-ar"]
    assert subs["libcxx_dev"] == ["usr/lib/libc++.so", "usr/lib/libc++experimental.a",
                                  "usr/lib/libc++.modules.json", "usr/include/c++",
                                  "usr/share/libc++"]
    text = target.read_text()
    # deps= / shlibs= lines inside sub-package functions are kept for review.
    assert "deps=libunwind" in text and 'shlibs="libc++.so.1"' in text


@needs_distfiles
def test_checksum_from_a_local_distfile(tmp_path: Path) -> None:
    assert DISTFILES is not None
    lr = load_recipe(_import(FIXTURES / "base/mksh/build.sh", tmp_path, [DISTFILES]))
    src = lr.recipe.sources[0]
    expected = hashlib.sha256((DISTFILES / "mksh-R59c.tgz").read_bytes()).hexdigest()
    assert src.sha256 == expected and src.unverified is None
    # The licence text URL is not local: unverified, not invented.
    assert lr.recipe.sources[1].sha256 is None and lr.recipe.sources[1].unverified


def test_unreachable_source_is_marked_unverified(tmp_path: Path) -> None:
    lr = load_recipe(_import(FIXTURES / "base/zstd/build.sh", tmp_path, [tmp_path]))
    assert lr.recipe.sources[0].sha256 is None
    assert "iglubuild checksum" in (lr.recipe.sources[0].unverified or "")


def test_split_list_and_subpackage_names() -> None:
    assert split_list("musl:libcxx") == ["musl", "libcxx"]
    assert split_list("cmake samurai") == ["cmake", "samurai"]
    assert split_list("") == []
    assert subpackage_name("llvm", "llvm-binutils") == "binutils"
    assert subpackage_name("llvm", "libunwind-dev") == "libunwind_dev"


def test_cli_import_writes_and_refuses_to_overwrite(cli, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    res = cli("--recipes", str(recipes), "import", str(FIXTURES / "base/samurai"))
    assert res.code == 0, res.err
    target = recipes / "base" / "samurai" / "recipe.yaml"
    assert f"wrote {target}" in res.out and "TODO" in res.out
    before = target.read_text()
    res = cli("--recipes", str(recipes), "import", str(FIXTURES / "base/samurai/build.sh"))
    assert res.code == 2 and "already exists" in res.err and "Traceback" not in res.err
    assert target.read_text() == before
    assert cli("--recipes", str(recipes), "lint", str(target)).code == 0


def test_cli_import_output_option(cli, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "curl"
    res = cli("import", str(FIXTURES / "base/curl/build.sh"), "-o", str(out))
    assert res.code == 0, res.err
    assert (out / "recipe.yaml").is_file()
    assert not list(out.glob(".*.tmp"))


def test_cli_import_bad_input(cli, tmp_path: Path) -> None:
    res = cli("import", str(tmp_path / "nope.sh"))
    assert res.code == 2 and res.err.startswith("error: cannot read")
    not_iglunix = tmp_path / "build.sh"
    not_iglunix.write_text("echo hello\n")
    res = cli("import", str(not_iglunix))
    assert res.code == 2 and "no pkgname=" in res.err and "hint:" in res.err
    unclosed = tmp_path / "u" / "build.sh"
    unclosed.parent.mkdir()
    unclosed.write_text("pkgname=x\npkgver=1\nbuild() {\n\tmake\n")
    res = cli("import", str(unclosed))
    assert res.code == 2 and "never closed" in res.err
    with pytest.raises(UsageError):
        parse_build_sh(not_iglunix)


@needs_distfiles
def test_cli_import_finds_checksum_through_a_file_mirror(cli, tmp_path: Path) -> None:
    """A local mirror folder (file:// URL) is searched like the distfiles cache."""
    assert DISTFILES is not None
    res = cli("--distfiles", str(tmp_path / "empty"), "--mirror", f"file://{DISTFILES}",
              "import", str(FIXTURES / "base/libffi/build.sh"), "-o", str(tmp_path / "libffi"))
    assert res.code == 0, res.err
    src = load_recipe(tmp_path / "libffi" / "recipe.yaml").recipe.sources[0]
    assert src.sha256 == hashlib.sha256(
        (DISTFILES / "libffi-3.4.4.tar.gz").read_bytes()).hexdigest()


def test_self_dependency_and_shell_braces(tmp_path: Path) -> None:
    # rust lists itself in mkdeps (bootstrapped from an earlier build).
    target = _import(FIXTURES / "extra/rust/build.sh", tmp_path)
    lr = load_recipe(target)
    assert "rust" not in lr.recipe.makedeps
    assert "build.sh listed rust itself here" in target.read_text()
    # go's URL uses bash's ${pkgver/_/}: kept literally (braces doubled) and flagged.
    target = _import(FIXTURES / "extra/go/build.sh", tmp_path)
    lr = load_recipe(target)
    assert "${pkgver/_/}" in lr.recipe.sources[0].url
    assert "TODO: replace ${pkgver/_/}" in target.read_text()


def test_invalid_package_name_is_refused(cli, tmp_path: Path) -> None:
    # Iglunix really has a package named with an emoji (base/🦆).
    duck = tmp_path / "duck" / "build.sh"
    duck.parent.mkdir()
    duck.write_text("pkgname=\U0001f986\npkgver=1\n")
    res = cli("import", str(duck), "-o", str(tmp_path / "out"))
    assert res.code == 2 and "not a valid recipe name" in res.err
    assert not (tmp_path / "out").exists()


def test_cli_import_tree_in_one_process(cli, tmp_path: Path) -> None:
    """`import --tree` converts every fixture in one call and prints one row each."""
    recipes = tmp_path / "recipes"
    res = cli("--recipes", str(recipes), "import", "--tree", str(FIXTURES))
    assert res.code == 0, res.err
    rows = [line for line in res.out.splitlines()[1:-1]]
    assert len(rows) == len(BUILD_SHS)
    assert f"{len(BUILD_SHS)} converted, 0 failed" in res.out.splitlines()[-1]
    curl = next(r for r in rows if r.startswith("base/curl "))
    assert curl.split()[1] == "base/curl" and curl.split()[2].isdigit()
    assert "version" in next(r for r in rows if r.startswith("linux/linux ")).split(None, 3)[3]
    assert len(list(recipes.glob("*/*/recipe.yaml"))) == len(BUILD_SHS)


def test_cli_import_many_paths_fails_only_for_unreadable(cli, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    broken = tmp_path / "x" / "broken" / "build.sh"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"pkgname=\xff\n")
    res = cli("--recipes", str(recipes), "import", str(FIXTURES / "base/curl"),
              str(broken), str(FIXTURES / "base/zstd/build.sh"))
    assert res.code == 2
    assert "not a UTF-8 text file" in res.err and "Traceback" not in res.err
    assert "2 converted, 1 failed" in res.out
    assert (recipes / "base/curl/recipe.yaml").is_file()
    assert (recipes / "base/zstd/recipe.yaml").is_file()
    res = cli("--recipes", str(recipes), "import", str(FIXTURES / "base/curl"),
              str(FIXTURES / "base/zstd"), "-o", str(tmp_path / "o"))
    assert res.code == 2 and "-o names one recipe folder" in res.err


# --- one fixture per mistake of issue 17: each must be translated or loud ------

def _text(build_sh: Path, tmp_path: Path) -> tuple[str, object]:
    target = _import(build_sh, tmp_path)
    return target.read_text(), load_recipe(target).recipe


def test_mandoc_commands_before_cd_run_beside_the_source_folder(tmp_path: Path) -> None:
    text, r = _text(FIXTURES / "base/mandoc/build.sh", tmp_path)
    package = r.package.splitlines()  # type: ignore[attr-defined]
    # `install ./man.sh` ran before `cd $pkgname-$pkgver`: flagged, and run in
    # .. where the file: sources (man.sh, copied there by fetch()) are.
    assert package[0].startswith("# TODO: package() runs `install -Dm644 ./man.sh")
    assert package[1:4] == ["cd ..", "install -Dm644 ./man.sh $pkgdir/etc/profile.d/man.sh",
                            'cd "$srcdir"']
    files = [s.file for s in r.sources if s.file]  # type: ignore[attr-defined]
    assert files == ["configure.local", "man.sh"]
    assert r.patches == ["term-size.patch"]  # type: ignore[attr-defined]
    assert "cp ../configure.local ." in (r.prepare or "")  # type: ignore[attr-defined]


def test_foot_extra_sources_get_their_own_names_and_tar_c_is_kept(tmp_path: Path) -> None:
    text, r = _text(FIXTURES / "gui/foot/build.sh", tmp_path)
    names = [s.display_name for s in r.sources]  # type: ignore[attr-defined]
    assert names == ["foot-1.13.1.tar.gz", "fcft-3.1.4.tar.gz", "tllist-1.1.0.tar.gz"]
    prepare = r.prepare or ""  # type: ignore[attr-defined]
    assert "# tar -xf fcft.tar.gz -C $pkgname-$pkgver/subprojects" in prepare
    assert "# tar -xf tllist.tar.gz -C $pkgname-$pkgver/subprojects" in prepare
    assert prepare.count("TODO: fetch() unpacks an extra source") == 2
    # `mkdir $pkgname-$pkgver/build` is translated, not a TODO.
    assert prepare.splitlines()[0] == "mkdir build"
    # The patch is not in the fixture folder: said so, with the line kept.
    assert "TODO: fetch() applies netbsd-tic.patch, which is not beside build.sh" in prepare


def test_helper_functions_stay_shell_functions(tmp_path: Path) -> None:
    text, r = _text(FIXTURES / "extra/rust/build.sh", tmp_path)
    assert "_clear_vendor_checksums" not in r.subpackages  # type: ignore[attr-defined]
    prepare = r.prepare or ""  # type: ignore[attr-defined]
    define = prepare.index("_clear_vendor_checksums() {")
    assert define < prepare.index("\n_clear_vendor_checksums curl\n")
    # cbindgen defines it and never calls it: kept in a TODO, not a sub-package.
    text, r = _text(FIXTURES / "extra/cbindgen/build.sh", tmp_path)
    assert r.subpackages == {}  # type: ignore[attr-defined]
    assert "TODO: helper function _clear_vendor_checksums() is not called" in text
    for fixture in ("extra/rust-analyzer", "gui/firefox", "snd/ncspot", "gui/i3status-rs"):
        r = load_recipe(_import(FIXTURES / fixture / "build.sh", tmp_path / fixture)).recipe
        assert not any(k.startswith("_") or "clear" in k for k in r.subpackages), fixture


def test_computed_versions_are_resolved(tmp_path: Path) -> None:
    text, r = _text(FIXTURES / "gnome/glib/build.sh", tmp_path)
    assert r.version == "2.75.2"  # type: ignore[attr-defined]
    assert "glib/{version_minor}/glib-{version}.tar.xz" in text
    assert r.sources[0].url.endswith("/glib/2.75/glib-2.75.2.tar.xz")  # type: ignore
    _, r = _text(FIXTURES / "extra/libxml2/build.sh", tmp_path / "x")
    assert r.version == "2.10.3"  # type: ignore[attr-defined]
    _, r = _text(FIXTURES / "gui/freetype-harbuzz/build.sh", tmp_path / "f")
    assert r.version == "2.11.0+3.0.0"  # type: ignore[attr-defined]


def test_unresolvable_version_is_a_todo_that_lint_refuses(tmp_path: Path) -> None:
    target = _import(FIXTURES / "linux/linux/build.sh", tmp_path)
    assert "# TODO: could not resolve the version (no pkgver= in build.sh)" in \
        target.read_text()
    with pytest.raises(RecipeError) as info:
        load_recipe(target)
    assert "version" in str(info.value)


def test_commented_out_lines_stay_comments_and_cp_adds_sources(tmp_path: Path) -> None:
    pkg = tmp_path / "in" / "base" / "demo"
    pkg.mkdir(parents=True)
    for name in ("fix.patch", "old.patch", "demo.conf", "unused.conf"):
        (pkg / name).write_text(name + "\n")
    (pkg / "build.sh").write_text(
        "pkgname=demo\npkgver=1.0\ndesc='a demo'\n\n"
        "fetch() {\n\tcurl https://example.org/demo-$pkgver.tar.gz -o $pkgname-$pkgver.tar.gz\n"
        "\ttar -xf $pkgname-$pkgver.tar.gz\n\tcp ../fix.patch .\n\tcp ../demo.conf .\n"
        "\tcd $pkgname-$pkgver\n\tpatch -p1 < ../fix.patch\n\t#patch -p1 < ../../old.patch\n"
        "}\n\nbuild() {\n\tcd $pkgname-$pkgver\n\tmake\n}\n\n"
        "package() {\n\tcd $pkgname-$pkgver\n\tmake install DESTDIR=$pkgdir\n"
        "#\tinstall -Dm644 ../../unused.conf $pkgdir/etc/unused.conf\n"
        "\tinstall -Dm644 ../demo.conf $pkgdir/etc/demo.conf\n}\n")
    target = _import(pkg / "build.sh", tmp_path)
    r = load_recipe(target).recipe
    assert r.patches == ["fix.patch"]
    assert [s.file for s in r.sources if s.file] == ["demo.conf"]
    assert "#patch -p1 < ../../old.patch" in (r.prepare or "")
    assert "#\tinstall -Dm644 ../../unused.conf" in (r.package or "") or \
        "# install -Dm644 ../../unused.conf" in (r.package or "") or \
        "#install -Dm644 ../../unused.conf" in (r.package or "").replace("\t", "")
    assert not (target.parent / "unused.conf").exists()
    assert (target.parent / "demo.conf").is_file() and (target.parent / "fix.patch").is_file()
    assert "no desc=" not in target.read_text()


def test_url_version_disagreeing_with_pkgver_is_flagged(tmp_path: Path) -> None:
    target = _import(FIXTURES / "gui/libxkbcommon/build.sh", tmp_path)
    assert "# TODO: the URL fetches version 1.0.3 but pkgver is 1.5.0" in target.read_text()


def test_gmake_is_not_in_its_own_gnu_list(tmp_path: Path) -> None:
    _, r = _text(FIXTURES / "bad/gmake/build.sh", tmp_path)
    assert "gmake" not in r.gnu  # type: ignore[attr-defined]


def test_missing_desc_is_a_todo_in_the_recipe(tmp_path: Path) -> None:
    text, _ = _text(FIXTURES / "base/curl/build.sh", tmp_path)
    assert "description: curl (imported from Iglunix)  # TODO: no desc= in build.sh" in text


def test_no_blank_line_or_mkdir_build_todos(tmp_path: Path) -> None:
    """The noise of the old importer: blank lines and `mkdir $pkgname-$pkgver/build`."""
    for build_sh in BUILD_SHS:
        text = convert(build_sh, []).text
        assert not re.search(r"# TODO: fetch\(\) line not translated.*:\n *# *\n", text), build_sh
        assert "# mkdir $pkgname-$pkgver/build" not in text, build_sh


def test_imported_tree_lints_in_one_pass(cli, tmp_path: Path) -> None:
    """`import --tree` then `lint`: every problem is in the first report; fixing
    exactly those leaves a tree that lints (nothing was hidden behind them)."""
    recipes = tmp_path / "recipes"
    assert cli("--recipes", str(recipes), "import", "--tree", str(FIXTURES)).code == 0
    res = cli("--recipes", str(recipes), "lint")
    assert res.code == 2
    reported = [line for line in res.err.splitlines() if line.startswith("error: ")]
    assert all(re.match(r"^error: \S+:\d+:\d+: ", line) for line in reported)
    for line in reported:
        path = Path(line.split()[1].split(":")[0])
        if m := re.search(r"unknown dependency '([^']+)'", line):
            stub = recipes / "stub" / m.group(1) / "recipe.yaml"
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text(f"name: {m.group(1)}\nversion: '1'\n")
        elif "duplicate package name" in line:
            path.unlink()
        elif "version" in line:
            path.write_text(re.sub(r"(?m)^version: .*$", "version: '6.1.21'",
                                   path.read_text()))
        else:
            raise AssertionError(f"unexpected problem: {line}")
    res = cli("--recipes", str(recipes), "lint")
    assert res.code == 0, res.err


def test_llvm_subpackages_listed_in_subpkgs_are_not_helpers(tmp_path: Path) -> None:
    """`-DLLVM_ENABLE_PROJECTS="llvm;lld;clang"` does not make lld() a helper."""
    target = _import(FIXTURES / "base/llvm/build.sh", tmp_path)
    r = load_recipe(target).recipe
    assert {"lld", "libcxx", "clang"} <= set(r.subpackages)
    assert "helper function" not in target.read_text()
    # `cd build` then `cmake ../llvm`: still inside the source folder, no TODO.
    assert "uses ../llvm" not in (r.build or "")


def test_subpackage_deps_are_named_in_a_todo(tmp_path: Path) -> None:
    """llvm's clang() says deps=...: recipes have no sub-package deps, so a TODO names them."""
    text = _import(FIXTURES / "base/llvm/build.sh", tmp_path).read_text()
    clang_deps = re.search(r"(?m)^\s*deps=(.*)$", "\n".join(
        parse_build_sh(FIXTURES / "base/llvm/build.sh").functions["clang"])).group(1)  # type: ignore[union-attr]
    needed = split_list(clang_deps.strip("\"'"))
    assert f"# TODO: llvm-clang needs {', '.join(needed)} at run time" in text

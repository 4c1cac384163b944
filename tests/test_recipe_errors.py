"""Malformed recipes: each gives exit 2, the exact file:line:col and a useful message.

One case per failure mode. Each case is a small recipe tree; `good` recipes
that other cases depend on are added to every tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SHA = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4"

GOOD_MUSL = f"""name: musl
version: 1.2.3
sources:
  - url: https://musl.libc.org/releases/musl-{{version}}.tar.gz
    sha256: {SHA}
subpackages:
  dev: [usr/include]
"""

# name -> (files, expected path suffix, line, column, message fragment)
CASES: dict[str, tuple[dict[str, str | bytes], str, int, int, str]] = {
    "yaml-syntax": ({"base/a/recipe.yaml": "name: a\nversion: [1.0\n"},
                    "base/a/recipe.yaml", 3, 1, "invalid YAML"),
    "tab-indent": ({"base/a/recipe.yaml": "name: a\nversion: 1\nsources:\n\t- file: x\n"},
                   "base/a/recipe.yaml", 4, 1, "tab"),
    "duplicate-key": ({"base/a/recipe.yaml": "name: a\nversion: 1\nname: a\n"},
                      "base/a/recipe.yaml", 3, 1, "duplicate key"),
    "wrong-type-deps": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: musl\n"},
                        "base/a/recipe.yaml", 3, 7, "deps: expected a list, got a string"),
    "wrong-type-release": ({"base/a/recipe.yaml": "name: a\nversion: 1\nrelease: one\n"},
                           "base/a/recipe.yaml", 3, 10, "release: expected an integer"),
    "release-zero": ({"base/a/recipe.yaml": "name: a\nversion: 1\nrelease: 0\n"},
                     "base/a/recipe.yaml", 3, 10, "positive integer"),
    "version-float": ({"base/a/recipe.yaml": "name: a\nversion: 1.10\n"},
                      "base/a/recipe.yaml", 2, 10, "version: expected a string, got a number"),
    # YAML 1.2 reads `-_` as a number (digit separators, no digit); ruamel's
    # constructor raised ValueError on it (found by test_graph's fuzzing).
    "number-without-digits": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [musl, -_]\n"},
                              "base/a/recipe.yaml", 3, 14, "YAML reads '-_' as a number"),
    "version-space": ({"base/a/recipe.yaml": "name: a\nversion: 1.0 beta\n"},
                      "base/a/recipe.yaml", 2, 10, "invalid version"),
    "version-dash": ({"base/a/recipe.yaml": "name: a\nversion: 1.0-2\n"},
                     "base/a/recipe.yaml", 2, 10, "invalid version"),
    "unknown-key": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndepends: [musl]\n"},
                    "base/a/recipe.yaml", 3, 1, "key 'depends' (did you mean 'deps'"),
    "unknown-source-key": ({"base/a/recipe.yaml":
                            "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"
                            f"    sha265: {SHA}\n"},
                           "base/a/recipe.yaml", 5, 5, "did you mean 'sha256'"),
    "missing-version": ({"base/a/recipe.yaml": "name: a\n"},
                        "base/a/recipe.yaml", 1, 1, "missing required key 'version'"),
    "bad-checksum-length": ({"base/a/recipe.yaml":
                             "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"
                             "    sha256: abc123\n"},
                            "base/a/recipe.yaml", 5, 13, "64 lowercase hex"),
    "bad-checksum-chars": ({"base/a/recipe.yaml":
                            "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"
                            f"    sha256: {SHA.upper()}\n"},
                           "base/a/recipe.yaml", 5, 13, "64 lowercase hex"),
    "bad-sha512": ({"base/a/recipe.yaml":
                    "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"
                    f"    sha512: {SHA}\n"},
                   "base/a/recipe.yaml", 5, 13, "128 lowercase hex"),
    "no-checksum": ({"base/a/recipe.yaml":
                     "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"},
                    "base/a/recipe.yaml", 4, 5, "needs sha256 or sha512"),
    "bad-url-scheme": ({"base/a/recipe.yaml":
                        "name: a\nversion: 1\nsources:\n  - url: gopher://x/a.tgz\n"
                        f"    sha256: {SHA}\n"},
                       "base/a/recipe.yaml", 4, 10, "unsupported URL"),
    "url-and-file": ({"base/a/recipe.yaml":
                      "name: a\nversion: 1\nsources:\n  - url: https://x/a.tgz\n"
                      f"    file: a.conf\n    sha256: {SHA}\n", "base/a/a.conf": "x"},
                     "base/a/recipe.yaml", 4, 5, "exactly one of url, file or git"),
    "bad-expansion": ({"base/a/recipe.yaml":
                       "name: a\nversion: 1\nsources:\n  - url: https://x/a-{ver}.tgz\n"
                       f"    sha256: {SHA}\n"},
                      "base/a/recipe.yaml", 4, 10, "cannot expand URL"),
    "missing-file-source": ({"base/a/recipe.yaml":
                             "name: a\nversion: 1\nsources:\n  - file: a.conf\n"},
                            "base/a/recipe.yaml", 4, 11, "'a.conf' not found"),
    "missing-patch": ({"base/a/recipe.yaml": "name: a\nversion: 1\npatches: [fix.patch]\n"},
                      "base/a/recipe.yaml", 3, 11, "patch 'fix.patch' not found"),
    "name-mismatch": ({"base/a/recipe.yaml": "name: b\nversion: 1\n"},
                      "base/a/recipe.yaml", 1, 7, "does not match its folder"),
    "bad-name": ({"base/Abc/recipe.yaml": "name: Abc\nversion: 1\n"},
                 "base/Abc/recipe.yaml", 1, 7, "invalid package name"),
    "missing-dep": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [musl, opensll]\n",
                     "base/openssl/recipe.yaml": "name: openssl\nversion: 3\n"},
                    "base/a/recipe.yaml", 3, 14, "unknown dependency 'opensll'"),
    "missing-subpackage-dep": ({"base/a/recipe.yaml":
                                "name: a\nversion: 1\nmakedeps: [musl-doc]\n"},
                               "base/a/recipe.yaml", 3, 12, "unknown dependency 'musl-doc'"),
    "self-dep": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [musl, a]\n"},
                 "base/a/recipe.yaml", 3, 14, "depends on itself"),
    "cycle": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [b]\n",
               "base/b/recipe.yaml": "name: b\nversion: 1\ndeps: [c]\n",
               "base/c/recipe.yaml": "name: c\nversion: 1\nmakedeps: [a]\n"},
              "base/a/recipe.yaml", 3, 8, "dependency cycle: a -> c -> b -> a"),
    "duplicate-across-repos": ({"extra/musl/recipe.yaml": "name: musl\nversion: 2\n"},
                               "extra/musl/recipe.yaml", 1, 7, "duplicate package name 'musl'"),
    "empty-file": ({"base/a/recipe.yaml": ""}, "base/a/recipe.yaml", 1, 1, "empty recipe"),
    "top-level-list": ({"base/a/recipe.yaml": "- name: a\n- version: 1\n"},
                       "base/a/recipe.yaml", 1, 1, "must be a mapping of keys, got a list"),
    "top-level-scalar": ({"base/a/recipe.yaml": "just some words\n"},
                         "base/a/recipe.yaml", 1, 1, "must be a mapping of keys, got a string"),
    "binary-garbage": ({"base/a/recipe.yaml": b"name: a\n\x89PNG\r\n\x1a\n\x00\x00"},
                       "base/a/recipe.yaml", 2, 1, "not UTF-8"),
    "control-chars": ({"base/a/recipe.yaml": "name: a\nversion: 1\x00\n"},
                      "base/a/recipe.yaml", 2, 11, "control character"),
    "very-long-value": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndescription: "
                         + "x" * 70000 + "\n"},
                        "base/a/recipe.yaml", 3, 14, "longer than"),
    "unknown-option": ({"base/a/recipe.yaml": "name: a\nversion: 1\noptions: [no-chek]\n"},
                       "base/a/recipe.yaml", 3, 11, "did you mean 'no-check'"),
    "subpackages-not-mapping": ({"base/a/recipe.yaml":
                                 "name: a\nversion: 1\nsubpackages: [dev]\n"},
                                "base/a/recipe.yaml", 3, 1, "subpackages: expected a mapping"),
    "dep-not-string": ({"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [musl, 42]\n"},
                       "base/a/recipe.yaml", 3, 14, "deps.1: expected a string, got an integer"),
    "source-not-mapping": ({"base/a/recipe.yaml":
                            "name: a\nversion: 1\nsources: [a.tgz]\n"},
                           "base/a/recipe.yaml", 3, 11, "sources.0: expected a mapping"),
    "unclosed-quote": ({"base/a/recipe.yaml": "name: a\nversion: '1\nrelease: 1\n"},
                       "base/a/recipe.yaml", 4, 1, "invalid YAML"),
    "bad-indent": ({"base/a/recipe.yaml": "name: a\nversion: 1\n  release: 1\n"},
                   "base/a/recipe.yaml", 3, 10, "invalid YAML"),
}


def _write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    musl = root / "base" / "musl" / "recipe.yaml"
    musl.parent.mkdir(parents=True)
    musl.write_text(GOOD_MUSL)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_recipe(case: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    files, rel, line, col, fragment = CASES[case]
    root = tmp_path / "recipes"
    _write_tree(root, files)
    result = cli("--recipes", str(root), "lint")
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    expected_prefix = f"error: {root / rel}:{line}:{col}: "
    lines = [ln for ln in result.err.splitlines() if ln.startswith(expected_prefix)]
    assert lines, f"no line starting {expected_prefix!r} in:\n{result.err}"
    assert any(fragment in ln for ln in lines), result.err


def test_all_problems_in_one_file_reported(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "recipes"
    _write_tree(root, {"base/a/recipe.yaml":
                       "name: a\nversion: 1 0\nrelase: 2\ndeps: x\noptions: [nope]\n"})
    result = cli("--recipes", str(root), "lint")
    assert result.code == 2
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert [e.split(":")[2] for e in errors] == ["2", "3", "4", "5"]


def test_problems_across_many_recipes_all_reported(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "recipes"
    files: dict[str, str | bytes] = {f"base/p{i}/recipe.yaml": f"name: p{i}\nversion: 1 {i}\n"
                                     for i in range(5)}
    _write_tree(root, files)
    result = cli("--recipes", str(root), "lint")
    assert result.code == 2
    assert sum(1 for ln in result.err.splitlines() if "invalid version" in ln) == 5


def test_cli_subprocess_one_line_no_traceback(tmp_path: Path) -> None:
    """Through the real console entry point, not only in-process."""
    root = tmp_path / "recipes"
    _write_tree(root, {"base/a/recipe.yaml": "name: a\nversion: 1\ndeps: [zlib]\n"})
    proc = subprocess.run([sys.executable, "-m", "iglubuild", "--recipes", str(root),
                           "--build-dir", str(tmp_path / "b"), "lint"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {root}/base/a/recipe.yaml:3:8: unknown dependency")


def test_missing_recipe_folder_is_usage_error(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--recipes", str(tmp_path / "nope"), "lint")
    assert result.code == 2
    assert "does not exist" in result.err and "hint:" in result.err

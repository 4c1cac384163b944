"""The dependency graph: order, closure, waves, cycles; property tests on random trees."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iglubuild.graph import DepGraph
from iglubuild.recipe import load_tree, parse_recipe_text
from tests.conftest import write_recipe


def _tree(root: Path, deps: dict[str, list[str]], subs: dict[str, list[str]] | None = None):
    for name, ds in deps.items():
        body = f"name: {name}\nversion: '1'\ndeps: [{', '.join(ds)}]\n"
        if subs and name in subs:
            body += "subpackages:\n" + "".join(f"  {s}: [usr/x]\n" for s in subs[name])
        write_recipe(root, name, body)
    return DepGraph(load_tree(root))


def test_order_is_deterministic_and_ties_by_name(recipes: Path) -> None:
    g = _tree(recipes, {"c": [], "a": [], "b": ["c", "a"], "d": ["b"]})
    assert g.order() == ["a", "c", "b", "d"]
    assert g.waves() == [["a", "c"], ["b"], ["d"]]
    assert g.critical_path() in (["a", "b", "d"], ["c", "b", "d"])


def test_subpackage_dependency_resolves_to_parent(recipes: Path) -> None:
    g = _tree(recipes, {"zlib": [], "curl": ["zlib-dev"]}, subs={"zlib": ["dev"]})
    assert g.build_deps("curl") == ["zlib"]
    assert g.order(["curl"]) == ["zlib", "curl"]
    assert g.runtime_deps("curl") == ["zlib-dev"]


def test_closure_and_why(recipes: Path) -> None:
    g = _tree(recipes, {"musl": [], "openssl": ["musl"], "curl": ["openssl"], "less": ["musl"]})
    assert g.closure(["curl"]) == {"musl", "openssl", "curl"}
    assert g.path("curl", "musl") == ["curl", "openssl", "musl"]
    assert g.path("less", "openssl") is None
    assert g.dependents(["openssl"]) == {"curl"}


def test_graph_cli_formats(recipes: Path, cli) -> None:  # type: ignore[no-untyped-def]
    _tree(recipes, {"musl": [], "openssl": ["musl"], "curl": ["openssl"]})
    text = cli("--recipes", str(recipes), "graph", "curl")
    assert text.code == 0
    assert text.out.splitlines() == ["musl", "openssl: musl", "curl: musl openssl"]
    dot = cli("--recipes", str(recipes), "graph", "--format", "dot")
    assert '"curl" -> "openssl";' in dot.out and dot.out.startswith("digraph")
    rev = cli("--recipes", str(recipes), "graph", "--reverse", "openssl")
    assert rev.out.split() == ["openssl", "curl:", "openssl"]
    plan = cli("--recipes", str(recipes), "pkg", "curl", "--dry-run")
    assert "wave 1: musl" in plan.out and "critical path (3 packages," in plan.out
    unknown = cli("--recipes", str(recipes), "pkg", "crul", "--dry-run")
    assert unknown.code == 2 and "did you mean curl" in unknown.err


def test_graphviz_renders_dot(recipes: Path, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    import pytest

    if shutil.which("dot") is None:
        pytest.skip("graphviz not installed")
    _tree(recipes, {"musl": [], "curl": ["musl"]})
    dot = cli("--recipes", str(recipes), "graph", "--format", "dot").out
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout and "curl" in svg.stdout


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    n = draw(st.integers(min_value=1, max_value=25))
    names = [f"p{i}" for i in range(n)]
    deps: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        earlier = names[:i]
        deps[name] = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) \
            if earlier else []
    # Shuffle names so lexical order is not the generation order.
    perm = draw(st.permutations(names))
    rename = dict(zip(names, perm, strict=True))
    return {rename[k]: [rename[d] for d in v] for k, v in deps.items()}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deps=dags(), data=st.data())
def test_random_trees_give_valid_order_and_closed_closures(
    tmp_path_factory, deps: dict[str, list[str]], data: st.DataObject
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("r")
    g = _tree(root, deps)
    order = g.order()
    pos = {n: i for i, n in enumerate(order)}
    assert sorted(order) == sorted(deps)
    for name, ds in deps.items():
        for d in ds:
            assert pos[d] < pos[name]
    picked = data.draw(st.lists(st.sampled_from(sorted(deps)), min_size=1, max_size=3))
    closure = g.closure(picked)
    for name in closure:
        assert set(deps[name]) <= closure
    sub_order = g.order(picked)
    assert set(sub_order) == closure
    waves = g.waves()
    seen: set[str] = set()
    for wave in waves:
        for name in wave:
            assert set(deps[name]) <= seen
        seen |= set(wave)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
@example(text="[-_]")  # numbers without a digit, once a ValueError from ruamel
@example(text="[._]")
@example(text="v: 0x_")
def test_arbitrary_text_never_raises(text: str) -> None:
    recipe, problems = parse_recipe_text(Path("x/recipe.yaml"), text)
    assert (recipe is None) == bool(problems)
    for p in problems:
        assert p.line >= 1 and p.column >= 1 and p.message


_yaml_atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=20))
_yaml_values = st.recursive(_yaml_atoms, lambda c: st.lists(c, max_size=4)
                            | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["name", "version", "deps", "sources", "release",
                                              "subpackages", "options", "build", "x"]),
                            _yaml_values, max_size=6))
def test_arbitrary_yaml_structures_never_raise(data: dict) -> None:  # type: ignore[type-arg]
    import io

    from ruamel.yaml import YAML

    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, buf)
    recipe, problems = parse_recipe_text(Path("x/recipe.yaml"), buf.getvalue())
    assert (recipe is None) == bool(problems)


def test_implicit_libc_edges(recipes: Path) -> None:
    for name, deps in {"musl": [], "linux-headers": [], "mksh": [], "curl": ["mksh"]}.items():
        body = f"name: {name}\nversion: '1'\ndeps: [{', '.join(deps)}]\n"
        if name == "musl":
            body += "makedeps: [linux-headers]\nsubpackages: {dev: [usr/include]}\n"
        write_recipe(recipes, name, body)
    g = DepGraph(load_tree(recipes), implicit=("musl", "musl-dev"))
    assert g.build_deps("mksh") == ["musl"]
    assert g.build_deps("curl") == ["mksh", "musl"]
    assert g.build_deps("musl") == ["linux-headers"]
    assert g.build_deps("linux-headers") == []  # musl needs it: no cycle
    assert g.order()[:2] == ["linux-headers", "musl"]


def test_memo_answers_the_next_run_without_networkx(recipes: Path, tmp_path: Path) -> None:
    """`graph` on an unchanged tree reads networkx's earlier answer from the memo;
    a changed dependency, a damaged memo or another tree is a miss."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    for name, ds in {"musl": [], "zlib": ["musl"], "curl": ["zlib", "musl"]}.items():
        write_recipe(recipes, name, f"name: {name}\nversion: '1'\ndeps: [{', '.join(ds)}]\n")
    memo = tmp_path / "graph.json"
    first = DepGraph(load_tree(recipes), memo_file=memo)
    assert memo.is_file()
    again = DepGraph(load_tree(recipes), memo_file=memo)
    assert again._g is None  # served from the memo: networkx not used
    assert again.order() == first.order() == ["musl", "zlib", "curl"]
    assert again.build_deps("curl") == ["musl", "zlib"]
    assert again.closure(["zlib"]) == {"musl", "zlib"}  # networkx again, on demand
    # A changed dependency changes the key: the graph is made again.
    write_recipe(recipes, "zlib", "name: zlib\nversion: '1'\ndeps: []\n")
    write_recipe(recipes, "musl", "name: musl\nversion: '1'\ndeps: [zlib]\n")
    changed = DepGraph(load_tree(recipes), memo_file=memo)
    assert changed._g is not None and changed.order() == ["zlib", "musl", "curl"]
    # A damaged memo is a miss, not an error, and is replaced.
    for junk in (b"{not json", b'{"key": 1}', b"\x00" * 10):
        memo.write_bytes(junk)
        fresh = DepGraph(load_tree(recipes), memo_file=memo)
        assert fresh._g is not None and fresh.order() == ["zlib", "musl", "curl"]
    text = memo.read_text()
    memo.write_text(text.replace('"curl"', '"nobody"', 1))  # an edge to an unknown node
    assert DepGraph(load_tree(recipes), memo_file=memo)._g is not None
    # Through the CLI, the second `graph` imports no networkx.
    build = tmp_path / "build"
    argv = [sys.executable, "-X", "importtime", "-m", "iglubuild", "--recipes", str(recipes),
            "--build-dir", str(build), "graph"]
    runs = [subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, check=True)
            for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout and "curl: musl zlib" in runs[1].stdout
    assert "networkx" in runs[0].stderr
    assert "networkx" not in runs[1].stderr

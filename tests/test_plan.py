"""The build plan: signatures, up-to-date checks and the reasons a package is outdated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iglubuild.errors import UsageError
from iglubuild.plan import Plan, StateStore, Status, make_plan
from tests.conftest import REPO_ROOT
from tests.plan_fixtures import TARBALL2, load, make_tree, recipe_text, sha256_of

ALL = {"musl", "mksh", "pkgconf", "zlib", "openssl", "curl", "app"}


@pytest.fixture
def tree_dir(recipes: Path) -> Path:
    return make_tree(recipes)


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "build")


def plan_of(tree_dir: Path, state: StateStore, toolchain: str = "tc-1", **kw: object) -> Plan:
    tree, graph = load(tree_dir)
    return make_plan(tree, graph, toolchain, state, **kw)  # type: ignore[arg-type]


def mark_all_built(plan: Plan, state: StateStore, artifacts: dict[str, list[str]] | None = None
                   ) -> None:
    for name, pkg in plan.packages.items():
        state.write(pkg.new_record("built", duration=2.0,
                                   artifacts=(artifacts or {}).get(name, [])))


def outdated(plan: Plan) -> set[str]:
    return set(plan.to_build())


def test_fresh_build_dir_means_everything_never_built(tree_dir: Path, state: StateStore) -> None:
    plan = plan_of(tree_dir, state)
    assert {p.status for p in plan.packages.values()} == {Status.NEVER_BUILT}
    assert plan.order.index("zlib") < plan.order.index("openssl") < plan.order.index("curl")


def test_after_recording_builds_everything_is_up_to_date(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    plan = plan_of(tree_dir, state)
    assert plan.to_build() == []
    assert set(plan.up_to_date()) == ALL
    assert (state.dir / "zlib.json").is_file()


def test_changing_one_recipe_outdates_exactly_it_and_its_reverse_deps(
    tree_dir: Path, state: StateStore
) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    zlib = tree_dir / "base" / "zlib" / "recipe.yaml"
    zlib.write_text(zlib.read_text().replace("release: 1", "release: 2"))
    plan = plan_of(tree_dir, state)
    _, graph = load(tree_dir)
    assert outdated(plan) == {"zlib"} | graph.dependents(["zlib"])
    assert outdated(plan) == {"zlib", "openssl", "curl", "app"}
    assert plan.packages["zlib"].reasons == ["recipe changed"]
    assert plan.packages["openssl"].reasons == ["dependency zlib changed"]
    # curl needs zlib directly and through openssl: both show.
    assert plan.packages["curl"].reasons == ["dependency openssl changed",
                                             "dependency zlib changed"]
    assert plan.packages["app"].reasons == ["dependency curl changed"]


@pytest.mark.parametrize("leaf", sorted(ALL))
def test_each_recipe_change_reaches_exactly_its_dependents(
    tree_dir: Path, state: StateStore, leaf: str
) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    path = tree_dir / "base" / leaf / "recipe.yaml"
    path.write_text(path.read_text() + "# a comment changes the recipe bytes\n")
    _, graph = load(tree_dir)
    assert outdated(plan_of(tree_dir, state)) == {leaf} | graph.dependents([leaf])


def test_patch_change_is_reported_as_patches_files(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    (tree_dir / "base" / "zlib" / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    plan = plan_of(tree_dir, state)
    assert plan.packages["zlib"].reasons == ["patches/files changed"]
    assert outdated(plan) == {"zlib", "openssl", "curl", "app"}


def test_file_source_change_is_reported_as_patches_files(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    (tree_dir / "base" / "zlib" / "zlib.conf").write_text("level=9\n")
    assert plan_of(tree_dir, state).packages["zlib"].reasons == ["patches/files changed"]


def test_new_checksum_is_reported_as_sources(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    path = tree_dir / "base" / "mksh" / "recipe.yaml"
    path.write_text(recipe_text("mksh", ["musl"], data=TARBALL2))
    assert sha256_of(TARBALL2) in path.read_text()
    plan = plan_of(tree_dir, state)
    assert plan.packages["mksh"].reasons == ["recipe changed", "sources changed"]
    assert outdated(plan) == {"mksh"}


def test_toolchain_change_outdates_everything(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    plan = plan_of(tree_dir, state, toolchain="tc-2")
    assert outdated(plan) == ALL
    assert plan.packages["musl"].reasons == ["toolchain changed"]
    assert plan.packages["zlib"].reasons == ["toolchain changed", "dependency musl changed"]


def test_new_dependency_is_named(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    path = tree_dir / "base" / "mksh" / "recipe.yaml"
    path.write_text(recipe_text("mksh", ["musl"], ["pkgconf"]))
    assert plan_of(tree_dir, state).packages["mksh"].reasons == [
        "recipe changed", "new dependency pkgconf"]


def test_failed_build_is_reported_with_its_log(tree_dir: Path, state: StateStore) -> None:
    plan = plan_of(tree_dir, state)
    mark_all_built(plan, state)
    state.write(plan.packages["curl"].new_record("failed", duration=0, log="/b/logs/curl.log"))
    again = plan_of(tree_dir, state)
    assert again.packages["curl"].status is Status.FAILED
    assert again.packages["curl"].describe() == "failed (last build failed, log /b/logs/curl.log)"
    assert outdated(again) == {"curl"}


def test_missing_artifact_makes_a_package_outdated(tree_dir: Path, state: StateStore,
                                                   tmp_path: Path) -> None:
    artifact = tmp_path / "mksh-1.0-r1.x86_64.tar.zst"
    artifact.write_bytes(b"x")
    mark_all_built(plan_of(tree_dir, state), state, {"mksh": [str(artifact)]})
    assert outdated(plan_of(tree_dir, state)) == set()
    artifact.unlink()
    plan = plan_of(tree_dir, state)
    assert outdated(plan) == {"mksh"}
    assert plan.packages["mksh"].reasons == [f"artifact missing: {artifact}"]


def test_force_rebuilds_one_package_only(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    plan = plan_of(tree_dir, state, force=["zlib"])
    assert outdated(plan) == {"zlib"}
    assert plan.packages["zlib"].status is Status.FORCED


def test_force_of_a_package_outside_the_build_is_a_usage_error(
    tree_dir: Path, state: StateStore
) -> None:
    with pytest.raises(UsageError, match="cannot force mksh"):
        plan_of(tree_dir, state, names=["zlib"], force=["mksh"])


def test_corrupt_record_means_rebuild_not_crash(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    (state.dir / "mksh.json").write_text("{not json")
    assert plan_of(tree_dir, state).packages["mksh"].status is Status.NEVER_BUILT


def test_signatures_are_deterministic_across_processes(tree_dir: Path, state: StateStore) -> None:
    # A fresh interpreter has a different hash seed and dict history.
    code = (
        "import json, sys; from pathlib import Path\n"
        "from iglubuild.plan import make_plan, StateStore\n"
        "from tests.plan_fixtures import load\n"
        "t, g = load(Path(sys.argv[1]))\n"
        "p = make_plan(t, g, 'tc-1', StateStore(Path(sys.argv[2])))\n"
        "print(json.dumps({n: x.signature for n, x in p.packages.items()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tree_dir), str(state.dir.parent)],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}).stdout
    here = {n: x.signature for n, x in plan_of(tree_dir, state).packages.items()}
    assert json.loads(out) == here
    assert len(set(here.values())) == len(here)


def test_waves_and_critical_path_cover_only_what_is_built(tree_dir: Path,
                                                         state: StateStore) -> None:
    plan = plan_of(tree_dir, state)
    assert plan.waves() == [["musl"], ["mksh", "pkgconf", "zlib"], ["openssl"], ["curl"], ["app"]]
    path, seconds = plan.critical_path()
    assert path == ["musl", "zlib", "openssl", "curl", "app"] and seconds == 5.0
    mark_all_built(plan, state)
    (tree_dir / "base" / "zlib" / "fix.patch").write_text("changed\n")
    later = plan_of(tree_dir, state)
    assert later.waves() == [["zlib"], ["openssl"], ["curl"], ["app"]]
    # Estimates now come from the recorded durations (2 s each).
    assert later.critical_path() == (["zlib", "openssl", "curl", "app"], 8.0)


def test_record_is_written_atomically(tree_dir: Path, state: StateStore) -> None:
    plan = plan_of(tree_dir, state)
    mark_all_built(plan, state)
    leftovers = [p.name for p in state.dir.iterdir() if not p.name.endswith(".json")]
    assert leftovers == []
    data = json.loads((state.dir / "curl.json").read_text())
    assert data["signature"] == plan.packages["curl"].signature
    assert data["inputs"]["deps"] == {d: plan.packages[d].signature
                                      for d in ["openssl", "pkgconf", "zlib"]}


def test_forcing_a_subpackage_forces_its_recipe(tree_dir: Path, state: StateStore) -> None:
    mark_all_built(plan_of(tree_dir, state), state)
    assert outdated(plan_of(tree_dir, state, force=["curl-dev"])) == {"curl"}


# Random trees: whichever recipe changes, exactly it and its dependents are outdated.
@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    count = draw(st.integers(min_value=1, max_value=12))
    names = [f"n{i}" for i in range(count)]
    return {name: sorted(draw(st.sets(st.sampled_from(names[:i]), max_size=3))) if i else []
            for i, name in enumerate(names)}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag=dags(), data=st.data())
def test_random_dag_change_reaches_exactly_the_reverse_deps(
    tmp_path_factory: pytest.TempPathFactory, dag: dict[str, list[str]], data: st.DataObject
) -> None:
    base = tmp_path_factory.mktemp("dag")
    root = base / "recipes"
    for name, deps in dag.items():
        folder = root / "base" / name
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: '1'\ndeps: [{', '.join(deps)}]\n")
    state = StateStore(base / "build")
    mark_all_built(plan_of(root, state), state)
    changed = data.draw(st.sampled_from(sorted(dag)))
    path = root / "base" / changed / "recipe.yaml"
    path.write_text(path.read_text().replace("version: '1'", "version: '2'"))
    expected = {changed}
    for name in dag:  # dag is in topological order: deps come first
        if expected & set(dag[name]):
            expected.add(name)
    assert outdated(plan_of(root, state)) == expected


def test_artifact_lookup_for_a_package_and_its_subpackage(tree_dir: Path, state: StateStore,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "packages"
    out.mkdir()
    main, dev = out / "curl-1.0-r1.x86_64.tar.zst", out / "curl-dev-1.0-r1.x86_64.tar.zst"
    main.write_bytes(b"m")
    dev.write_bytes(b"d")
    mark_all_built(plan_of(tree_dir, state), state, {"curl": [str(main), str(dev)]})
    assert state.artifact("curl", "curl") == main
    assert state.artifact("curl-dev", "curl") == dev
    assert state.artifact("curl-doc", "curl") is None
    dev.unlink()
    assert state.artifact("curl-dev", "curl") is None
    assert state.artifact("zlib", "zlib") is None  # built, but recorded no artifact

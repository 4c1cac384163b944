"""Farm code paths that need no Docker engine: bad input, no engine, env for builds."""

from __future__ import annotations

from iglubuild import farm
from iglubuild.cli import main


def test_no_engine_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    code = main(["--build-dir", str(tmp_path), "farm", "status"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach the Docker engine")
    assert "Traceback" not in err


def test_discover_without_engine_is_none(tmp_path, monkeypatch, caplog):
    from iglubuild.settings import Settings

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    assert farm.discover(Settings(build_dir=tmp_path)) is None
    assert "building locally" in caplog.text


def test_bad_allow_network_is_usage_error(capsys):
    assert main(["farm", "up", "--replicas", "1", "--allow", "10.0.0.300/8"]) == 2
    assert "not an address or CIDR" in capsys.readouterr().err


def test_farm_without_action_is_usage_error(capsys):
    assert main(["farm"]) == 2
    assert "hint: iglubuild farm up|status|down" in capsys.readouterr().err


def test_build_env_names_every_volunteer():
    vols = [farm.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=4),
            farm.Volunteer("t2", 2, "n2", "10.0.0.2", 3634, "running", slots=2)]
    hosts = farm.FarmHosts(volunteers=vols, jobs=7, local_identity="x")
    env = farm.build_env(hosts, cc="clang --target=x86_64-linux-musl")
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/4 10.0.0.2:3634/2"
    assert env["CC"] == "distcc clang --target=x86_64-linux-musl"
    assert env["MAKEFLAGS"] == "-j7"


def test_node_address_falls_back_to_manager_address():
    node = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "192.168.1.5:2377"}}
    assert farm._node_address(node) == "192.168.1.5"
    assert farm._node_address({"Status": {"Addr": "10.1.2.3"}}) == "10.1.2.3"


def test_local_identity_is_stable_and_names_clang():
    a = farm.local_identity()
    assert a == farm.local_identity()
    assert a[1] and "clang version" in a[1]
    assert len(a[0]) == 16


def test_image_from_missing_tarball_is_a_usage_error(tmp_path, capsys):
    import argparse

    from iglubuild.errors import UsageError
    from iglubuild.settings import Settings
    from iglubuild.toolchain_image import add_image_arguments, image_action

    parser = argparse.ArgumentParser()
    add_image_arguments(parser)
    args = parser.parse_args(["--from", str(tmp_path / "nope.tar")])
    try:
        image_action(Settings(build_dir=tmp_path), args)
    except UsageError as exc:
        assert "no such build root tarball" in exc.message
        assert exc.hint and "toolchain export" in exc.hint
    else:
        raise AssertionError("no error")


def test_build_env_can_keep_local_slots(tmp_path):
    vols = [farm.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=2)]
    hosts = farm.FarmHosts(volunteers=vols, jobs=3, local_identity="x")
    env = farm.build_env(hosts, distcc_dir=tmp_path / "d" / "distcc", local_slots=1)
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/2 localhost/1"
    assert env["JOBS"] == "4"
    assert (tmp_path / "d" / "distcc").is_dir()


def test_join_without_token_is_usage_error(capsys):
    code = main(["farm", "up", "--join", "127.0.0.1:2377"])
    assert code == 2
    assert "join token" in capsys.readouterr().err


def test_phase_additions_for_the_build_engine(tmp_path):
    vols = [farm.Volunteer("t1", 1, "n1", "10.0.0.1", 3632, "running", slots=2)]
    hosts = farm.FarmHosts(volunteers=vols, jobs=3, local_identity="x")
    launcher, env = farm.phase_additions(hosts, distcc_dir=tmp_path / "distcc")
    assert launcher == ("distcc",)
    assert env["DISTCC_HOSTS"] == "10.0.0.1:3632/2"
    assert env["DISTCC_DIR"] == str(tmp_path / "distcc")
    # The engine's wrappers own CC/CXX and its jobserver owns MAKEFLAGS.
    assert not {"CC", "CXX", "MAKEFLAGS", "JOBS"} & set(env)

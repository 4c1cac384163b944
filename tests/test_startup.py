"""Start-up cost of the CLI: `--version` and `--help` load no heavy library.

Every verb module is imported at start-up (that is how verbs are found), so a
verb that imports its stage at module level makes every command slower. This
checks the rule in a fresh interpreter; the timings are in bench/recipes_lint.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("pydantic", "networkx", "httpx", "docker", "ruamel", "tqdm", "zstandard")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["graph", "--help"]])
def test_version_and_help_load_no_heavy_library(argv: list[str]) -> None:
    code = ("import sys\nfrom iglubuild.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert "usage:" in proc.stdout or "iglubuild" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "[]"


def test_verbs_spell_out_the_stage_constants_they_offer() -> None:
    """The verbs copy a few choices so the parser needs no stage; they must not drift."""
    from iglubuild import boot, farm, image, plan
    from iglubuild.commands import boot as boot_verb
    from iglubuild.commands import farm as farm_verb
    from iglubuild.commands import image as image_verb
    from iglubuild.commands import status as status_verb

    assert boot_verb.FIRMWARES == boot.FIRMWARES and boot_verb.ACCELS == boot.ACCELS
    assert image_verb.DEFAULT_IMAGE_SET == image.DEFAULT_IMAGE_SET
    assert (farm_verb.DEFAULT_BASE_PORT, farm_verb.DEFAULT_SWARM_PORT) == (
        farm.DEFAULT_BASE_PORT, farm.DEFAULT_SWARM_PORT)
    assert set(status_verb.LABELS) == {s.value for s in plan.Status}
    assert all(status_verb.LABELS[s] for s in plan.Status)  # enum members find the keys


def test_start_up_loads_no_stage_module() -> None:
    """Building the parser (every command does) loads settings and errors, not stages."""
    stages = ("iglubuild.recipe", "iglubuild.graph", "iglubuild.build", "iglubuild.image",
              "iglubuild.boot", "iglubuild.package", "iglubuild.fetch", "iglubuild.plan",
              "iglubuild.executors.chroot", "iglubuild.toolchain_root", "iglubuild.farm",
              "iglubuild.distcc", "iglubuild.session", "iglubuild.scheduler")
    code = ("import sys\nfrom iglubuild.cli import build_parser\nbuild_parser()\n"
            f"print(sorted(set(sys.modules) & {set(stages)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert proc.stdout.splitlines()[-1] == "[]"

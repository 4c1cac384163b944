"""Run `iglubuild.session.run_build` with SleepBuilder as a separate process.

Exits like the CLI (130 on KeyboardInterrupt, the error's code on IglubuildError).

    python -m tests.drivers.run_build RECIPES BUILD_DIR DURATIONS_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from iglubuild.errors import EXIT_INTERRUPTED, IglubuildError
from iglubuild.session import BuildContext, Builder, run_build
from iglubuild.settings import Settings
from tests.plan_fixtures import load
from tests.sleep_builder import SleepBuilder


def main(argv: list[str]) -> int:
    recipes, build_dir = Path(argv[0]), Path(argv[1])
    durations = json.loads(argv[2])
    settings = Settings(recipes=recipes, build_dir=build_dir, jobs=2)

    def make_builder(ctx: BuildContext) -> Builder:
        sb = SleepBuilder(build_dir / "out", durations, default=0.1,
                          jobserver_env=ctx.jobserver.env(), pass_fds=ctx.jobserver.pass_fds,
                          on_phase=ctx.on_phase)
        return Builder(sb.build_one, [sb.terminate])

    try:
        tree, graph = load(recipes)
        return run_build(settings, tree, graph, "tc-1", make_builder)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except IglubuildError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

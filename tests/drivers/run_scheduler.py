"""Run the scheduler over a recipe tree with SleepBuilder, as a separate process.

Used by the tests that need a real process: Ctrl-C (SIGINT) and the build-dir
lock. Exits like the CLI: 0 done, 1 a build failed, 130 interrupted, 2 lock held.
Prints the summary as JSON on stdout.

    python -m tests.drivers.run_scheduler RECIPES BUILD_DIR DURATIONS_JSON [JOBS]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from iglubuild.errors import EXIT_INTERRUPTED, IglubuildError
from iglubuild.lock import BuildDirLock
from iglubuild.plan import StateStore, make_plan
from iglubuild.scheduler import run_plan
from tests.plan_fixtures import load
from tests.sleep_builder import SleepBuilder


def main(argv: list[str]) -> int:
    recipes, build_dir = Path(argv[0]), Path(argv[1])
    durations = json.loads(argv[2])
    jobs = int(argv[3]) if len(argv) > 3 else 2
    try:
        with BuildDirLock(build_dir):
            print(f"locked {os.getpid()}", file=sys.stderr, flush=True)
            tree, graph = load(recipes)
            state = StateStore(build_dir)
            plan = make_plan(tree, graph, "tc-1", state)
            builder = SleepBuilder(build_dir / "out", durations, default=0.1)
            summary = run_plan(plan, builder.build_one, jobs=jobs, state=state,
                               terminators=[builder.terminate])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except IglubuildError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"built": summary.built, "skipped": summary.skipped,
                      "failed": list(summary.failed)}))
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

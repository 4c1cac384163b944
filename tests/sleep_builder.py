"""A stand-in builder for scheduler tests and benchmarks: each build is a real `sleep`.

It behaves the way the real builder must toward the scheduler: every phase is
a real subprocess in its own session, the artifact is written to a temporary
name and renamed only when the build succeeded, `terminate()` stops every
running phase, and a failure raises BuildError carrying `log`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from iglubuild.errors import BuildError


class SleepBuilder:
    def __init__(self, out_dir: Path, durations: Mapping[str, float] | None = None,
                 fail: set[str] | frozenset[str] = frozenset(), default: float = 0.2,
                 jobserver_env: Mapping[str, str] | None = None,
                 pass_fds: tuple[int, ...] = (),
                 on_phase: Callable[[str, str], None] | None = None) -> None:
        self.out_dir = out_dir
        self.logs = out_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.durations = dict(durations or {})
        self.fail = set(fail)
        self.default = default
        self.env = {"PATH": "/usr/bin:/bin", **(jobserver_env or {})}
        self.pass_fds = pass_fds
        self.on_phase = on_phase
        self.times: dict[str, tuple[float, float]] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def artifact(self, name: str) -> Path:
        return self.out_dir / f"{name}.pkg"

    def build_one(self, name: str) -> list[str]:
        start = time.monotonic()
        seconds = self.durations.get(name, self.default)
        tmp = self.out_dir / f".{name}.pkg.tmp"
        log = self.logs / f"{name}.log"
        status = 1 if name in self.fail else 0
        script = (f'echo "building {name}"; printf partial > "{tmp}"; sleep {seconds}; '
                  f'printf "{name}\\n" > "{tmp}"; exit {status}')
        if self.on_phase:
            self.on_phase(name, "build")
        with open(log, "wb") as fh:
            with self._lock:
                if self._stopping:
                    raise BuildError(f"{name}: interrupted")
                proc = subprocess.Popen(["sh", "-c", script], stdout=fh, stderr=fh,
                                        stdin=subprocess.DEVNULL, env=self.env,
                                        start_new_session=True, pass_fds=self.pass_fds)
                self._procs[name] = proc
            code = proc.wait()
        with self._lock:
            self._procs.pop(name, None)
        self.times[name] = (start, time.monotonic())
        if code != 0:
            tmp.unlink(missing_ok=True)
            err = BuildError(f"{name}: build failed (exit {code})", hint=f"see {log}")
            err.log = log  # type: ignore[attr-defined]
            raise err
        os.replace(tmp, self.artifact(name))
        return [str(self.artifact(name))]

    def terminate(self) -> None:
        with self._lock:
            self._stopping = True
            for proc in self._procs.values():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

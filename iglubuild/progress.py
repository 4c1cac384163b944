"""Progress of a build run: a line per running package with its phase, and an overall bar.

On a terminal (tqdm): one overall bar, and below it one line per running
package, `curl: build 0:42`. When stderr is not a terminal (CI logs, pipes):
plain lines, one per event, nothing rewritten.

The builder reports phase changes through a callback; the CLI passes
`progress.phase` to it, so the builder only ever sees
`Callable[[str, str], None]` (package name, phase name). Every method is
thread-safe: builds run in worker threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Protocol

from tqdm import tqdm


class Progress(Protocol):
    def start(self, name: str) -> None: ...

    def phase(self, name: str, phase: str) -> None: ...

    def finish(self, name: str, outcome: str, seconds: float) -> None: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing (library use, tests)."""

    def start(self, name: str) -> None:
        pass

    def phase(self, name: str, phase: str) -> None:
        pass

    def finish(self, name: str, outcome: str, seconds: float) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """One plain line per event, for logs and pipes."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self._lock = threading.Lock()
        self._width = len(str(total))

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def start(self, name: str) -> None:
        self._print(f"[{self.done:>{self._width}}/{self.total}] {name}: started")

    def phase(self, name: str, phase: str) -> None:
        self._print(f"[{self.done:>{self._width}}/{self.total}] {name}: {phase}")

    def finish(self, name: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.done += 1
            print(f"[{self.done:>{self._width}}/{self.total}] {name}: {outcome} "
                  f"({seconds:.1f} s)", file=self.stream, flush=True)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class TqdmProgress:
    """An overall bar plus one status line per running package (a terminal)."""

    def __init__(self, total: int, slots: int, stream: IO[str]) -> None:
        self._lock = threading.Lock()
        self.stream = stream
        self.overall = tqdm(total=total, desc="packages", unit="pkg", position=0,
                            file=stream, dynamic_ncols=True, leave=True)
        self._lines = [
            tqdm(total=0, bar_format="{desc}", position=i + 1, file=stream, leave=False)
            for i in range(slots)
        ]
        self._slot: dict[str, int] = {}
        self._phase: dict[str, tuple[str, float]] = {}

    def _render(self, name: str) -> None:
        phase, since = self._phase[name]
        elapsed = int(time.monotonic() - since)
        self._lines[self._slot[name]].set_description_str(
            f"  {name}: {phase} {elapsed // 60}:{elapsed % 60:02d}")

    def start(self, name: str) -> None:
        with self._lock:
            used = set(self._slot.values())
            free = next((i for i in range(len(self._lines)) if i not in used), None)
            if free is None:  # more builds than slots: show them on the bar only
                return
            self._slot[name] = free
            self._phase[name] = ("starting", time.monotonic())
            self._render(name)

    def phase(self, name: str, phase: str) -> None:
        with self._lock:
            if name in self._slot:
                self._phase[name] = (phase, self._phase[name][1])
                self._render(name)

    def finish(self, name: str, outcome: str, seconds: float) -> None:
        with self._lock:
            slot = self._slot.pop(name, None)
            self._phase.pop(name, None)
            if slot is not None:
                self._lines[slot].set_description_str("")
            if outcome != "built":
                self.overall.write(f"{name}: {outcome}", file=self.stream)
            self.overall.update(1)

    def tick(self) -> None:
        with self._lock:
            for name in self._slot:
                self._render(name)

    def close(self) -> None:
        with self._lock:
            for line in self._lines:
                line.close()
            self.overall.close()


def make_progress(total: int, slots: int, stream: IO[str] | None = None) -> Progress:
    """tqdm bars on a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return TqdmProgress(total, slots, stream)
    return LineProgress(total, stream)


class TeeProgress:
    """Tells several listeners the same events (the display and the run's recorder)."""

    def __init__(self, *listeners: Progress) -> None:
        self.listeners = listeners

    def start(self, name: str) -> None:
        for listener in self.listeners:
            listener.start(name)

    def phase(self, name: str, phase: str) -> None:
        for listener in self.listeners:
            listener.phase(name, phase)

    def finish(self, name: str, outcome: str, seconds: float) -> None:
        for listener in self.listeners:
            listener.finish(name, outcome, seconds)

    def tick(self) -> None:
        for listener in self.listeners:
            listener.tick()

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

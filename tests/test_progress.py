"""Progress output: plain lines for pipes, tqdm bars on a real terminal (a pty)."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios

from iglubuild.progress import LineProgress, TqdmProgress, make_progress


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = make_progress(total=2, slots=2, stream=stream)
    assert isinstance(progress, LineProgress)
    progress.start("zlib")
    progress.phase("zlib", "build")
    progress.finish("zlib", "built", 1.25)
    progress.start("curl")
    progress.finish("curl", "FAILED, log /b/logs/curl.log", 0.5)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "[0/2] zlib: started",
        "[0/2] zlib: build",
        "[1/2] zlib: built (1.2 s)",
        "[1/2] curl: started",
        "[2/2] curl: FAILED, log /b/logs/curl.log (0.5 s)",
    ]


def _drain(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal() -> None:
    master, slave = os.openpty()
    # A terminal 80 columns wide, as an xterm would report.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        progress = make_progress(total=3, slots=2, stream=stream)
        assert isinstance(progress, TqdmProgress)
        progress.start("zlib")
        progress.phase("zlib", "configure")
        progress.start("mksh")
        progress.phase("mksh", "build")
        screen = _drain(master)
        assert "zlib: configure 0:00" in screen
        assert "mksh: build 0:00" in screen
        assert "packages:   0%" in screen
        progress.finish("zlib", "built", 1.0)
        progress.finish("mksh", "FAILED, log /b/logs/mksh.log", 1.0)
        screen = _drain(master)
        assert "mksh: FAILED, log /b/logs/mksh.log" in screen
        progress.close()  # tqdm rate-limits redraws; closing draws the final state
        assert "2/3" in screen + _drain(master)
    finally:
        stream.close()
        os.close(master)

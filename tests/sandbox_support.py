"""What the chroot and docker executor tests both use to probe a sandbox.

- `run_to_log`: run one phase, return its status and log text.
- `RecordingServer`: a real TCP server on the host's 127.0.0.1, to show that
  a phase without network cannot reach it.
- `check_escapes`: the escapes a hostile recipe tries, each refused.
- `check_make_shares_the_runs_jobserver`: three 1-second make jobs show
  whether make inside a sandbox joins the run's jobserver (with no free token
  it runs them one after another, with two free tokens all three at once).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from iglubuild.executor import Executor, PhaseJob
from iglubuild.run import base_env


def run_to_log(ex: Executor, job: PhaseJob, tmp_path: Path) -> tuple[int, str]:
    """Run `job` with `ex`; its exit status and the text of its log."""
    log = tmp_path / "phase.log"
    with open(log, "wb") as fh:
        rc = ex.run_phase(job, fh)
    return rc, log.read_text(errors="replace")


class RecordingServer:
    """A real TCP server on the host's 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()

_MAKEFILE = """\
all: a b c
a b c:
\t@date +%s.%N > $@.start; sleep 1; date +%s.%N > $@.end
"""


def _overlap(work: Path) -> float:
    """Seconds the three jobs ran at the same time as another (0 when serial)."""
    spans = [(float((work / f"{t}.start").read_text()), float((work / f"{t}.end").read_text()))
             for t in "abc"]
    return sum(max(0.0, min(e1, e2) - max(s1, s2))
               for i, (s1, e1) in enumerate(spans) for (s2, e2) in spans[i + 1:])


def check_make_shares_the_runs_jobserver(ex: Executor, tmp_path: Path) -> None:
    """make in a phase of `ex` takes the run's jobserver tokens, no more, no fewer.

    The executor gets the jobserver's descriptors as the build engine gives
    them (`pass_fds`) and the phase its MAKEFLAGS.
    """
    from iglubuild.jobserver import Jobserver

    work = tmp_path / "work"
    work.mkdir()
    (work / "Makefile").write_text(_MAKEFILE)
    with Jobserver(3) as js:
        ex.pass_fds = js.pass_fds  # type: ignore[attr-defined]
        try:
            job = PhaseJob("t", "build", "make", work, base_env(js.env()), writable=(work,))
            # The host holds every token: make in the sandbox has only its
            # implicit slot and runs the three jobs one after another.
            for _ in range(3):
                assert js.acquire(timeout=1)
            rc, out = run_to_log(ex, job, tmp_path)
            assert rc == 0, out
            assert "jobserver unavailable" not in out
            assert _overlap(work) < 0.2
            # Two tokens back: all three run at once, and make gives them back.
            js.release()
            js.release()
            rc, out = run_to_log(ex, job, tmp_path)
            assert rc == 0, out
            assert _overlap(work) > 1.5
            assert js.available() == 2
        finally:
            ex.pass_fds = ()  # type: ignore[attr-defined]


# The escapes a hostile recipe tries (issue 16, case 1), each a phase script
# and the words its refusal must contain. HOST is a host path outside every
# folder the sandbox mounts: an escape would create it.
ESCAPES = {
    "double chroot": (
        "perl -e 'mkdir \"/tmp/esc\"; chroot \"/tmp/esc\" or die \"chroot: $!\\n\";"
        " chdir \"..\" for 1..64; chroot \".\" or die \"chroot: $!\\n\";"
        " system(\"touch HOST\")'", ("not permitted",)),
    "block device": ("mknod /tmp/sda b 8 0", ("not permitted",)),
    "mount": ("mount -t tmpfs none /mnt", ("denied", "not permitted")),
    "proc sys": ("echo 1 > /proc/sys/vm/drop_caches", ("Read-only", "denied")),
    "unshare": ("unshare --user --map-root-user --mount true", ("not permitted",)),
}
# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID: all a phase keeps.
PHASE_CAPS = 0x1B


def check_escapes(ex: Executor, work: Path, host: Path,
                  make_job: Callable[[Path, str], PhaseJob]) -> None:
    """Every escape in ESCAPES is refused with its words; `host` never appears."""
    for name, (script, words) in ESCAPES.items():
        job = make_job(work, script.replace("HOST", str(host)))
        rc, log = run_to_log(ex, job, work)
        assert rc != 0, f"{name}: the attack succeeded:\n{log}"
        assert any(w in log for w in words), f"{name}: unexpected refusal:\n{log}"
        assert not host.exists(), f"{name}: wrote on the host"
    rc, log = run_to_log(ex, make_job(work, "grep -E '^Cap(Eff|Bnd)' /proc/self/status; "
                                            "grep NoNewPrivs /proc/self/status"), work)
    assert rc == 0, log
    caps = {line.split(":")[0]: int(line.split()[1], 16)
            for line in log.splitlines() if line.startswith("Cap")}
    assert caps == {"CapEff": PHASE_CAPS, "CapBnd": PHASE_CAPS}, log
    assert "NoNewPrivs:\t1" in log, log



"""A Makefile whose three 1-second jobs show whether make ran them in parallel.

Used to check that make inside a sandbox (chroot, container) joins the run's
jobserver: with no free token it runs the jobs one after another, with two
free tokens all three at once.
"""

from __future__ import annotations

from pathlib import Path

MAKEFILE = """\
all: a b c
a b c:
\t@date +%s.%N > $@.start; sleep 1; date +%s.%N > $@.end
"""


def overlap(work: Path) -> float:
    """Seconds the three jobs ran at the same time as another (0 when serial)."""
    spans = [(float((work / f"{t}.start").read_text()), float((work / f"{t}.end").read_text()))
             for t in "abc"]
    return sum(max(0.0, min(e1, e2) - max(s1, s2))
               for i, (s1, e1) in enumerate(spans) for (s2, e2) in spans[i + 1:])

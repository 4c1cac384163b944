"""Executors: where build phases run (host, chroot, docker), behind iglubuild.executor.

`make_executor` is the one place that maps `--executor NAME` to an object;
everything after it only sees the `Executor` protocol.
"""

from __future__ import annotations

from iglubuild.errors import UsageError
from iglubuild.executor import Executor
from iglubuild.settings import Settings


def make_executor(settings: Settings) -> Executor:
    """The executor named by settings.executor."""
    if settings.executor == "host":
        from iglubuild.executors.host import HostExecutor

        return HostExecutor()
    if settings.executor == "chroot":
        try:
            from iglubuild.chroot import make_chroot_executor
        except ImportError as exc:  # pragma: no cover - only while the module is missing
            raise UsageError("the chroot executor is not available in this build",
                             hint="use --executor host") from exc
        return make_chroot_executor(settings)
    if settings.executor == "docker":
        from iglubuild.executors.docker import make_docker_executor

        return make_docker_executor(settings)
    raise UsageError(f"unknown executor {settings.executor!r}",
                     hint="use --executor host, chroot or docker")

"""The docker executor: each phase in a fresh container of the toolchain image.

The toolchain image is the build root imported into Docker by
`iglubuild toolchain image` and tagged ``iglubuild-toolchain:<toolchain id>``
(iglubuild.toolchain_image), so a phase sees the very system the chroot
executor chroots into, and both report the same toolchain id: a package
built with either has the same input signature.

Each phase is one container, made and removed through the Engine API (the
docker Python SDK; the docker CLI is never run):

- paths are identical inside and out: the work folder (writable), the
  sysroot (read-only) and the phase's cwd are bind-mounted at their host
  paths, so the engine must run on this machine (DOCKER_HOST may name another
  socket, not another host);
- the command is ``/bin/sh -e -c SCRIPT`` (stderr joined to stdout, so the
  log keeps the order of lines) under Docker's init (tini), which reaps
  orphans and passes SIGTERM on; the environment is exactly the job's
  (variables Docker adds itself, HOSTNAME and HOME, are removed again);
- builds have no network: network mode ``none`` (only a loopback); a phase
  that sends compiles to the distcc farm joins the farm's network
  (iglubuild.farmnet), which reaches the volunteers' distcc ports and nothing
  else. Docker cannot join a namespace given by path, so the farm's namespace
  is that of a *holder* container (`netns_holder`: network mode ``none``,
  only sleeping), set up by iglubuild from outside, and such phases use
  network mode ``container:<holder>``. Never a bridge or overlay network
  (``host`` only when a test asks for `PhaseJob.network`);
- the container runs as root (uid 0), like the chroot executor: files the
  phase writes in the bind mounts belong to root, as iglubuild runs as root;
  the container's own writable layer is thrown away with it, so a phase can
  never change the image;
- output is streamed into the log as it comes; containers carry labels
  (package, phase, owner) and are removed after the phase; `terminate()` stops
  every container this executor started, and containers left behind by an
  iglubuild that was killed outright are removed by the next one.

Descriptors do not cross into a container, so the run's make jobserver is
reached by path: it is a named FIFO (iglubuild.jobserver), bind-mounted into
the container and opened again at the descriptor numbers MAKEFLAGS names, so
make in a phase shares the run's tokens as on the host. What a container
cannot tell: a phase killed by a signal N shows as exit status 128+N (Docker
reports no more), except when this executor sent the signal itself.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from iglubuild.errors import BuildError, ToolMissingError
from iglubuild.executor import Mount, MountKind, PhaseJob, UsageSink

# The same host name as the chroot executor. (With host networking Docker keeps
# the machine's UTS namespace, so the container's hostname is set explicitly.)
from iglubuild.executors import HOSTNAME, TERM_GRACE_SECONDS, check_phase_folders
from iglubuild.settings import Settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger("iglubuild.executors.docker")

# The only capabilities a phase keeps (the chroot executor's KEPT_CAPS).
PHASE_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID")

SHELL = "/bin/sh"
BASH = "/bin/bash"
ENV_TOOL = "/usr/bin/env"
# Variables the engine puts into every container's environment on its own.
_ENGINE_ADDED = ("HOSTNAME", "HOME")

LABEL_EXECUTOR = "iglubuild.executor"
LABEL_PACKAGE = "iglubuild.package"
LABEL_PHASE = "iglubuild.phase"
LABEL_OWNER = "iglubuild.owner"  # "<host name>:<pid>" of the iglubuild that made it
# The package and phase labels of the farm network's holder container.
HOLDER_LABEL = "farm-network"


def image_ref(toolchain_id: str) -> str:
    """The toolchain image `iglubuild toolchain image` makes for this toolchain id."""
    from iglubuild.docker_engine import IMAGE_REPOSITORY

    return f"{IMAGE_REPOSITORY}:{toolchain_id}"


def owner_label() -> str:
    """Who started a container: this host and process (a dead owner's containers are stale)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def docker_mounts(mounts: Iterable[Mount]) -> list[Any]:
    """Bind `Mount`s as Engine API mounts (tmpfs ones go in `tmpfs=`, which takes options)."""
    import docker.types

    out = []
    for m in mounts:
        if m.kind is MountKind.BIND and m.source is not None:
            out.append(docker.types.Mount(str(m.target), str(m.source), type="bind",
                                          read_only=m.readonly))
        else:
            raise BuildError(f"the docker executor cannot make the mount {m.describe()}",
                             hint="phases under docker get bind and tmpfs mounts only")
    return out


class DockerExecutor:
    """Runs phases in containers of the toolchain image, one container per phase."""

    name = "docker"

    def __init__(self, image: str, toolchain_id: str,
                 client: docker.DockerClient | None = None, debug: bool = False) -> None:
        self.image = image
        self._toolchain_id = toolchain_id
        self._client = client
        self.debug = debug
        self.owner = owner_label()
        self._lock = threading.Lock()
        self._running: dict[str, Any] = {}  # container id -> Container
        self._signalled: dict[str, int] = {}  # container id -> signal terminate() sent
        self._generation = 0  # bumped by terminate(): phases created before it do not start
        self._image_env: list[str] | None = None
        self._reaped = False
        # The run's make jobserver descriptors (set by the build engine, as for
        # the host executor). They cannot be inherited by a container, but the
        # jobserver is a named FIFO: each phase opens it again at these numbers.
        self.pass_fds: tuple[int, ...] = ()
        # Never called: a container's cgroup is gone by the time its phase ends.
        self.usage_sink: UsageSink | None = None

    @classmethod
    def from_settings(cls, settings: Settings, manifest: Path | None = None) -> DockerExecutor:
        """The executor for the build root matching the project's manifest.

        The toolchain id (and so the image tag) is the build root's, exactly
        as the chroot executor reports it. A machine without that build root
        (it loaded the image made elsewhere) uses the newest image labelled
        with the manifest's digest, and that image's toolchain id; with
        neither, a one-line error says how to make them.
        """
        from iglubuild import toolchain_root

        m = toolchain_root.load_manifest(toolchain_root.manifest_path(settings, manifest))
        root = toolchain_root.find_root(settings.build_dir, m)
        if root is not None:
            return cls(image_ref(root.id), root.id, debug=settings.debug)
        ex = cls("", "", debug=settings.debug)
        found = ex.image_for_manifest(m.digest)
        if found is None:
            raise BuildError(
                f"no build root for {m.path} in {toolchain_root.toolchain_dir(settings.build_dir)} "
                "and no toolchain image made from it in the Docker engine",
                hint="run `iglubuild toolchain build` then `iglubuild toolchain image` "
                     "(or `iglubuild toolchain image --load FILE` with an image made elsewhere)")
        ex.image, ex._toolchain_id = found
        return ex

    def image_for_manifest(self, digest: str) -> tuple[str, str] | None:
        """(reference, toolchain id) of the newest image made from the manifest `digest`."""
        from iglubuild.docker_engine import LABEL_TOOLCHAIN
        from iglubuild.toolchain_image import LABEL_MANIFEST

        try:
            images = self.client.images.list(filters={"label": f"{LABEL_MANIFEST}={digest}"})
        except _engine_errors() as exc:
            raise ToolMissingError(f"the docker executor cannot list images: {exc}",
                                   hint="check that dockerd runs and answers") from exc
        images = [i for i in images if i.labels.get(LABEL_TOOLCHAIN) and i.tags]
        if not images:
            return None
        newest = max(images, key=lambda i: i.attrs.get("Created", ""))
        tid = newest.labels[LABEL_TOOLCHAIN]
        ref = image_ref(tid) if image_ref(tid) in newest.tags else newest.tags[0]
        return ref, tid

    # ------------------------------------------------------------------ checks

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            from iglubuild.docker_engine import EngineError, docker_client

            try:
                self._client = docker_client()
            except EngineError as exc:
                raise ToolMissingError(
                    f"the docker executor {exc.message}",
                    hint="start dockerd (or set DOCKER_HOST to the engine's socket on this "
                         "machine), or use --executor host or chroot") from exc
        return self._client

    def check(self) -> None:
        """The engine must answer and hold the toolchain image; stale containers go."""
        import docker.errors

        client = self.client
        try:
            image = client.images.get(self.image)
        except docker.errors.ImageNotFound as exc:
            raise ToolMissingError(
                f"the docker executor needs the toolchain image {self.image}, which is not in "
                "the Docker engine",
                hint="run `iglubuild toolchain image` (or `iglubuild toolchain image --load "
                     "FILE` with an image saved elsewhere)") from exc
        except docker.errors.APIError as exc:
            raise ToolMissingError(f"the docker executor cannot look up {self.image}: "
                                   f"{exc.explanation or exc}",
                                   hint="check that dockerd runs and answers") from exc
        self._image_env = list(image.attrs.get("Config", {}).get("Env") or [])
        self._reap_stale()

    def toolchain_id(self) -> str:
        return self._toolchain_id

    # ------------------------------------------------------------------ the farm's network

    @contextmanager
    def netns_holder(self) -> Iterator[tuple[str, str]]:
        """A container that only holds a network namespace: (its path, the container id).

        The farm's network (iglubuild.farmnet.FarmNet) is set up inside it
        from outside (setns through /proc/<its pid>/ns/net), and phase
        containers share it with network mode ``container:<id>``. It has
        network mode ``none`` (only a loopback), no capabilities, and this
        executor's labels (so a killed iglubuild's holder is removed by the
        next run like a phase container); it is removed when the block ends.
        Phases sharing its network also get its host name, hence HOSTNAME.
        """
        if self._image_env is None:
            self.check()
        try:
            holder = self.client.containers.run(
                self.image, ["sleep", "infinity"], detach=True, init=True, user="0:0",
                network_mode="none", hostname=HOSTNAME, cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                labels={LABEL_EXECUTOR: self.name, LABEL_PACKAGE: HOLDER_LABEL,
                        LABEL_PHASE: HOLDER_LABEL, LABEL_OWNER: self.owner})
        except _engine_errors() as exc:
            raise BuildError(f"cannot start the farm network's container: {exc}",
                             hint="see the Docker engine's log") from exc
        try:
            holder.reload()
            pid = int(holder.attrs.get("State", {}).get("Pid") or 0)
            if pid <= 0:
                raise BuildError(f"the farm network's container {holder.short_id} is not running",
                                 hint="see the Docker engine's log")
            yield f"/proc/{pid}/ns/net", str(holder.id)
        finally:
            _remove(holder)

    # ------------------------------------------------------------------ phases

    def mounts_for(self, job: PhaseJob) -> list[Mount]:
        """The container's mounts as data (what --debug prints), shallowest first.

        Like the chroot executor: host folders at their own paths, the cwd
        writable if no writable folder holds it, a private tmpfs on /tmp.
        """
        check_phase_folders(job)
        writable = list(job.writable)
        if not any(job.cwd == w or w in job.cwd.parents for w in writable):
            writable.append(job.cwd)
        # Docker's tmpfs defaults to noexec; configure scripts run what they build in /tmp.
        mounts = [Mount(MountKind.TMPFS, Path("/tmp"), options=("mode=1777", "exec"))]
        mounts += [Mount(MountKind.BIND, p, source=p) for p in writable]
        mounts += [Mount(MountKind.BIND, p, source=p, readonly=True) for p in job.readonly]
        mounts += list(job.extra_mounts)
        fifo = self._jobserver_fifo()
        if fifo is not None:
            mounts.append(Mount(MountKind.BIND, fifo, source=fifo))
        return sorted(mounts, key=lambda m: len(m.target.parts))

    def _jobserver_fifo(self) -> Path | None:
        """The named FIFO all of `pass_fds` are open on, if they are (the run's jobserver)."""
        paths = set()
        for fd in self.pass_fds:
            try:
                paths.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                return None
        if len(paths) != 1:
            return None
        path = Path(paths.pop())
        try:
            return path if path.is_absolute() and stat.S_ISFIFO(path.stat().st_mode) else None
        except OSError:
            return None

    def _argv(self, job: PhaseJob) -> list[str]:
        """`env -u` what the engine added, then `sh -e -c SCRIPT` with stderr on stdout.

        The environment is then exactly job.env. Docker keeps stdout and
        stderr apart, and lines of the two would reach the log out of order;
        one pipe for both keeps them as the phase wrote them, as on the host.
        The same small shell opens the jobserver's FIFO at the descriptor
        numbers MAKEFLAGS names, so make in the container shares the run's
        tokens (dash takes single-digit descriptors only; bash, essential in
        Debian, any).
        """
        added = {line.split("=", 1)[0] for line in self._image_env or []}
        added.update(_ENGINE_ADDED)
        added.add("PWD")  # exported by the shell that joins the two streams
        unset = [arg for name in sorted(added - set(job.env)) for arg in ("-u", name)]
        shell, opens = SHELL, ""
        fifo = self._jobserver_fifo()
        if fifo is not None:
            opens = "".join(f" {fd}<>{shlex.quote(str(fifo))}" for fd in self.pass_fds)
            if any(fd > 9 for fd in self.pass_fds):
                shell = BASH
        return [shell, "-c", f'exec 2>&1{opens}; exec "$@"', "sh",
                ENV_TOOL, *unset, SHELL, "-e", "-c", job.script]

    def run_phase(self, job: PhaseJob, log_file: IO[bytes]) -> int:
        """Run one phase in a new container; its output goes to `log_file` as it comes."""
        import docker.errors

        if self._image_env is None:
            self.check()
        mounts = self.mounts_for(job)
        network: dict[str, str]
        if job.netns is not None:
            if job.netns.container is None:
                raise BuildError(f"{job.package} {job.phase}: the docker executor joins a "
                                 "network through a container, not a namespace path",
                                 hint="open the farm's network with iglubuild.farmnet."
                                      "farm_network(executor, ...)")
            # The holder's host name is HOSTNAME; Docker refuses a hostname here.
            network = {"network_mode": f"container:{job.netns.container}"}
        elif job.network:
            network = {"network_mode": "host"}
        else:
            network = {"network_mode": "none", "hostname": HOSTNAME}
        if self.debug:
            log.debug("container of %s %s (network %s):\n%s", job.package, job.phase,
                      network["network_mode"], "\n".join("  " + m.describe() for m in mounts))
        with self._lock:
            generation = self._generation
        try:
            container = self.client.containers.create(
                self.image,
                self._argv(job),
                environment=dict(job.env),
                working_dir=str(job.cwd),
                user="0:0",
                init=True,
                # Least privilege, as in the chroot executor (iglubuild/executors/
                # _nsinit.py): the ownership capabilities tools run as root count
                # on and nothing else; Docker's seccomp profile and read-only
                # /proc/sys stay in force.
                cap_drop=["ALL"],
                cap_add=list(PHASE_CAPABILITIES),
                security_opt=["no-new-privileges"],
                mounts=docker_mounts(m for m in mounts if m.kind is not MountKind.TMPFS),
                tmpfs={str(m.target): ",".join(m.options)
                       for m in mounts if m.kind is MountKind.TMPFS},
                labels={LABEL_EXECUTOR: self.name, LABEL_PACKAGE: job.package,
                        LABEL_PHASE: job.phase, LABEL_OWNER: self.owner},
                # The log is read back while the phase runs; json-file stores
                # it beside the container and goes away with it.
                log_config={"Type": "json-file", "Config": {}},
                stdin_open=False,
                tty=False,
                **network,
            )
        except docker.errors.DockerException as exc:
            raise BuildError(f"{job.package} {job.phase}: cannot create a container: "
                             f"{getattr(exc, 'explanation', None) or exc}",
                             hint="see the Docker engine's log") from exc
        with self._lock:
            self._running[container.id] = container
            cancelled = generation != self._generation
        try:
            if cancelled:
                return -signal.SIGTERM
            log_file.flush()
            container.start()
            with self._lock:
                # terminate() came while the container was being started and
                # found nothing running to signal: stop it here.
                late = generation != self._generation and container.id not in self._signalled
                if late:
                    self._signalled[container.id] = signal.SIGKILL
            if late:
                _kill(container, signal.SIGKILL)
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                log_file.write(chunk)
                log_file.flush()
            status = container.wait()
            code = int(status.get("StatusCode", -1))
            return self._exit_status(container, code)
        except _engine_errors() as exc:
            _kill(container, signal.SIGKILL)
            raise BuildError(f"{job.package} {job.phase}: the Docker engine failed: {exc}",
                             hint="see the Docker engine's log; the phase was stopped") from exc
        except BaseException:
            # An exception in this thread (an engine error, KeyboardInterrupt)
            # must not leave the phase running.
            _kill(container, signal.SIGKILL)
            raise
        finally:
            with self._lock:
                self._running.pop(container.id, None)
                self._signalled.pop(container.id, None)
            _remove(container)

    def _exit_status(self, container: Any, code: int) -> int:
        """The phase's exit status; a signal we sent (or the OOM killer's) as -N."""
        with self._lock:
            sent = self._signalled.get(container.id)
        if sent is not None and code == 128 + sent:
            return -sent
        if code == 128 + signal.SIGKILL:
            try:
                container.reload()
                if container.attrs.get("State", {}).get("OOMKilled"):
                    return -signal.SIGKILL
            except Exception:  # noqa: BLE001 - only a nicer message is at stake
                pass
        return code

    def terminate(self) -> None:
        """Stop every running phase: SIGTERM, then SIGKILL after a grace period.

        SIGTERM goes to the container's init, which passes it to the phase's
        shell; whatever else runs in the container dies with the init.
        """
        with self._lock:
            self._generation += 1
            containers = list(self._running.values())
            for c in containers:
                self._signalled[c.id] = signal.SIGTERM
        for c in containers:
            if not _kill(c, signal.SIGTERM):
                # Not started yet: the phase's own thread stops it once it is.
                with self._lock:
                    if self._signalled.get(c.id) == signal.SIGTERM:
                        del self._signalled[c.id]
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        for c in containers:
            while time.monotonic() < deadline and _is_running(c):
                time.sleep(0.05)
            if _is_running(c):
                with self._lock:
                    self._signalled[c.id] = signal.SIGKILL
                _kill(c, signal.SIGKILL)

    def _reap_stale(self) -> None:
        """Remove containers of this host's iglubuild processes that no longer exist.

        An iglubuild killed outright (kill -9, a crash) cannot stop its
        containers; the next one does, once per executor.
        """
        if self._reaped:
            return
        self._reaped = True
        host = socket.gethostname()
        try:
            ours = self.client.containers.list(
                all=True, filters={"label": f"{LABEL_EXECUTOR}={self.name}"})
        except _engine_errors() as exc:
            log.warning("could not list old containers: %s", exc)
            return
        for c in ours:
            owner_host, _, pid = c.labels.get(LABEL_OWNER, "").rpartition(":")
            if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                log.info("removing container %s left by iglubuild %s (%s %s)", c.short_id, pid,
                         c.labels.get(LABEL_PACKAGE), c.labels.get(LABEL_PHASE))
                _remove(c)


def _engine_errors() -> tuple[type[BaseException], ...]:
    """What talking to the engine may raise (the SDK's own, and requests'/urllib3's)."""
    import docker.errors
    import requests.exceptions
    import urllib3.exceptions

    return (docker.errors.DockerException, requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_running(container: Any) -> bool:
    try:
        container.reload()
    except Exception:  # noqa: BLE001 - gone is not running
        return False
    return bool(container.attrs.get("State", {}).get("Running"))


def _kill(container: Any, sig: int) -> bool:
    """Signal the container's init; False if it was not running (or is gone)."""
    try:
        container.kill(signal=int(sig))
    except Exception:  # noqa: BLE001 - not started, already stopped or removed
        return False
    return True


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except Exception as exc:  # noqa: BLE001 - a removal already under way, or gone
        if "No such container" not in str(exc) and "already in progress" not in str(exc):
            log.warning("could not remove container %s: %s", container.short_id, exc)


def make_docker_executor(settings: Settings) -> DockerExecutor:
    """`--executor docker`: containers of the toolchain image for the current build root."""
    return DockerExecutor.from_settings(settings)


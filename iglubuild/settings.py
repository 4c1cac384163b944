"""One table of global options, resolved once into a frozen Settings object.

Each option is declared once (name, environment variable, toml key, type,
default, help) and that declaration drives the command line, the environment
and `iglubuild.toml`. Precedence: command line > environment > file > default.
Nothing here is global state: the CLI builds a Settings and passes it down.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iglubuild.errors import UsageError
from iglubuild.executor import ExecutorName

EXECUTORS = tuple(ExecutorName)
CONFIG_FILE = "iglubuild.toml"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _executor(text: str) -> ExecutorName:
    if text not in EXECUTORS:
        raise ValueError(f"expected one of {', '.join(EXECUTORS)}")
    return ExecutorName(text)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True)
class Option:
    """One global option: where it comes from and how it is parsed."""

    name: str  # attribute name in Settings, and the toml key
    flag: str
    env: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None
    multiple: bool = False  # --mirror may repeat; env is space separated
    is_flag: bool = False  # store_true on the command line


OPTIONS: tuple[Option, ...] = (
    Option("recipes", "--recipes", "IGLUBUILD_RECIPES", Path, "the recipe tree (./recipes)", "DIR"),
    Option(
        "build_dir", "--build-dir", "IGLUBUILD_BUILD_DIR", Path,
        "work folders, logs, packages, image (./build)", "DIR",
    ),
    Option(
        "distfiles", "--distfiles", "IGLUBUILD_DISTFILES", Path,
        "the source cache, shareable between trees (<build-dir>/distfiles)", "DIR",
    ),
    Option(
        "mirrors", "--mirror", "IGLUBUILD_MIRRORS", str,
        "mirror tried before a source's own URL (repeatable)", "URL", multiple=True,
    ),
    Option("jobs", "--jobs", "IGLUBUILD_JOBS", _positive_int, "packages built at once", "N"),
    Option(
        "executor", "--executor", "IGLUBUILD_EXECUTOR", _executor,
        "where phases run: host, chroot or docker", "NAME",
    ),
    Option(
        "farm", "--farm", "IGLUBUILD_FARM", _bool,
        "send compiles to the distcc farm", is_flag=True,
    ),
    Option(
        "offline", "--offline", "IGLUBUILD_OFFLINE", _bool,
        "never download: use only the distfiles cache", is_flag=True,
    ),
)


@dataclass(frozen=True)
class Settings:
    """The resolved global options. Frozen: per-build state lives elsewhere."""

    recipes: Path = Path("recipes")
    build_dir: Path = Path("build")
    distfiles: Path | None = None
    mirrors: tuple[str, ...] = ()
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    executor: ExecutorName = ExecutorName.HOST
    farm: bool = False
    offline: bool = False
    debug: bool = False
    project_root: Path = Path(".")

    @property
    def distfiles_dir(self) -> Path:
        return self.distfiles if self.distfiles is not None else self.build_dir / "distfiles"

    @property
    def logs_dir(self) -> Path:
        return self.build_dir / "logs"

    @property
    def work_dir(self) -> Path:
        return self.build_dir / "work"

    def packages_dir(self, arch: str = "x86_64") -> Path:
        return self.build_dir / "packages" / arch

    @property
    def image_path(self) -> Path:
        return self.build_dir / "iglunix.img"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every global option on `parser` (defaults are resolved later)."""
    group = parser.add_argument_group("global options")
    for opt in OPTIONS:
        if opt.is_flag:
            group.add_argument(opt.flag, dest=opt.name, action="store_const", const=True,
                               default=None, help=f"{opt.help} [{opt.env}]")
        elif opt.multiple:
            group.add_argument(opt.flag, dest=opt.name, action="append", default=None,
                               metavar=opt.metavar, help=f"{opt.help} [{opt.env}]")
        else:
            group.add_argument(opt.flag, dest=opt.name, default=None, metavar=opt.metavar,
                               help=f"{opt.help} [{opt.env}]")
    group.add_argument("--debug", action="store_true", default=None,
                       help="show commands run and tracebacks")


def _parse(opt: Option, raw: Any, origin: str) -> Any:
    try:
        if opt.multiple:
            items = raw.split() if isinstance(raw, str) else list(raw)
            return tuple(str(i).rstrip("/") for i in items)
        if isinstance(raw, bool) and opt.is_flag:
            return raw
        return opt.parse(str(raw))
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"invalid value {raw!r} for {opt.flag} (from {origin}): {exc}",
            hint=opt.help,
        ) from exc


_TOML_ALIASES = {"mirror": "mirrors"}


def load_config_file(path: Path) -> dict[str, Any]:
    """Read iglubuild.toml; unknown keys are errors with the known ones as a hint."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}", hint="iglubuild.toml must be valid TOML") from exc
    values: dict[str, Any] = {}
    known = {o.name for o in OPTIONS}
    for key, value in data.items():
        name = _TOML_ALIASES.get(key, key.replace("-", "_"))
        if name not in known:
            raise UsageError(
                f"{path}: unknown key {key!r}",
                hint="known keys: " + ", ".join(sorted(o.name for o in OPTIONS)),
            )
        values[name] = value
    return values


def resolve(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge command line, environment, iglubuild.toml and defaults into Settings."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    config_path = cwd / CONFIG_FILE
    file_values = load_config_file(config_path) if config_path.is_file() else {}
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        cli_value = getattr(args, opt.name, None)
        if cli_value is not None:
            values[opt.name] = _parse(opt, cli_value, "command line")
        elif environ.get(opt.env):
            values[opt.name] = _parse(opt, environ[opt.env], opt.env)
        elif opt.name in file_values:
            values[opt.name] = _parse(opt, file_values[opt.name], str(config_path))
    for key in ("recipes", "build_dir", "distfiles"):
        if key in values and not values[key].is_absolute():
            values[key] = (cwd / values[key])
    values.setdefault("recipes", cwd / "recipes")
    values.setdefault("build_dir", cwd / "build")
    debug = bool(getattr(args, "debug", None)) or _bool(environ.get("IGLUBUILD_DEBUG", ""))
    return Settings(debug=debug, project_root=cwd, **values)

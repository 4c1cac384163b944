"""The verbs of the command line, one module each.

A command module defines:

    NAME = "fetch"                    # the verb
    HELP = "download and verify sources only"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(settings: Settings, args: argparse.Namespace) -> int: ...

`iglubuild.cli` discovers every module in this package, so adding a verb
never touches the CLI. `run` returns the exit code and raises IglubuildError
subclasses for failures; it never prints tracebacks or calls sys.exit.
"""

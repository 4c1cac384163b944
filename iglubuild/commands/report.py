"""`iglubuild report [RUN]`: a build run's timeline as a page, as text, or as JSON.

Every `world`/`pkg` run that builds something leaves its record in
`<build-dir>/reports/<run id>.json` (iglubuild.runrecord). `report` reads the
newest (or RUN: a run id, a prefix of one, or a record's path) and writes a
self-contained HTML page beside it (or to `-o FILE`), prints a summary with
`--format text`, or the record itself with `--format json`. It takes no
lock: records are only ever replaced by rename.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iglubuild.commands._common import say
from iglubuild.settings import Settings

NAME = "report"
HELP = "show what a build run did: a timeline page (HTML), a text summary or JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help="run id (or a prefix, or a record's path); default: the newest")
    parser.add_argument("--format", choices=("html", "text", "json"), default="html",
                        help="html: write the page (default); text: a summary; "
                             "json: the record")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="where to write (default: the page beside the record; "
                             "text and JSON go to stdout)")
    parser.add_argument("--list", action="store_true", help="list the recorded runs")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.atomic import write_atomic
    from iglubuild.runrecord import find_report, load_report, reports

    folder = settings.build_dir / "reports"
    if args.list:
        for path in reports(folder):
            record = load_report(path)
            print(f"{record.run_id}  {record.command:<5} {record.outcome:<11} "
                  f"{record.elapsed:8.1f} s  {len(record.packages)} package(s)")
        return 0
    path = find_report(folder, args.run)
    record = load_report(path)
    if args.format == "html":
        from iglubuild.report import html_page

        out = args.output or path.with_suffix(".html")
        write_atomic(out, html_page(record))
        say(f"wrote {out}")
        print(out.resolve().as_uri())
        return 0
    if args.format == "json":
        text = record.model_dump_json(indent=1) + "\n"
    else:
        from iglubuild.report import text_lines

        text = "\n".join(text_lines(record)) + "\n"
    if args.output is not None:
        write_atomic(args.output, text)
        say(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0

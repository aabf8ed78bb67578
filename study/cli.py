"""The `study` command: one subcommand per module in study/commands/.

User errors (StudyError and subclasses) print one line and exit with their code (2 for bad config/grid);
anything else is a bug and keeps its traceback. `-v/--verbose` and `-q/--quiet` (before the subcommand) set how
much the library logs (study/console.py); a command's own result (a table, JSON) always goes to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from study import console
from study.errors import StudyError

# Order here is the order in `study --help`.
COMMANDS = ("quickstart", "train", "run", "submit", "status", "grid", "eval", "export", "collect", "figures", "plan",
            "schedule", "info", "data")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2, like ours
        self.print_usage(sys.stderr)
        self.exit(2, f"study: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="study", description="ProRes study: train, dispatch, evaluate and plot.")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_const", dest="verbosity", const=console.VERBOSE,
                          default=console.NORMAL,
                          help="debug lines, and other libraries' logs and progress bars (off by default)")
    loudness.add_argument("-q", "--quiet", action="store_const", dest="verbosity", const=console.QUIET,
                          help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"study.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"study.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.setup(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except StudyError as exc:
        console.log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        console.log.warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

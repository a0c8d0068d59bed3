"""What every subcommand is: a name, its help, its flags and a handler. One place builds the
parser for ``ghostnet-pipeline NAME`` and for ``python -m jobs.NAME`` from it, and one place
(:func:`jobs._errors.guarded`) turns what a handler raises into a message and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobs._errors import guarded
from pipeline import logs

# The --help group that -v and --log-format join, where a subcommand has one (run, nightly).
LOGGING_GROUP = "output format and logging"


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that reports flags it does not know itself, with its own usage line;
    argparse would leave them to the top-level parser, whose usage names no subcommand flag."""

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it on the namespace's type
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


def add_logging_arguments(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """``-v`` and ``--log-format``. A subcommand takes them too, without defaults of its own, so
    that they work after it as well as before it."""
    verbose, fmt = (argparse.SUPPRESS, argparse.SUPPRESS) if subcommand else (False, "text")
    group = next((g for g in parser._action_groups if g.title == LOGGING_GROUP), parser)
    group.add_argument("-v", "--verbose", action="store_true", default=verbose, help="log progress details")
    group.add_argument("--log-format", choices=logs.FORMATS, default=fmt,
                       help="text (default) or json: one JSON object per log line")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]  # raises UsageError, RunFailed, ... for guarded()
    usage: str | None = None  # the usage line, where argparse's list of every flag would be too long

    def __call__(self, args: argparse.Namespace) -> int:
        return guarded(lambda: self.handler(args))

    def _options(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "usage": self.usage,
            "epilog": self.example,
            "formatter_class": argparse.RawDescriptionHelpFormatter,
        }

    def build_parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog or f"ghostnet-pipeline {self.name}", **self._options())
        self.add_arguments(parser)
        add_logging_arguments(parser)
        return parser

    def register(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = commands.add_parser(self.name, help=self.help, **self._options())
        self.add_arguments(parser)
        add_logging_arguments(parser, subcommand=True)
        parser.set_defaults(handler=self)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The entry point of ``python -m jobs.<module>``, which a Ray job runs."""
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        prog = f"python -m {spec.name}" if spec else None
        args = self.build_parser(prog).parse_args(argv)
        logs.configure(args.log_format, verbose=args.verbose)
        return self(args)

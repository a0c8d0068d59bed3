"""What every subcommand is: a name, its help, its flags and a handler. One place builds the
parser for ``ghostnet-pipeline NAME`` and for ``python -m jobs.NAME`` from it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import logs


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that reports flags it does not know itself, with its own usage line;
    argparse would leave them to the top-level parser, whose usage names no subcommand flag."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]

    def _options(self) -> dict:
        return {
            "description": self.description,
            "epilog": self.example,
            "formatter_class": argparse.RawDescriptionHelpFormatter,
        }

    def build_parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog or f"ghostnet-pipeline {self.name}", **self._options())
        self._add_arguments(parser)
        return parser

    def _add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_arguments(parser)
        # Also after the subcommand; not set there, the top-level --log-format (default text) stands.
        parser.add_argument("--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS,
                            help="text (default) or json: one JSON object per log line")

    def register(self, commands: argparse._SubParsersAction) -> None:
        parser = commands.add_parser(self.name, help=self.help, **self._options())
        self._add_arguments(parser)
        parser.set_defaults(handler=self.handler)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The entry point of ``python -m jobs.<module>``, which a Ray job runs."""
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        prog = f"python -m {spec.name}" if spec else None
        args = self.build_parser(prog).parse_args(argv)
        logs.configure(getattr(args, "log_format", "text"))
        return self.handler(args)

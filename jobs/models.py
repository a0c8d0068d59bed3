"""``ghostnet-pipeline models``: the architectures ``--model`` takes and the weights shipped with
the package, for ``--weights``.

Exit codes: 0 listed (an empty listing included), 2 usage error.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any

from analytics import QueryResult
from ghostnet.pretrained import PRETRAINED, pretrained_path
from jobs._command import Command
from jobs.query import write_table

FORMATS = ("table", "json")
SHA256_SHOWN = 12  # table format; json carries the whole digest, for --weights-sha256

EXAMPLE = """examples:
  ghostnet-pipeline models
  ghostnet-pipeline models 'ghostnetv2_*'
  ghostnet-pipeline models ghostnet_050 --format json

A pattern selects the architectures it matches and the shipped weights whose name or
architecture it matches.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", metavar="PATTERN", nargs="?",
                        help="shell-style pattern, e.g. 'ghostnetv3_*' (default: everything)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (for people) or json ({\"models\": [...], \"weights\": [...]})")


def listing(pattern: str | None) -> dict[str, list[Any]]:
    """The registered architectures and the shipped weights that ``pattern`` selects."""
    from ghostnet import list_models  # the registry imports torch: only when models are listed

    def selected(*names: str) -> bool:
        return pattern is None or any(fnmatch.fnmatchcase(name, pattern) for name in names)

    weights = [
        {"name": e.name, "architecture": e.architecture, "modality": e.modality, "classes": len(e.labels),
         "sha256": e.sha256, "accuracy": e.accuracy, "path": str(pretrained_path(e.name))}
        for e in PRETRAINED.values()
        if selected(e.name, e.architecture)
    ]
    return {"models": list_models(pattern), "weights": weights}


def write_listing(found: dict[str, list[Any]]) -> None:
    print("models (for --model):")
    write_table(QueryResult(["model"], [(name,) for name in found["models"]]), sys.stdout)
    print("\nshipped weights (for --weights PATH --weights-sha256 SHA256):")
    columns = ["name", "architecture", "modality", "classes", "sha256", "accuracy", "path"]
    rows = [(*(w[c] for c in columns[:4]), w["sha256"][:SHA256_SHOWN], f"{w['accuracy']:.3f}", w["path"])
            for w in found["weights"]]
    write_table(QueryResult(columns, rows), sys.stdout)


def execute(args: argparse.Namespace) -> int:
    found = listing(args.pattern)
    if args.format == "json":
        print(json.dumps(found, indent=2))
    else:
        write_listing(found)
    return 0


COMMAND = Command(
    name="models",
    help="list the model architectures and the shipped weights",
    description="List the architectures --model takes and the weights shipped with the package.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())

"""Make a virtualenv that holds what the GPU machine holds, and nothing of what it lacks.

The distributions named in tools/gpu_machine_packages.txt that this Python has installed are
linked into a fresh venv (file by file, so namespace packages such as ``nvidia`` stay whole);
Ray, deltalake and the rest of what the carry brings are not. A carry proven here is complete
for that machine, up to the versions of what it provides.

    python tools/gpu_machine_venv.py /tmp/gpu-like-venv      # then /tmp/gpu-like-venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "tools" / "gpu_machine_packages.txt"


def provided_names(path: Path = PACKAGES) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {normalize(line) for line in lines if line}


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def link_distribution(dist: metadata.Distribution, site: Path) -> int:
    """Symlink every installed file of ``dist`` (bytecode aside) into ``site``; returns how many."""
    base = Path(dist.locate_file(""))
    count = 0
    for rel in dist.files or []:
        if rel.parts[0] == ".." or "__pycache__" in rel.parts:
            continue
        target, link = base / rel, site / rel
        if not target.exists() or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        count += 1
    return count


def with_requirements(names: set[str]) -> set[str]:
    """``names`` and what they require here, recursively (extras aside). Versions here differ from
    the machine's, and so can their needs (huggingface_hub 2 needs httpx2, 1.x httpx): the machine's
    own set is consistent, so the imitation must be too."""
    from packaging.requirements import Requirement

    installed = {normalize(d.metadata["Name"]): d for d in metadata.distributions()}
    found, todo = set(), [n for n in names if n in installed]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            if normalize(req.name) in installed:
                todo.append(normalize(req.name))
    return found


def make_venv(dest: Path, names: set[str] | None = None) -> dict[str, str]:
    """A venv on this Python's base interpreter with ``names`` (default: the GPU machine's list)
    and their requirements linked in from this environment. Returns the linked distributions
    and their versions."""
    names = with_requirements(provided_names() if names is None else names)
    subprocess.run([Path(sys.base_prefix) / "bin" / "python3", "-m", "venv", "--without-pip", dest], check=True)
    site = site_packages(dest)
    linked = {}
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"])
        if name in names and name not in linked and link_distribution(dist, site):
            linked[name] = dist.version
    return linked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    linked = make_venv(args.dest)
    listed = provided_names()
    print(f"{args.dest}: {len(linked)} distributions linked; needed by those here but not on the list: "
          f"{', '.join(sorted(set(linked) - listed)) or 'none'}; on the list but not installed here: "
          f"{', '.join(sorted(listed - set(linked))) or 'none'}", file=sys.stderr)
    print(os.fspath(args.dest / "bin" / "python"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

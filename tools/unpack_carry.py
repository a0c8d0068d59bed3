"""Unpack a carry built by tools/pack_ray_for_gpu_machine.sh and print the environment to use it.

Needs nothing but Python (3.11.4+ or 3.12): the archive is a .tar.xz that ``tarfile`` reads.

    eval "$(python3 tools/unpack_carry.py .gpu-carry/ray-carry-py312.tar.xz /tmp/carry)"
    python3 -m jobs.run --input ... --output ...      # with PYTHONPATH=<repo>:/tmp/carry/site

Unpacking again into the same folder is skipped when the archive is unchanged. The packages
the carry's own packages require are checked against what this Python has (a warning per
missing or too old one), since the carry leaves out what the target machine already has.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

STAMP = ".unpacked-from"
# Extras of the carried distributions that the run path uses.
EXTRAS = {"ray": {"data"}, "deltalake": {"pyarrow", "pandas"}}


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` (once per archive content); returns the site folder."""
    archive, dest = Path(archive), Path(dest)
    stamp = dest / STAMP
    want = digest(archive)
    if stamp.is_file() and stamp.read_text() == want:
        return dest / "site"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **kwargs)
    stamp.write_text(want)
    return dest / "site"


def environment(site: Path, repo: Path | None = None) -> dict[str, str]:
    """PYTHONPATH with the repo (when given) and the carry in front of what is there already."""
    parts = [str(repo)] if repo else []
    parts.append(str(site))
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts)}


def unmet_requirements(site: Path) -> list[str]:
    """Requirements of the carried distributions that neither the carry nor this Python meets."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return ["(packaging is not installed here: requirements not checked)"]
    from importlib import metadata

    search = [str(site), *sys.path]
    found = {_key(d.metadata["Name"]): d.version for d in metadata.distributions(path=search)}
    problems = []
    for dist in metadata.distributions(path=[str(site)]):
        name = _key(dist.metadata["Name"])
        for text in dist.requires or []:
            req = Requirement(text)
            extras = EXTRAS.get(name, set()) | {""}
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            have = found.get(_key(req.name))
            if have is None:
                problems.append(f"{name} needs {req}: not installed")
            elif req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: found {have}")
    return sorted(set(problems))


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("dest", type=Path, nargs="?", help="default: /tmp/<archive name without .tar.xz>")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="also put this checkout on PYTHONPATH (default: the one holding this script)")
    args = parser.parse_args()
    dest = args.dest or Path("/tmp") / args.archive.name.removesuffix(".tar.xz")
    site = unpack(args.archive, dest)
    for problem in unmet_requirements(site):
        print(f"warning: {problem}", file=sys.stderr)
    for key, value in environment(site, args.repo).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Build the "carry": one .tar.xz (under 60 MiB) holding Ray and whatever else our run path
# needs that the GPU machine lacks, for a machine that has no registry to install from.
#
#   tools/pack_ray_for_gpu_machine.sh [--python 3.12] [--out FILE] [--no-s3] [--with-duckdb] [--quick]
#
# --python       the target machine's Python (default 3.12, the GPU machine's; 3.11 for this one)
# --out          default .gpu-carry/ray-carry-py<XY>.tar.xz (ignored by git; the device tool's
#                `carry` takes it from there)
# --no-s3        leave out s3fs/aiobotocore/botocore (only needed for s3:// inputs or outputs)
# --with-duckdb  add DuckDB (15.5 MB more: over the budget with the rest). Without it every
#                command runs but those that read an output back with DuckDB (query, report,
#                nightly --alert-drift: the `analytics` extra), which say what is missing
# --results FILE also write the carry's size, unpacked size and contents as JSON there
#                (bench/RESULTS.md cites bench/results/gpu_carry-py312.json)
# --quick        xz -1 instead of -9e: a far bigger file in a fraction of the time (for tests;
#                no size limit)
#
# What goes in: the wheel closure of ray[data] + deltalake + soundfile + soxr (+ s3fs),
# pinned by requirements/lock.txt, minus the distributions tools/gpu_machine_packages.txt says
# the GPU machine has. Ray goes without its [default] extras (the run starts Ray with
# include_dashboard=False; the dashboard agent then runs in its minimal mode). Ray is trimmed
# (RAY_TRIM), botocore keeps the service models S3 access uses, ELF files are stripped, and
# everything goes into one xz stream with the x86 filter and a dictionary of 192 MiB, ELF files
# last and side by side: Ray's three big binaries share most of their code, which only a
# dictionary spanning all of them finds (20.5 MB compressed one by one, 13.2 MB together).
#
# Unpack it with nothing but Python: python3 tools/unpack_carry.py ARCHIVE DEST
# Wheels are cached in .whl/py<XY>/ (ignored). Needs pip (and its registry, unless the cache
# holds every wheel), strip and xz. Exit 75 when the wheels can be neither fetched nor found.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PIP_PYTHON="${PIP_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PIP_PYTHON" ]] || PIP_PYTHON="$(command -v python3)"
RAY_VERSION=2.60.0
# Not in requirements/lock.txt yet; the versions this project tested with.
EXTRA_PINS=(deltalake==1.6.6 arro3-core==0.9.1 deprecated==1.3.1)
LIMIT_BYTES=$((60 * 1024 * 1024))
NO_WHEELS=75
# Parts of Ray that `ghostnet-pipeline run` never imports; the self-test
# (tests/infra/test_gpu_carry.py) runs the demo on what is left.
RAY_TRIM=(rllib serve tune train llm workflow jars cpp dashboard/client includes
          _raylet.pxd _raylet.pyi setup-dev.py)
# botocore ships a model of every AWS service, gzipped (15 MB that xz cannot shrink); S3 access
# needs S3's and those of the credential providers (STS for roles, SSO, sign-in).
BOTOCORE_KEEP=(s3 sts sso sso-oidc signin)
# Carried although the machine has them: s3fs pins fsspec to its own version.
CARRY_ANYWAY=(fsspec)

python_version=3.12
out=""
results=""
with_s3=1
with_duckdb=0
xz_filters=(--x86 --lzma2=preset=9e,dict=192MiB)
stage=""

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --python) python_version="$2"; shift 2 ;;
            --out) out="$2"; shift 2 ;;
            --no-s3) with_s3=0; shift ;;
            --with-duckdb) with_duckdb=1; shift ;;
            --quick) xz_filters=(--x86 --lzma2=preset=1); shift ;;
            --results) results="$2"; shift 2 ;;
            -h|--help) usage ;;
            *) echo "unknown argument: $1" >&2; usage ;;
        esac
    done
    tag="py${python_version/./}"
    out="${out:-$ROOT/.gpu-carry/ray-carry-$tag.tar.xz}"
    wheels="$ROOT/.whl/$tag"
}

platform_flags() {
    printf '%s\n' --only-binary=:all: --implementation cp --python-version "$python_version"
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
        printf '%s\n' --platform "$p"
    done
}

requirements() {
    printf '%s\n' "ray[data]==$RAY_VERSION" soundfile soxr "${EXTRA_PINS[@]}"
    if [[ $with_s3 == 1 ]]; then echo s3fs; fi
    if [[ $with_duckdb == 1 ]]; then echo duckdb; fi
}

pip_quiet() {
    "$PIP_PYTHON" -m pip -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored" >&2)
}

download_wheels() {
    mkdir -p "$wheels"
    echo "downloading wheels for Python $python_version into $wheels" >&2
    pip_quiet download "${flags[@]}" -c "$ROOT/requirements/lock.txt" -d "$wheels" "${reqs[@]}" ||
        echo "pip could not download; trying with the wheels already in $wheels" >&2
}

# pip's report of the closure, resolved from the wheel cache alone.
resolve() {
    pip_quiet install --dry-run --ignore-installed --no-index --find-links "$wheels" \
        --target "$stage/resolve" "${flags[@]}" -c "$ROOT/requirements/lock.txt" --report "$1" "${reqs[@]}"
}

# The closure's wheels that the target machine lacks, one path a line.
carried_wheels() {
    local anyway=""
    if [[ $with_s3 == 1 ]]; then anyway="${CARRY_ANYWAY[*]}"; fi
    "$PIP_PYTHON" - "$1" "$ROOT/tools/gpu_machine_packages.txt" "$anyway" <<'PY'
import json, re, sys

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

provided = {key(line.split("#")[0].strip()) for line in open(sys.argv[2]) if line.split("#")[0].strip()}
provided -= {key(name) for name in sys.argv[3].split()}
for item in json.load(open(sys.argv[1]))["install"]:
    if key(item["metadata"]["name"]) not in provided:
        print(item["download_info"]["url"].removeprefix("file://"))
PY
}

install_into() {
    local site="$1"; shift
    pip_quiet install --no-deps --no-index --no-compile --target "$site" "${flags[@]}" "$@"
    rm -rf "$site/bin"  # console scripts with this machine's interpreter in their shebang
}

trim() {
    local site="$1" part keep=()
    for part in "${RAY_TRIM[@]}"; do rm -rf "${site:?}/ray/$part"; done
    find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    # RECORD (a hash per file, which nothing but pip uninstall reads) does not compress.
    find "$site" \( -name '*.pyi' -o -name '*.js.map' -o -path '*.dist-info/RECORD' \) -delete
    if [[ -d "$site/botocore/data" ]]; then
        for part in "${BOTOCORE_KEEP[@]}"; do keep+=(! -name "$part"); done
        find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d "${keep[@]}" -exec rm -rf {} +
    fi
}

# Every file under $1, relative to it: text first, then ELF files sorted by path, so that
# ray/_raylet.so, ray/core/.../gcs_server and ray/core/.../raylet sit within one dictionary window.
file_list() {
    "$PIP_PYTHON" - "$1" "${2:-all}" <<'PY'
import sys
from pathlib import Path

root, which = Path(sys.argv[1]), sys.argv[2]

def is_elf(p):
    if p.is_symlink():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"\x7fELF"

files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
elf = [p for p in files if is_elf(p)]
chosen = elf if which == "elf" else [p for p in files if p not in set(elf)] + elf
print("\n".join(str(p.relative_to(root)) for p in chosen))
PY
}

strip_binaries() {
    local f n=0
    while IFS= read -r f; do
        strip --strip-unneeded "$1/$f" 2>/dev/null && n=$((n + 1))
    done < <(file_list "$1" elf)
    echo "stripped $n ELF files" >&2
}

archive() {
    file_list "$stage/site" | sed 's|^|site/|' >"$stage/files.txt"
    mkdir -p "$(dirname "$out")"
    # The decoder (Python's tarfile too) holds the dictionary in memory: 192 MiB.
    tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=2026-01-01 --no-recursion \
        -T "$stage/files.txt" -cf - | xz -T1 "${xz_filters[@]}" -c >"$out.part"
    mv "$out.part" "$out"
}

main() {
    parse_args "$@"
    mapfile -t reqs < <(requirements)
    mapfile -t flags < <(platform_flags)
    stage="$(mktemp -d "${TMPDIR:-/tmp}/ray-carry.XXXXXX")"
    trap 'rm -rf "$stage"' EXIT
    download_wheels
    if ! resolve "$stage/report.json"; then
        echo "the wheels for Python $python_version are neither downloadable nor in $wheels" >&2
        exit "$NO_WHEELS"
    fi
    local wheel_files size
    mapfile -t wheel_files < <(carried_wheels "$stage/report.json")
    echo "carrying ${#wheel_files[@]} distributions:" >&2
    printf '  %s\n' "${wheel_files[@]##*/}" >&2
    install_into "$stage/site" "${wheel_files[@]}"
    trim "$stage/site"
    strip_binaries "$stage/site"
    { echo "python $python_version, ray $RAY_VERSION, built $(date -u +%FT%TZ)"
      printf '%s\n' "${wheel_files[@]##*/}"; } >"$stage/site/CARRY.txt"
    rm -rf "$stage/resolve" "$stage/report.json"
    local unpacked
    unpacked=$(du -sb "$stage/site" | cut -f1)
    echo "unpacked: $unpacked bytes; compressing (minutes)" >&2
    archive
    size=$(stat -c %s "$out")
    echo "$out: $size bytes ($((size / 1024 / 1024)) MiB)"
    if [[ -n $results ]]; then
        python3 -c 'import json, sys
a = sys.argv[1:]
keys = ("archive", "python", "ray", "date", "bytes", "unpacked_bytes", "xz")
record = dict(zip(keys, a[:7]))
record.update(bytes=int(record["bytes"]), unpacked_bytes=int(record["unpacked_bytes"]), distributions=a[7:])
print(json.dumps(record, indent=2))' \
            "${out##*/}" "$python_version" "$RAY_VERSION" "$(date -u +%FT%TZ)" "$size" "$unpacked" \
            "${xz_filters[*]}" "${wheel_files[@]##*/}" >"$results"
    fi
    if ((size > LIMIT_BYTES)) && [[ "${xz_filters[*]}" == *9e* ]]; then
        echo "over the 60 MiB budget" >&2
        exit 1
    fi
}

main "$@"; exit

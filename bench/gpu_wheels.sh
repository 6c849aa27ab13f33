#!/usr/bin/env bash
# Wheels for bench/gpu_check.py on the lent GPU machine, whose image lacks diffusers, bitsandbytes and torchao
# and which reaches no package registry: fetched here, carried with the working tree (64 MiB in all), installed
# there offline. Prints the command to run there.
#
#   bash bench/gpu_wheels.sh [SKIP_RATES_JSON]    # from anywhere, with the project's venv active
#
# SKIP_RATES_JSON (written by `bench/cache.py --skip-rates`) travels in the wheel folder, for the 5B estimates.
# The machine's image: python3 3.12 with torch 2.11.0+cu130, transformers, peft, accelerate, safetensors. These
# three wheels fit any CPython >= 3.10 (py3-none and abi3), so PYTHON_VERSION only steers pip's choice.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=.gpu-wheels
PYTHON_VERSION=3.12
DIFFUSERS=$("$PYTHON" -m pip show diffusers | sed -n 's/^Version: //p') # the version s2v is tested with here
BITSANDBYTES=0.50.2 # ships a library for CUDA 13.0, torch 2.11's
TORCHAO=0.18.0      # built against torch 2.11 (torchao's compatibility table)
KEEP_CUDA=130       # bitsandbytes carries eleven CUDA/ROCm libraries (41 MiB); the machine's torch loads this one
LIMIT_MIB=56        # what travels (this tree and the wheels) must stay under 64 MiB; the rest is room to grow

rm -rf "$WHEELS"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --dest "$WHEELS" \
    "diffusers==$DIFFUSERS" "bitsandbytes==$BITSANDBYTES" "torchao==$TORCHAO"

# Drop bitsandbytes' libraries for other CUDA and ROCm versions, and their lines in the wheel's RECORD.
"$PYTHON" - "$WHEELS" "$KEEP_CUDA" <<'EOF'
import sys, zipfile
from pathlib import Path

folder, cuda = Path(sys.argv[1]), sys.argv[2]
keep = {f"libbitsandbytes_cuda{cuda}.so", "libbitsandbytes_cpu.so"}
wheel = next(folder.glob("bitsandbytes-*.whl"))
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    names = source.namelist()
    dropped = {n for n in names if Path(n).name.startswith("libbitsandbytes_") and Path(n).name not in keep}
    assert len(dropped) < len([n for n in names if "libbitsandbytes_" in n]), f"no library for CUDA {cuda}"
    for item in source.infolist():
        if item.filename in dropped:
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
        target.writestr(item, data)
slim.replace(wheel)
EOF

SKIP_RATES=""
if [ $# -gt 0 ]; then
    cp "$1" "$WHEELS/skip_rates.json"
    SKIP_RATES=" --skip-rates $WHEELS/skip_rates.json"
fi

# What travels: tracked and untracked-not-ignored files, plus the carried wheel folder.
"$PYTHON" - "$WHEELS" "$LIMIT_MIB" <<'EOF'
import subprocess, sys
from pathlib import Path

folder, limit = Path(sys.argv[1]), float(sys.argv[2])
listed = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
).stdout.split(b"\0")
tree = sum(path.stat().st_size for path in map(Path, map(bytes.decode, listed)) if path.is_file())
carried = sorted(folder.iterdir())
for path in carried:
    print(f"{path.stat().st_size / 2**20:7.2f} MiB  {path}")
total = tree + sum(path.stat().st_size for path in carried)
print(f"{tree / 2**20:7.2f} MiB  working tree\n{total / 2**20:7.2f} MiB  in all (limit 64 MiB; this check's {limit:.0f})")
if total > limit * 2**20:
    sys.exit(f"too much to carry: {total / 2**20:.1f} MiB")
EOF

cat <<EOF

On the GPU machine: the device tool's run, with carry [".gpu-wheels"] and timeout_s 420, command:
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $WHEELS/*.whl && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out \$OUT/gpu_check.md$SKIP_RATES
EOF

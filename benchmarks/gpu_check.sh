#!/usr/bin/env bash
# The one command for a lent GPU (issue 32, item 4); benchmarks/gpu_check.py says what it checks.
#
#   benchmarks/gpu_check.sh --wheels      here, where pip reaches PyPI: the packages the GPU
#                                         image lacks, as wheels into .whl/ (git-ignored)
#   benchmarks/gpu_check.sh [--device cuda] [--out DIR]
#                                         there (carry .whl): installs them into /tmp, then checks
#   benchmarks/gpu_check.sh --device cpu  the dry mode: the same steps, tiny, on the CPU (CI)
#
# The GPU image has PyTorch, numpy, scipy, scikit-image, tifffile, numba, opencv and the rest, but
# not cellpose (the flow math), kornia or roifile; its Python is 3.12, so the wheels are fetched
# for cp312 manylinux whatever Python runs here. cganseg itself is used from src/ (no install).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(cellpose==3.1.1.3 fastremap==1.21.0 fill-voids==2.1.2 natsort==8.4.0
        roifile==2026.2.10 kornia==0.9.0 kornia_rs==0.2.0)

if [[ "${1:-}" == "--wheels" ]]; then
    platforms=()
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
               manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$tag")
    done
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
    ls .whl
    exit 0
fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import cellpose.dynamics, kornia, roifile" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "error: $PY lacks cellpose, kornia or roifile and there is no .whl/ folder;" \
             "run 'benchmarks/gpu_check.sh --wheels' where pip works and carry .whl" >&2
        exit 2
    fi
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/cganseg-site .whl/*.whl
    export PYTHONPATH="/tmp/cganseg-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"

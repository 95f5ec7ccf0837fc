#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) in one call on a GPU machine without internet, whose python3
# (3.12, x86-64 Linux) has torch, torchvision, Lightning, torchmetrics, tensorboard, seaborn and
# scikit-learn but not kornia, jsonargparse, torchdata or lightly (scripts/gpu_machine_packages.txt).
#
#   scripts/gpu_check.sh prepare    here, in the repo, with internet: the missing packages as wheels
#                                   into .whl/ and Fashion-MNIST into .gpu_data/ (both git-ignored),
#                                   the wheels' Requires-Dist checked against that machine, the size
#                                   of what travels, and the command to run there
#   scripts/gpu_check.sh run OUT    there, in a copy of the repo with .whl/ and .gpu_data/: the wheels
#                                   into /tmp/site, then the check (9 minutes), its report into OUT
#
# Then, here: python scripts/gpu_check.py --merge OUT/gpu_check.csv (the results into docs/speed.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# The development install's versions (constraints: those of pyproject.toml); wheels for CPython 3.12.
WHEELS=(kornia==0.9.0 kornia_rs==0.2.0 jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
        torchdata==0.11.0 lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.3.1)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)  # omegaconf's parser runtime: on PyPI as a source archive only
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
FASHION_MNIST=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
LIMIT_MIB=64  # what may travel with the repo to the GPU machine

case "${1:-}" in
prepare)
    PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    rm -rf .whl .gpu_data
    mkdir -p .whl .gpu_data/fashion-mnist
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]/#/--platform=}" -d .whl "${WHEELS[@]}"
    "$PYTHON" -m pip wheel -q --no-deps -w .whl "${SOURCE_ONLY[@]}"
    cp "$FASHION_MNIST"/*-ubyte.gz .gpu_data/fashion-mnist/
    "$PYTHON" scripts/wheel_closure.py .whl scripts/gpu_machine_packages.txt
    # The working tree as it travels (tracked and untracked files that git does not ignore), and the two folders.
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    wheels=$(du -sb .whl | cut -f1)
    data=$(du -sb .gpu_data | cut -f1)
    total=$((tree + wheels + data))
    awk -v t="$tree" -v w="$wheels" -v d="$data" 'BEGIN { m = 1048576;
        printf "travels: %.1f MiB (working tree %.1f, .whl %.1f, .gpu_data %.1f)\n", (t + w + d) / m, t / m, w / m, d / m }'
    if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "over ${LIMIT_MIB} MiB: move run outputs out of the working tree (or git-ignore them)" >&2
        exit 1
    fi
    echo 'on the GPU machine, in the repo root, with .whl and .gpu_data beside it (timeout 600 s):'
    echo '    bash scripts/gpu_check.sh run "$OUT"'
    echo 'carry: [".whl", ".gpu_data"]'
    ;;
run)
    out=${2:?usage: scripts/gpu_check.sh run OUT [gpu_check.py options]}
    shift 2
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    exec python3 scripts/gpu_check.py --out "$out" --data-dir .gpu_data/fashion-mnist "$@"
    ;;
*)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac

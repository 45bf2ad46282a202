#!/usr/bin/env bash
# Each job alone in an empty folder, run by uv from its PEP 723 header (as `hf jobs uv run` does):
# --help, then a dry run on a copied JSONL file. Nothing from the repository is importable there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
with=()
# Where a CPU torch wheel lies on disk (this project's dev machines), use it instead of PyPI's CUDA build.
wheel=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$wheel" ]; then
    export UV_FIND_LINKS=/opt/wheels
    version=$(basename "$wheel" | sed -E 's/^torch-([0-9.]+)\+cpu.*/\1/')
    with=(--with "torch==$version" --python 3.11)
fi
command -v uv >/dev/null || python3 -m pip install --quiet uv
for job in data eval sft grpo retrieval; do cp "$root/jobs/$job.py" "$work/"; done
cp "$root/tests/fixtures/train.jsonl" "$work/train.jsonl"
cp -r "$root/tests/fixtures/beir-tiny" "$work/beir-tiny"
cd "$work"
ls
for job in data eval sft grpo retrieval; do
    echo "== uv run $job.py --help"
    uv run --quiet "${with[@]}" --script "$job.py" --help | head -n 5
done
echo "== uv run data.py validate train.jsonl"
uv run --quiet "${with[@]}" --script data.py validate train.jsonl
echo "== uv run sft.py --dry-run --dataset train.jsonl"
uv run --quiet "${with[@]}" --script sft.py --dry-run --dataset train.jsonl
echo "== uv run grpo.py --dry-run --dataset train.jsonl --model you/qmd-expand-sft"
HF_HUB_OFFLINE=1 uv run --quiet "${with[@]}" --script grpo.py --dry-run --dataset train.jsonl --model you/qmd-expand-sft
echo "== uv run retrieval.py --dataset beir-tiny --no_dense"
uv run --quiet "${with[@]}" --script retrieval.py --dataset beir-tiny --no_dense --report retrieval.json
echo "== uv run quantize.py --help, --dry-run --model you/qmd-expand-sft"
cp "$root/jobs/quantize.py" .
# llama-cpp-python has only a source distribution on PyPI: take the wheel scripts/llama_cpp_wheel.sh keeps,
# where there is one; else uv builds it with the header's CMAKE_ARGS (about 10 minutes, then cached).
llama_wheels=${QMD_CACHE:-$HOME/.cache/qmd-expand}/wheels
[ -d "$llama_wheels" ] && export UV_FIND_LINKS="${UV_FIND_LINKS:+$UV_FIND_LINKS,}$llama_wheels"
uv run --quiet "${with[@]}" --script quantize.py --help | head -n 5
HF_HUB_OFFLINE=1 uv run --quiet "${with[@]}" --script quantize.py --dry-run --model you/qmd-expand-sft
echo "standalone: ok"

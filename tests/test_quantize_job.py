"""jobs/quantize.py through its CLI on a tiny model: llama.cpp's converter and quantizer, load, generate, gate.

The model is a random Qwen3 (hidden 256, head_dim 64: every matrix takes k-quants) with GPT-2's tokenizer
from llama.cpp's own vocab file, which its converter recognises. llama-cpp-python comes from
scripts/llama_cpp_wheel.sh (`just setup-gguf`, which `just test` runs), which also keeps the pinned source distribution in its cache.
"""

import json
import tarfile

import pytest

from conftest import ROOT, load_job
from test_sft_job import run
from tiny_model import build_tiny_model

QUANTIZE = ROOT / "jobs" / "quantize.py"
TRAIN = ROOT / "tests" / "fixtures" / "train.jsonl"
SMALL = ["--eval_limit", 4, "--max_new_tokens", 16, "--repetition_penalty", 1.15, "--threads", 1]


@pytest.fixture(scope="module")
def job():
    return load_job("quantize")


@pytest.fixture(scope="module")
def sdist(job):
    """The pinned llama-cpp-python source distribution (cached by scripts/llama_cpp_wheel.sh or fetched)."""
    return job.download_sdist(job.JobArguments())


@pytest.fixture(scope="module")
def gguf_ready_model(sdist, tmp_path_factory):
    import torch

    torch.manual_seed(0)  # the same random weights every run: greedy outputs are then reproducible
    folder = tmp_path_factory.mktemp("tiny-gguf")
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/models/ggml-vocab-gpt-2.gguf"))
        (folder / "ggml-vocab-gpt-2.gguf").write_bytes(archive.extractfile(member).read())
    return build_tiny_model(folder / "model", hidden_size=256, head_dim=64,
                            tokenizer_gguf=folder / "ggml-vocab-gpt-2.gguf")


@pytest.fixture(scope="module")
def quantized(gguf_ready_model, sdist, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    # Random weights score 0 like the HF model they came from: --max_drop 1 lets every file through.
    result = run(QUANTIZE, "--model", gguf_ready_model, "--output_dir", out, "--quants", "f16,q8_0,q4_k_m",
                 "--llama_cpp_source", sdist, "--max_drop", 1, "--imatrix", *SMALL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_convert_quantize_load_and_generate(quantized):
    out, stdout = quantized
    report = json.loads((out / "quantize-report.json").read_text())
    files = {entry["quant"]: entry for entry in report["files"]}
    assert list(files) == ["f16", "q8_0", "q4_k_m"]
    sizes = {quant: (out / entry["file"]).stat().st_size for quant, entry in files.items()}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"] > 0
    for entry in files.values():
        # llama.cpp rendered the GGUF's own chat template: same text and tokens as the HF tokenizer's.
        assert entry["template_mismatches"] == 0 and entry["token_mismatches"] == 0, entry["first_mismatch"]
        assert entry["summary"]["overall"]["n"] == 4 and len(entry["rows"]) == 4
        assert entry["generated_tokens"] > 0 and entry["tokens_per_second"] > 0 and entry["passed"]
    assert files["q4_k_m"]["fallback"] == 0  # every row is 256 values: real k-quants throughout
    # --imatrix, run from the repository: an importance matrix from data/*.jsonl for each of the 2 x 7 projections
    assert files["q4_k_m"]["imatrix_entries"] == 14 and "training examples from data" in report["imatrix"]
    assert report["decoding"] == {"greedy": True, "max_new_tokens": 16, "repetition_penalty": 1.15}
    assert report["timings"]["convert_seconds"] > 0 and set(report["timings"]["quantize_seconds"]) == {"q8_0", "q4_k_m"}
    table = stdout[stdout.index("file "):]
    assert all(name in table for name in ("HF model", "qmd-expand.F16.gguf", "qmd-expand.Q4_K_M.gguf", "tok/s"))


def test_f16_generates_what_the_hf_model_generates(quantized):
    out, _ = quantized
    report = json.loads((out / "quantize-report.json").read_text())
    hf = [row["output"] for row in report["hf"]["rows"]]
    f16 = [row["output"] for row in report["files"][0]["rows"]]
    # Same prompt tokens, same greedy decoding and penalty: f16 agrees with fp32 transformers. (Rounding can flip
    # a near-tie between two tokens, as in 28 of 144 demo outputs; a wrong template or penalty changes them all.)
    assert sum(a == b for a, b in zip(f16, hf)) >= 3, (f16, hf)


def test_modelfile_carries_the_chat_template_and_the_eval_decoding(quantized, gguf_ready_model, job):
    from transformers import AutoTokenizer

    out, _ = quantized
    text = (out / "Modelfile").read_text()
    assert "FROM ./qmd-expand.Q4_K_M.gguf" in text  # the smallest file that passed
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert "PARAMETER repeat_penalty 1.15" in text and "PARAMETER num_predict 16" in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf_ready_model)
    query = "docker compose networking"
    user_turn = job.PROMPT_TEMPLATE.format(query=query)
    assert template.replace("{{ .Prompt }}", user_turn) == job.chat_prompt(tokenizer, query)


def test_model_card_has_the_table_and_usage(quantized):
    out, _ = quantized
    card = (out / "README.md").read_text()
    assert "| file | size | avg score | format pass | tok/s | vs HF | gate |" in card
    assert "| qmd-expand.Q8_0.gguf |" in card and "| HF model (transformers) |" in card
    for usage in ("## llama.cpp", "llama-cli -m qmd-expand.", "## llama-cpp-python", "from llama_cpp import Llama",
                  "## Ollama", "ollama create qmd-expand -f Modelfile"):
        assert usage in card


def test_gate_fails_files_below_the_hf_model(gguf_ready_model, sdist, tmp_path):
    # An HF report whose outputs are the training set's gold expansions (about 0.9 average reward once
    # re-scored): the random model's GGUF falls far below it and fails.
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines()[:3]]
    report = {"rows": [{"category": row.get("category", "any"), "query": row["query"],
                        "output": "\n".join(f"{kind}: {text}" for kind, text in row["output"])} for row in rows],
              "decoding": {"max_new_tokens": 12, "repetition_penalty": 1.15}, "tokens_per_second": 10.0}
    (tmp_path / "eval-report.json").write_text(json.dumps(report))
    out = tmp_path / "out"
    result = run(QUANTIZE, "--model", gguf_ready_model, "--output_dir", out, "--quants", "q8_0",
                 "--llama_cpp_source", sdist, "--hf_report", tmp_path / "eval-report.json", "--threads", 1)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "re-scored with this reward" in result.stdout
    assert "qmd-expand.Q8_0.gguf: FAIL (" in result.stdout and "points below the HF model (max 2)" in result.stdout
    saved = json.loads((out / "quantize-report.json").read_text())
    assert saved["hf"]["summary"]["overall"]["avg_score"] > 0.7 and saved["decoding"]["max_new_tokens"] == 12
    assert not saved["files"][0]["passed"] and (out / "Modelfile").exists()


def test_gate_with_real_numbers(job):
    # SmolLM2-135M demo: HF 76.2%, a Q8_0 1 point down passes, a Q4_K_M 3.3 points down fails.
    assert job.quant_gate(0.7621, 0.7521, 0.02)[0]
    passed, reason = job.quant_gate(0.7621, 0.7291, 0.02)
    assert not passed and reason == "3.3 points below the HF model (max 2)"
    assert job.quant_gate(0.7621, 0.7700, 0.02) == (True, "0.8 points above it")
    assert job.quant_gate(0.7621, 0.7621, 0.02) == (True, "the HF model's score")
    assert not job.quant_gate(0.7621, 0.7621, 0.02, template_ok=False)[0]
    assert not job.quant_gate(0.7621, None, 0.02)[0]
    files = [{"file": "a.Q8_0.gguf", "passed": True}, {"file": "a.Q4_K_M.gguf", "passed": False}]
    assert job.files_to_publish(files) == ["a.Q8_0.gguf", "Modelfile", "README.md", "quantize-report.json"]
    assert job.files_to_publish([files[1]]) == [] and "a.Q4_K_M.gguf" in job.files_to_publish(files, force=True)


def test_k_quant_fallback_is_reported(gguf_ready_model, sdist, tmp_path):
    # hidden 64: no matrix has rows of 256 values, so llama.cpp quantizes them to Q5_0 instead of Q4_K.
    narrow = build_tiny_model(tmp_path / "narrow", hidden_size=64, head_dim=16, tokenizer_gguf=gguf_ready_model)
    result = run(QUANTIZE, "--model", narrow, "--output_dir", tmp_path / "out", "--quants", "q4_k_m",
                 "--llama_cpp_source", sdist, "--max_drop", 1, "--eval_limit", 1, "--max_new_tokens", 4,
                 "--threads", 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = json.loads((tmp_path / "out" / "quantize-report.json").read_text())["files"][0]
    assert entry["fallback"] > 0 and entry["fallback"] <= entry["tensors"] and entry["fallback_types"]
    assert entry["imatrix_entries"] == 0 and "importance matrix: off (--imatrix turns it on)" in result.stdout
    assert "fell back" in result.stdout


def test_dry_run_plans_sizes_and_uploads(gguf_ready_model, tmp_path):
    result = run(QUANTIZE, "--model", gguf_ready_model, "--output_dir", tmp_path, "--dry-run",
                 "--push-to-hub", "you/qmd-gguf", env={"HF_TOKEN": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("Q8_0", "Q4_K_M", "~", "(conversion step, not checked or published)", "you/qmd-gguf: qmd-gguf.Q8_0.gguf",
                 "dry run: nothing converted"):
        assert line in result.stdout
    assert not list(tmp_path.iterdir())


def test_push_without_token_fails_before_any_work(gguf_ready_model, tmp_path):
    result = run(QUANTIZE, "--model", gguf_ready_model, "--output_dir", tmp_path / "out",
                 "--push-to-hub", "you/qmd-gguf", env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode != 0 and "no Hugging Face token" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_quant_type_is_refused(tmp_path):
    result = run(QUANTIZE, "--quants", "q8_0,q3_xx", "--dry-run")
    assert result.returncode != 0 and "--quants: unknown ['q3_xx']" in result.stderr


def test_llama_cpp_pin_and_build_flags_agree_everywhere(job):
    """The pin and the CMake flags stand in the PEP 723 header (uv reads it), in the job's constants (the
    plan, the error message) and in scripts/llama_cpp_wheel.sh (the CI wheel); none can import the others."""
    import re
    import tomllib

    header = re.search(r"^# /// script\n(.*?)^# ///$", QUANTIZE.read_text(encoding="utf-8"), re.S | re.M).group(1)
    metadata = tomllib.loads("".join(line[2:] + "\n" for line in header.splitlines()))
    assert f"llama-cpp-python=={job.LLAMA_CPP_PYTHON}" in metadata["dependencies"]
    uv_flags = metadata["tool"]["uv"]["extra-build-variables"]["llama-cpp-python"]["CMAKE_ARGS"]
    assert uv_flags == job.LLAMA_CPP_CMAKE_ARGS
    script = (ROOT / "scripts" / "llama_cpp_wheel.sh").read_text(encoding="utf-8")
    assert re.search(r"^version=(\S+)", script, re.M).group(1) == job.LLAMA_CPP_PYTHON
    script_flags = re.search(r'CMAKE_ARGS="([^"]*)"', script).group(1).replace("\\\n", "")
    assert script_flags == job.LLAMA_CPP_CMAKE_ARGS

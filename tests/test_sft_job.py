"""jobs/sft.py through its CLI on a tiny model: train, checkpoint, resume, merge, eval, card, push gate."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import load_job

ROOT = Path(__file__).resolve().parent.parent
SFT = ROOT / "jobs" / "sft.py"
EVAL = ROOT / "jobs" / "eval.py"
TRAIN = ROOT / "tests" / "fixtures" / "train.jsonl"
TINY_RUN = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--save_steps", "2",
            "--eval_steps", "2", "--logging_steps", "1", "--eval_limit", "3", "--eval_max_new_tokens", "12",
            "--validation_fraction", "0.2", "--threads", "1"]


def run(script, *args, env=None, cwd=None):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=environment, cwd=cwd or ROOT)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    first = run(SFT, "--model", tiny_model, "--dataset", TRAIN, "--output_dir", out, "--max_steps", 2, *TINY_RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    # A second run with a longer schedule must pick up the checkpoint, as after a preemption.
    second = run(SFT, "--model", tiny_model, "--dataset", TRAIN, "--output_dir", out, "--max_steps", 4, *TINY_RUN)
    assert second.returncode == 0, second.stderr[-3000:]
    return out, first.stdout, second.stdout


def test_training_logs_progress_and_saves_checkpoints(trained):
    out, first, _ = trained
    assert "training from scratch" in first
    assert "step 2/2 (100%)  loss" in first
    assert (out / "checkpoint-2" / "adapter_model.safetensors").exists()


def test_rerun_resumes_from_the_newest_checkpoint(trained):
    out, _, second = trained
    assert f"training from {out}/checkpoint-2" in second
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry][:1] == [1]  # history kept


def test_merged_model_loads_and_report_and_card_are_written(trained):
    from transformers import AutoModelForCausalLM

    out, _, _ = trained
    model = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (out / "adapter" / "adapter_config.json").exists()
    report = json.loads((out / "merged" / "eval-report.json").read_text())
    assert report["summary"]["overall"]["n"] == 3 and len(report["rows"]) == 3
    card = (out / "merged" / "README.md").read_text()
    assert "## Eval on held-out queries" in card and "| **overall** | 3 |" in card
    assert "LoRA r16 / alpha 32" in card


def test_eval_job_writes_a_report_and_compares(trained, tmp_path):
    out, _, _ = trained
    report_path = tmp_path / "eval.json"
    result = run(EVAL, "--model", out / "merged", "--limit", 4, "--max_new_tokens", 8, "--report", report_path,
                 "--compare", out / "eval-report.json", "--threads", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["summary"]["overall"]["n"] == 4
    assert {"category", "query", "output", "score", "rating", "format_ok", "deductions"} <= set(report["rows"][0])
    assert "OVERALL" in result.stdout and "compared with" in result.stdout


def test_dry_run_prints_the_plan_without_training(tiny_model, tmp_path):
    result = run(SFT, "--model", tiny_model, "--dataset", TRAIN, "--output_dir", tmp_path / "x", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in ("plan", "train 15, validation 1", "5 epochs, batch 4 x accum 4", "on a10g-large", "dry run"):
        assert expected in result.stdout
    assert not (tmp_path / "x").exists()


def test_push_without_token_fails_before_loading_anything(tmp_path):
    start = time.time()
    result = run(SFT, "--push-to-hub", "me/model", "--output_dir", tmp_path / "x",
                 env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode != 0 and "no Hugging Face token" in result.stderr
    assert time.time() - start < 60 and not (tmp_path / "x").exists()
    bad = run(SFT, "--push-to-hub", "not-a-repo-id", env={"HF_TOKEN": "x"})
    assert "expected a repo id" in bad.stderr


def test_bad_training_row_names_file_line_and_field(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(TRAIN.read_text().splitlines()[0] + "\n" + '{"query": "x", "output": [["lex"]]}\n')
    result = run(SFT, "--dataset", data, "--dry-run")
    assert result.returncode != 0 and f"{data}:2: output: expected" in result.stderr
    assert "Traceback" not in result.stderr


def test_push_gate_never_publishes_a_worse_model():
    sft = load_job("sft")
    assert sft.push_gate(0.80, None, force=False)[0]
    assert sft.push_gate(0.80, 0.80, force=False)[0]
    assert not sft.push_gate(0.79, 0.80, force=False)[0]
    assert sft.push_gate(0.10, 0.80, force=True)[0]
    assert not sft.push_gate(None, 0.5, force=False)[0]

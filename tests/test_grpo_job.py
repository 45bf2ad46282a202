"""jobs/grpo.py through its CLI on a tiny model: GRPO steps, the KL guard, the held-out gate, the card."""

import json

import pytest

from conftest import ROOT
from test_sft_job import TRAIN, run

GRPO = ROOT / "jobs" / "grpo.py"
HELDOUT = ROOT / "evals" / "queries.txt"
TINY_GRPO = ["--dataset", TRAIN, "--per_device_train_batch_size", 4, "--num_generations", 4,
             "--max_completion_length", 16, "--eval_subset", 3, "--eval_limit", 6, "--eval_max_new_tokens", 12,
             "--eval_queries", HELDOUT, "--threads", 1, "--save_steps", 1]


def sft_report_scoring(path, score):
    """An SFT eval report in sft.py's shape whose every held-out query scored `score`."""
    queries = [line.strip() for line in HELDOUT.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = [{"category": "any", "query": q, "output": "", "score": score, "rating": "Excellent",
             "format_ok": True, "deductions": []} for q in queries]
    block = {"n": len(rows), "avg_score": score, "format_pass": 1.0, "ratings": {"Excellent": len(rows)}}
    path.write_text(json.dumps({"rows": rows, "summary": {"overall": block, "categories": {"any": block}},
                                "decoding": {"max_new_tokens": 12, "repetition_penalty": 1.0}}))
    return path


@pytest.fixture(scope="module")
def two_steps(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    result = run(GRPO, "--model", tiny_model, "--output_dir", out, "--max_steps", 2, "--eval_every", 1, *TINY_GRPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_two_grpo_steps_log_reward_kl_and_hard_zeros(two_steps):
    out, stdout = two_steps
    assert "no SFT eval report for these queries: evaluating the SFT model first" in stdout
    for step in (1, 2):
        line = next(line for line in stdout.splitlines() if f"step {step}/2 (" in line)
        assert all(f" {label} " in line for label in ("reward", "std", "kl", "len", "zeros"))
    assert (out / "checkpoint-2" / "adapter_model.safetensors").exists()


def test_merged_model_report_and_card_compare_with_sft(two_steps):
    from transformers import AutoModelForCausalLM

    out, stdout = two_steps
    model = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())
    report = json.loads((out / "eval-report.json").read_text())
    assert report["summary"]["overall"]["n"] == 6 and report["metrics"]["steps"] == 2
    assert [entry["step"] for entry in report["gate"]] == [1, 2] and report["stopped_early_at"] is None
    card = (out / "merged" / "README.md").read_text()
    assert "## SFT vs GRPO on held-out queries" in card and "| **overall** |" in card
    assert "SFT vs GRPO on the held-out queries:" in stdout


def test_zero_kl_is_refused_unless_asked_for(tiny_model, tmp_path):
    refused = run(GRPO, "--model", tiny_model, "--output_dir", tmp_path / "a", "--beta", 0, "--dry-run", *TINY_GRPO)
    assert refused.returncode != 0 and "--beta 0 removes the KL anchor" in refused.stderr
    allowed = run(GRPO, "--model", tiny_model, "--output_dir", tmp_path / "b", "--beta", 0, "--allow_zero_kl",
                  "--dry-run", *TINY_GRPO)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "beta 0," in allowed.stdout and "dry run: nothing trained" in allowed.stdout


def test_gate_stops_early_when_grpo_falls_below_sft(tiny_model, tmp_path):
    # The tiny random model scores 0 on everything; an SFT report of 0.9 everywhere is a forced drop.
    sft_report = sft_report_scoring(tmp_path / "sft-report.json", 0.9)
    out = tmp_path / "run"
    result = run(GRPO, "--model", tiny_model, "--output_dir", out, "--max_steps", 4, "--eval_every", 1,
                 "--sft_report", sft_report, *TINY_GRPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "more than 2 points below SFT's 90.0%: stopping" in result.stdout
    assert "restored the best adapter: step 1" in result.stdout
    report = json.loads((out / "eval-report.json").read_text())
    assert report["stopped_early_at"] == 1 and report["metrics"]["steps"] == 1
    assert report["sft"]["avg_score"] == 0.9 and report["summary"]["overall"]["avg_score"] < 0.88


def test_dry_run_plans_without_training_and_push_needs_a_token(tiny_model, tmp_path):
    plan = run(GRPO, "--model", tiny_model, "--output_dir", tmp_path / "run", "--dry-run", *TINY_GRPO)
    assert plan.returncode == 0, plan.stderr[-2000:]
    for needle in ("prompts", "4 generations", "beta 0.04", "lr 5e-07", "on a10g-large", "dry run: nothing trained"):
        assert needle in plan.stdout
    assert not (tmp_path / "run").exists()
    no_token = run(GRPO, "--model", tiny_model, "--push-to-hub", "you/qmd-grpo", *TINY_GRPO,
                   env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert no_token.returncode != 0 and "no Hugging Face token" in no_token.stderr

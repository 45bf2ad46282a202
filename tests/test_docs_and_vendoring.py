"""SCORING.md covers every rule; every job carries an exact copy of reward.py's rules."""

import ast
import subprocess
import sys
from pathlib import Path

import reward

ROOT = Path(__file__).resolve().parent.parent
JOBS_THAT_SCORE = ["data.py", "eval.py", "sft.py", "grpo.py", "quantize.py"]


def test_scoring_md_explains_every_rule():
    scoring = (ROOT / "SCORING.md").read_text(encoding="utf-8")
    rules = [reward.find_leakage, reward.find_invalid_lines, reward.find_truncation, *reward.HACK_RULES]
    rules += [rule for _, rule in reward.POINT_RULES]
    missing = [rule.__name__ for rule in rules if f"`{rule.__name__}`" not in scoring]
    assert not missing, f"SCORING.md does not explain: {missing}"


def test_every_existing_scoring_job_carries_the_current_reward():
    sys.path.insert(0, str(ROOT / "scripts"))
    import vendor_reward

    block = vendor_reward.reward_block()
    present = [name for name in JOBS_THAT_SCORE if (ROOT / "jobs" / name).exists()]
    for name in present:
        text = (ROOT / "jobs" / name).read_text(encoding="utf-8")
        assert vendor_reward.split_at_block(text, name)[1] == block, f"jobs/{name}: stale reward copy, run `just vendor`"
        ast.parse(text)


def test_vendor_check_detects_a_stale_copy(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import vendor_reward

    job = "print('before')\n" + vendor_reward.reward_block().replace("HACK_FACTOR = 0.5", "HACK_FACTOR = 0.9") + "print('after')\n"
    before, block, after = vendor_reward.split_at_block(job, "job.py")
    assert block != vendor_reward.reward_block()
    assert before == "print('before')\n" and after == "print('after')\n"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "vendor_reward.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout

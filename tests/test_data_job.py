"""jobs/data.py: schema errors name file:line:field, duplicates and contamination are caught, build loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "data.py"
FIXTURE = ROOT / "tests" / "fixtures" / "broken.jsonl"


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True, cwd=cwd)


def example(query, category="programming"):
    return {
        "query": query,
        "category": category,
        "output": [
            ["hyde", f"Notes on {query}: the fix was to pin the version and rerun the failing step with logging on."],
            ["lex", f"{query} fix"],
            ["vec", f"how did we solve the {query} problem last time"],
        ],
    }


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_validate_reports_file_line_and_field():
    result = run("validate", str(FIXTURE))
    assert result.returncode == 1
    out = result.stdout
    where = f"{FIXTURE}"
    assert f"{where}:2: row: needs at least one lex and one vec line" in out
    assert f"{where}:3: category: Field required" in out
    assert f"{where}:4: json: Expecting value" in out
    assert f"{where}:5: row: lines must come in the order hyde, lex, vec" in out
    assert f"{where}:6: output[1][0]: Input should be 'hyde', 'lex' or 'vec'" in out
    assert f"{where}:7: row: blank line" in out
    assert f"{where}:8: row: query asks /only:lex, so output must hold only lex lines" in out
    assert f"{where}:9: output: Value error" not in out and f"{where}:9: output: lex text must be one non-empty line" in out
    assert "1 valid examples in 1 files" in out
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = run("validate", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 1 and "nope.jsonl: cannot read" in result.stdout


def test_check_catches_duplicates_near_duplicates_and_contamination(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [
        example("docker compose networking"),
        example("Docker Compose networking!"),  # same after folding case and punctuation
        example("networking docker compose"),  # same words reordered
        example("postgres vacuum bloat"),
        example("sourdough starter feeding"),
    ])
    evals = tmp_path / "queries.txt"
    evals.write_text("# programming\nPostgres VACUUM bloat\nsourdough starters feed\nbrand new query here\n", encoding="utf-8")
    result = run("check", str(data), "--eval", str(evals))
    assert result.returncode == 1
    out = result.stdout
    assert f"{data}:2: query: duplicate of {data}:1" in out
    assert f"{data}:3: query: near-duplicate (1.00) of {data}:1" in out
    assert "contamination: 'Postgres VACUUM bloat' is training query" in out
    assert "contamination (1.00): 'sourdough starters feed'" in out
    assert "brand new query" not in out


def test_check_is_clean_on_distinct_queries(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [example("docker compose networking"), example("postgres vacuum bloat")])
    result = run("check", str(data), "--eval", str(tmp_path / "absent.txt"))
    assert result.returncode == 0, result.stdout


def test_score_fails_below_threshold_and_lists_reasons(tmp_path):
    off_topic = example("kubernetes ingress tls")
    off_topic["output"] = [["lex", "sourdough starter"], ["vec", "how do I feed a sourdough starter"]]
    data = write_jsonl(tmp_path / "a.jsonl", [example("docker compose networking"), off_topic])
    result = run("score", str(data), "--min", "0.8")
    assert result.returncode == 1
    assert f"{data}:2 kubernetes ingress tls" in result.stdout
    assert "covers 0/3 of the query's key terms" in result.stdout


def test_stats_counts_categories_and_languages(tmp_path):
    rows = [example("docker compose networking"), example("postgres vacuum bloat", "devops_cloud")]
    rows.append({**example("Sauerteig füttern wie oft", "non_english"), "lang": "de"})
    data = write_jsonl(tmp_path / "a.jsonl", rows)
    result = run("stats", str(data), "--json")
    stats = json.loads(result.stdout)
    assert stats["examples"] == 3
    assert stats["categories"] == {"programming": 1, "devops_cloud": 1, "non_english": 1}
    assert stats["languages"] == {"en": 2, "de": 1}
    assert stats["lines_per_example"]["lex"] == {"1": 3} or stats["lines_per_example"]["lex"] == {1: 3}


def test_build_writes_a_dataset_with_the_exact_prompt(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [example(f"query number {word}") for word in "alpha beta gamma delta epsilon zeta eta theta".split()]
    rows.append(example("query number alpha"))  # duplicate: dropped by build
    data = write_jsonl(tmp_path / "a.jsonl", rows)
    out = tmp_path / "dataset"
    result = run("build", str(data), "--out", str(out), "--validation-fraction", "0.25")
    assert result.returncode == 0, result.stderr
    loaded = datasets.load_from_disk(str(out))
    assert len(loaded["train"]) == 6 and len(loaded["validation"]) == 2
    row = loaded["train"][0]
    assert row["prompt"] == [{"role": "user", "content": f"/no_think Expand this search query: {row['query']}"}]
    assert row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"].startswith("hyde: Notes on ")
    assert (out / "README.md").read_text(encoding="utf-8").count("| programming | 8 |") == 1
    again = tmp_path / "again"
    run("build", str(data), "--out", str(again), "--validation-fraction", "0.25")
    assert datasets.load_from_disk(str(again))["train"]["query"] == loaded["train"]["query"]  # seeded


def test_push_without_token_fails_fast_and_dry_run_shows_the_card(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [example("docker compose networking"), example("postgres vacuum bloat")])
    env_result = subprocess.run([sys.executable, str(JOB), "push", str(data), "--repo-id", "me/data",
                                 "--out", str(tmp_path / "ds")], capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")})
    assert env_result.returncode == 1 and "no Hugging Face token" in env_result.stderr
    assert not (tmp_path / "ds").exists()
    dry = run("push", str(data), "--repo-id", "me/data", "--out", str(tmp_path / "ds"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "push plan: me/data" in dry.stdout and "# me/data" in dry.stdout and "dry run: nothing pushed" in dry.stdout


def test_other_modes_and_negations_are_not_duplicates(tmp_path):
    only = example("kombucha scoby mold /only:lex")
    only["output"] = [["lex", "kombucha scoby mold fuzzy"], ["lex", "scoby white spots yeast"]]
    data = write_jsonl(tmp_path / "a.jsonl", [
        example("kombucha scoby mold"),
        only,
        example('"out of memory" pytorch -training'),
        example("out of memory pytorch training"),
    ])
    result = run("check", str(data), "--eval", str(tmp_path / "absent.txt"))
    assert result.returncode == 0, result.stdout

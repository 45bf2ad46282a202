"""The reward against a red-team set written without reading its code: hacks <= 0.5, goods >= 0.75."""

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reward

CASES = Path(__file__).resolve().parent / "cases"
HACKS = [json.loads(line) for line in (CASES / "hacks.jsonl").read_text(encoding="utf-8").splitlines()]
GOODS = [json.loads(line) for line in (CASES / "goods.jsonl").read_text(encoding="utf-8").splitlines()]
# Hacks the rules are known to miss, with why (SCORING.md, "Known limits").
KNOWN_MISSES = {
    "Berlin Mietpreisbremse 2024": "topic lives in a German compound noun the rules cannot tell from a name",
    "aws s3 presigned url /only:lex": "last line cut to 'pres': a 4-letter stub reads like a word (home, time)",
}


def test_the_set_is_large_and_varied():
    assert len(HACKS) >= 150 and len(Counter(case["kind"] for case in HACKS)) >= 15
    assert len(GOODS) >= 30 and len(Counter(case["kind"] for case in GOODS)) >= 10


@pytest.mark.parametrize("case", [c for c in HACKS if c["query"] not in KNOWN_MISSES],
                         ids=lambda c: f"{c['kind']}:{c['query'][:30]}")
def test_hack_scores_at_most_half(case):
    result = reward.score_expansion_detailed(case["query"], case["text"])
    assert result["score"] <= 0.5, (case["why"], result["deductions"])


@pytest.mark.parametrize("case", GOODS, ids=lambda c: f"{c['kind']}:{c['query'][:30]}")
def test_good_expansion_scores_at_least_three_quarters(case):
    result = reward.score_expansion_detailed(case["query"], case["text"])
    assert result["score"] >= 0.75, result["deductions"]


def test_known_misses_are_still_missed():
    """When a rule starts catching one of these, move it out of KNOWN_MISSES."""
    for case in HACKS:
        if case["query"] in KNOWN_MISSES:
            assert reward.score_expansion(case["query"], case["text"]) > 0.5


LINE = st.tuples(st.sampled_from(["hyde", "lex", "vec", "Lex", "vex", "", "- lex"]), st.text(max_size=80))


@settings(max_examples=400, deadline=None)
@given(query=st.one_of(st.none(), st.text(max_size=60)), lines=st.lists(LINE, max_size=9),
       junk=st.one_of(st.none(), st.text(max_size=200), st.binary(max_size=100)))
def test_fuzz_never_raises_and_stays_in_range(query, lines, junk):
    text = "\n".join(f"{kind}: {payload}" if kind else payload for kind, payload in lines)
    for candidate in (text, junk):
        result = reward.score_expansion_detailed(query, candidate)
        assert 0.0 <= result["score"] <= 1.0
        assert "internal error" not in " ".join(result["deductions"]), result["deductions"]
        assert result["rating"] in {"Excellent", "Good", "Acceptable", "Poor", "Failed"}
    assert reward.reward_func([text, None], prompts=[query, None]) == [
        reward.score_expansion(reward.query_from_prompt(query), text), 0.0]

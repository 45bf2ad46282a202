"""The reward's public API and each rule, with a passing and a failing case."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import reward

ROOT = Path(__file__).resolve().parent.parent

GOOD_QUERY = "docker compose networking"
GOOD = (
    "hyde: Services in one docker compose file share a default bridge network and reach each other by service name.\n"
    "lex: docker compose networking\n"
    "lex: compose bridge network service name\n"
    "vec: how do containers in the same docker compose project talk to each other\n"
    "vec: why can my compose service not reach the database container"
)


def score(query, text):
    return reward.score_expansion(query, text)


def detail(query, text):
    return reward.score_expansion_detailed(query, text)


def test_prompt_and_messages():
    assert reward.PROMPT_TEMPLATE == "/no_think Expand this search query: {query}"
    assert reward.build_messages("jwt") == [{"role": "user", "content": "/no_think Expand this search query: jwt"}]


def test_good_expansion_scores_full_marks():
    result = detail(GOOD_QUERY, GOOD)
    assert result["score"] == 1.0
    assert result["rating"] == "Excellent"
    assert result["format_ok"] is True
    assert result["deductions"] == []


def test_parse_expansion_splits_types_invalid_and_leaks():
    parsed = reward.parse_expansion("lex: a b\n\nvec: how do I x\n- lex: bullet\n<|im_end|>")
    assert parsed.of("lex") == ["a b"]
    assert parsed.of("vec") == ["how do I x"]
    assert parsed.invalid == ["- lex: bullet", "<|im_end|>"]
    assert parsed.leaks == ["<|im_end|>"]


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "\n<|im_end|>",
        "<think>the user wants docker</think>\n" + GOOD,
        GOOD.replace("lex: docker compose networking", "Lex: docker compose networking"),
        GOOD.replace("lex: docker compose networking", "vex: docker compose networking"),
        GOOD.replace("lex: docker compose networking", "- lex: docker compose networking"),
        GOOD.replace("lex: docker compose networking", "**lex:** docker compose networking"),
        '{"lex": ["docker compose networking"], "vec": ["how do containers talk"]}',
        GOOD + "\nassistant",
        GOOD + "\nHere are some more ideas for your search.",
        GOOD.rsplit(" ", 3)[0] + " the",  # cut off mid-line
        'vec: why is the connection to my docker container refused\nlex: "connection refused docker',
    ],
)
def test_hard_failures_score_zero(text):
    result = detail(GOOD_QUERY, text)
    assert result["score"] == 0.0 and result["rating"] == "Failed" and not result["format_ok"]


@pytest.mark.parametrize(
    "query,text,reason",
    [
        (
            "Tesla battery degradation",
            "hyde: Tesla shares rose 5% after the earnings call beat expectations on deliveries.\n"
            "lex: Tesla stock price\nlex: Tesla earnings call\nvec: how did Tesla stock perform this quarter",
            "keeps the entity but not the topic",
        ),
        (
            GOOD_QUERY,
            "hyde: Preheat the oven to 220C and bake the sourdough for 40 minutes with steam.\n"
            "lex: sourdough baking temperature\nvec: how long should I bake sourdough bread",
            "covers 0/3",
        ),
        (GOOD_QUERY, GOOD + "\nlex: ...", "empty or punctuation-only"),
        (GOOD_QUERY, GOOD + "\nlex: docker networks\nlex: compose dns", "4 lex lines"),
        (GOOD_QUERY, GOOD.replace("lex: compose bridge network service name", "lex: networking compose docker"),
         "duplicate lines"),
        (GOOD_QUERY, GOOD.replace("lex: compose bridge network service name",
                                  "lex: docker docker docker compose networking"), "keyword stuffing"),
        (GOOD_QUERY, "hyde: docker compose networking docker compose networking explained here\n"
                     "lex: docker compose networking guide\nvec: docker compose networking tutorial", "only repeats the query"),
        (GOOD_QUERY, GOOD.replace("lex: compose bridge network service name",
                                  "lex: information about docker compose networking"), "generic filler"),
        (GOOD_QUERY + " /only:lex", GOOD, "/only:lex asked"),
        (GOOD_QUERY, GOOD.replace("lex: compose bridge network service name", "lex: x"), "too short"),
        (GOOD_QUERY, GOOD.replace("hyde: Services", "hyde: " + "docker compose networks " * 30), "too long"),
        (
            "Sauerteig Starter füttern wie oft",
            "hyde: Feed a sourdough starter once a day at room temperature, or weekly when it lives in the fridge.\n"
            "lex: Sauerteig Starter füttern\nlex: sourdough starter feeding schedule\n"
            "vec: how often should I feed my sourdough starter",
            "query is de",
        ),
        (
            "東京 ラーメン おすすめ",
            "hyde: Fuunji near Shinjuku station is famous for its thick tsukemen and long queues.\n"
            "lex: 東京 ラーメン\nvec: what are the best ramen shops in Tokyo",
            "cjk script",
        ),
    ],
)
def test_exploits_score_at_most_half(query, text, reason):
    result = detail(query, text)
    assert result["score"] <= 0.5, result
    assert any(reason in hack for hack in result["hacks"]), result["hacks"]


@pytest.mark.parametrize(
    "query,text",
    [
        (
            "Sauerteig Starter füttern wie oft",
            "hyde: Den Sauerteig-Starter bei Zimmertemperatur täglich füttern, im Kühlschrank reicht einmal pro Woche.\n"
            "lex: Sauerteig Starter füttern\nlex: Anstellgut Fütterung Rhythmus\n"
            "vec: wie oft muss ich meinen Sauerteig füttern",
        ),
        (
            "東京 ラーメン おすすめ",
            "hyde: 新宿の風雲児は濃厚なつけ麺で有名で、平日の昼でも行列ができる東京の人気ラーメン店です。\n"
            "lex: 東京 ラーメン 人気店\nlex: 新宿 つけ麺 おすすめ\nvec: 東京でおすすめのラーメン屋はどこですか",
        ),
        (
            "Sarah's Q4 presentation",
            "hyde: Sarah's Q4 deck: revenue up 12%, EMEA hiring plan, final version in the shared drive.\n"
            "lex: Sarah Q4 presentation\nlex: Q4 review slides Sarah\n"
            "vec: where are the slides Sarah presented for the fourth quarter review",
        ),
        ("kubernetes pod restart /only:lex", "lex: kubectl rollout restart deployment\nlex: kubernetes pod restart policy"),
        ("jwt", "hyde: A JWT has three base64url parts, header, payload and signature; verify the signature "
                "before trusting claims.\nlex: jwt token signature\nlex: json web token claims\n"
                "vec: how do I validate a JWT and read its claims"),
    ],
)
def test_good_expansions_score_high(query, text):
    result = detail(query, text)
    assert result["score"] >= 0.75, result


def test_exploits_compound():
    off_topic_and_filler = (
        "hyde: Preheat the oven to 220C and bake the sourdough for 40 minutes with steam.\n"
        "lex: information about sourdough baking\nvec: how long should I bake sourdough bread"
    )
    assert score(GOOD_QUERY, off_topic_and_filler) <= 0.25


def test_missing_hyde_and_entities_lose_points_not_everything():
    text = "lex: compose bridge network\nvec: how do containers in one docker compose project talk to each other"
    result = detail(GOOD_QUERY, text)
    assert 0.7 < result["score"] < 1.0
    assert "no hyde line" in result["deductions"]


def test_chatter_loses_the_no_think_bonus():
    text = GOOD.replace("vec: why can my", "vec: let me think, why can my")
    result = detail(GOOD_QUERY, text)
    assert result["points"]["no_think"] == 0 and result["score"] < 1.0


@pytest.mark.parametrize("junk", [None, "", " \n\n ", b"\xff\xfe\x00lex", "lex:", "\x00" * 50, "lex: " + "é" * 100000,
                                  "vec: \u202e\u200b", 12345, ["lex: x"]])
def test_never_raises_and_stays_in_range(junk):
    for query in (junk, GOOD_QUERY):
        value = reward.score_expansion(query, junk)
        assert 0.0 <= value <= 1.0


def test_reward_func_plain_and_conversational():
    prompt = (
        "<|im_start|>user\n/no_think Expand this search query: docker compose networking<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    messages = [{"role": "user", "content": "/no_think Expand this search query: docker compose networking"}]
    off_topic = "lex: sourdough bread\nvec: how do I bake sourdough bread at home"
    plain = reward.reward_func([GOOD, off_topic], prompts=[prompt, prompt])
    chat = reward.reward_func([[{"role": "assistant", "content": GOOD}]], prompts=[messages])
    assert plain[0] == 1.0 and plain[1] <= 0.5
    assert chat == [1.0]
    assert reward.reward_func([GOOD], query=[GOOD_QUERY]) == [1.0]
    assert reward.reward_func([None], prompts=None) == [0.0]
    assert reward.reward_func(None) == []


def test_query_from_prompt_handles_templates():
    assert reward.query_from_prompt("Expand this search query: a b c<|im_end|>\n") == "a b c"
    qwen = "<|im_start|>user\n/no_think Expand this search query: x y<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert reward.query_from_prompt(qwen) == "x y"
    assert reward.query_from_prompt([{"role": "user", "content": reward.PROMPT_TEMPLATE.format(query="q")}]) == "q"


def test_cli_breakdown_and_jsonl(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "reward.py"), GOOD_QUERY, GOOD.replace("\n", "\\n")],
                         capture_output=True, text=True, check=True).stdout
    assert "score:      1.000  (Excellent)" in out
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"query": GOOD_QUERY, "output": [["lex", "docker compose networking"], ["vec", "how do containers talk"]]})
        + "\n" + json.dumps({"query": GOOD_QUERY, "completion": GOOD}) + "\nnot json\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(ROOT / "reward.py"), "--jsonl", str(rows)], capture_output=True, text=True)
    assert f"{rows}:3: json:" in result.stdout
    assert "2 rows, average" in result.stdout
    assert result.returncode == 1  # a broken row is an error


def test_cli_quiet_when_output_is_cut_short(tmp_path):
    rows = tmp_path / "rows.jsonl"
    row = json.dumps({"query": GOOD_QUERY, "completion": "lex: x"})
    rows.write_text("\n".join([row] * 3000) + "\n", encoding="utf-8")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'reward.py'))} --jsonl {shlex.quote(str(rows))} --show 3000 | head -2"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True)
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == ""  # no BrokenPipeError traceback
    assert result.returncode == 0

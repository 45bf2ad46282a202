"""Throughput of reward.score_expansion on typical expansions, single-threaded.

Usage: python scripts/bench_reward.py [--seconds 3]
Scores the training data (data/*.jsonl) if present, else a built-in sample, round-robin,
and prints calls per second, cold (empty query cache) and warm.
"""

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import reward  # noqa: E402

SAMPLE = [
    ("docker compose networking",
     "hyde: Services in one compose file share a default bridge network and reach each other by service name.\n"
     "lex: docker compose networking\nlex: compose bridge network service name\n"
     "vec: how do containers in the same docker compose project talk to each other"),
    ("Sarah's Q4 presentation",
     "hyde: Sarah's Q4 deck covers revenue up 12% and the EMEA hiring plan; final version in the shared drive.\n"
     "lex: Sarah Q4 presentation\nlex: Q4 review slides Sarah\nvec: where are the slides Sarah presented for Q4"),
]


def load_pairs():
    pairs = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "data", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                pairs.append((row["query"], reward.expansion_text(row["output"])))
    return pairs or SAMPLE


def calls_per_second(pairs, seconds, clear_cache):
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if clear_cache:
            reward.analyse_query.cache_clear()
        for query, text in pairs:
            reward.score_expansion(query, text)
        calls += len(pairs)
    return calls / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pairs = load_pairs()
    print(f"{len(pairs)} expansions, avg {sum(len(t) for _, t in pairs) / len(pairs):.0f} chars")
    cold = calls_per_second(pairs, args.seconds, clear_cache=True)
    warm = calls_per_second(pairs, args.seconds, clear_cache=False)
    print(f"cold query cache: {cold:,.0f} calls/s")
    print(f"warm query cache: {warm:,.0f} calls/s  (GRPO scores each prompt num_generations times)")
    print(f"goal >= 10,000 calls/s: {'met' if cold >= 10_000 else 'NOT met'} (cold)")


if __name__ == "__main__":
    main()

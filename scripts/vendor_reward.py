"""Copy reward.py's scoring block into every job, or check that the copies match.

Usage:
    python scripts/vendor_reward.py          # rewrite the block in jobs/*.py
    python scripts/vendor_reward.py --check  # exit 1 and name the stale jobs

`hf jobs uv run` uploads only the job script, so each job that scores carries reward.py's rules
verbatim between the BEGIN/END marker lines.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "# >>> reward.py scoring rules"
END = "# <<< reward.py scoring rules <<<"


def split_at_block(text, name):
    """(before, block, after) where block runs from the BEGIN line through the END line."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.startswith(END)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SystemExit(f"{name}: expected one '{BEGIN}' line followed by one '{END}' line")
    start, end = starts[0], ends[0] + 1
    return "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])


def reward_block():
    return split_at_block((ROOT / "reward.py").read_text(encoding="utf-8"), "reward.py")[1]


def jobs_with_block():
    return [path for path in sorted((ROOT / "jobs").glob("*.py")) if BEGIN in path.read_text(encoding="utf-8")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    args = parser.parse_args()
    block, stale = reward_block(), []
    for path in jobs_with_block():
        before, current, after = split_at_block(path.read_text(encoding="utf-8"), path.name)
        if current == block:
            continue
        stale.append(path.name)
        if not args.check:
            tmp = path.with_suffix(".py.tmp")
            tmp.write_text(before + block + after, encoding="utf-8")
            tmp.replace(path)
    if args.check and stale:
        print(f"stale reward copy in: {', '.join(stale)} (run `just vendor`)")
        return 1
    print(f"{'stale' if args.check else 'updated'}: {', '.join(stale) or 'none'}; "
          f"{len(jobs_with_block())} jobs carry the reward")
    return 0


if __name__ == "__main__":
    sys.exit(main())

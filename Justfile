# The map of everyday commands. `just` lists them.
python := ".venv/bin/python"

default:
    @just --list

# create .venv and install what the tests need (idempotent)
setup:
    @[ -x {{python}} ] || python3 -m venv .venv
    @{{python}} -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# run the test suite
test *args: setup
    {{python}} -m pytest {{args}}

# score one expansion: just score "query" $'lex: ...\nvec: ...'
score query text:
    python3 reward.py "{{query}}" "{{text}}"

# score a JSONL file of {query, output} or {query, completion} rows
score-file file:
    python3 reward.py --jsonl {{file}}

# reward throughput, calls per second (goal >= 10,000)
bench-reward:
    python3 scripts/bench_reward.py

# copy reward.py's scoring rules into every job (jobs must run standalone on HF Jobs)
vendor:
    python3 scripts/vendor_reward.py

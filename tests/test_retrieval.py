"""jobs/retrieval.py on a tiny BEIR set with known answers: loader, BM25, dense, fusion, metrics, cache.

Everything runs for real (bm25s, ir-measures, scipy, sentence-transformers on a tiny random BERT):
the known answers come from how the fixture is built (tests/fixtures/beir-tiny/README.md).
"""

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import load_job

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "beir-tiny"
LOG2_3 = math.log2(3)

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")
retrieval = load_job("retrieval")


@pytest.fixture(scope="module")
def data():
    return retrieval.load_beir(str(FIXTURE))


@pytest.fixture(scope="module")
def bm25(data):
    return retrieval.Bm25Index(data.doc_texts)


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    """A randomly initialised one-layer BERT as a sentence-transformers model, with a vocabulary of the fixture's words."""
    pytest.importorskip("sentence_transformers")
    import re

    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:  # sentence-transformers 6 moved the modules
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models
    folder = tmp_path_factory.mktemp("tiny-embedder")
    words = set()
    for name in ("corpus.jsonl", "queries.jsonl"):
        words.update(re.findall(r"\w+|[^\w\s]", (FIXTURE / name).read_text(encoding="utf-8").lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    bert_folder = folder / "bert"
    BertModel(config).save_pretrained(bert_folder)
    tokenizer.save_pretrained(bert_folder)
    transformer = models.Transformer(str(bert_folder), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, models.Pooling(32, "mean"), models.Normalize()])
    model.save(str(folder / "st"))
    return str(folder / "st")


def write_cache(path, model, queries, outputs, config=None):
    config = config or retrieval.RetrievalConfig()
    key, decoding = retrieval.model_key(model), retrieval.decoding_key(config)
    rows = [{"model": key, "decoding": decoding, "query": q, "output": outputs.get(q, "")} for q in queries]
    retrieval.append_cache(str(path), rows)


# ---------------------------------------------------------------- loader


def test_loader_reads_the_fixture(data):
    assert data.doc_ids == ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"]
    assert data.doc_texts[0] == "Sourdough starter Feed the sourdough starter with flour and water every day to keep the yeast active."
    assert data.doc_texts[7].startswith("Overwatering")  # empty title: the text alone
    assert list(data.queries) == ["q1", "q2", "q3", "q4", "q5"]  # q6 judged 0 only, q7 unjudged
    assert data.qrels["q2"] == {"d2": 2, "d6": 1}


def broken_copy(tmp_path, name, edit):
    folder = tmp_path / "beir"
    shutil.copytree(FIXTURE, folder)
    path = folder / name
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(edit(lines)), encoding="utf-8")
    return folder, path


@pytest.mark.parametrize("name, edit, where, message", [
    ("corpus.jsonl", lambda lines: lines[:2] + ['{"_id": "d3", "text": broken\n'] + lines[3:], 3, "invalid JSON"),
    ("corpus.jsonl", lambda lines: lines + [lines[1]], 9, "duplicate `_id` 'd2' (first on line 2)"),
    ("corpus.jsonl", lambda lines: lines[:4] + ['{"_id": "d5", "title": "no text"}\n'] + lines[5:], 5,
     "`text` must be a string"),
    ("corpus.jsonl", lambda lines: lines[:1] + ['{"title": "no id", "text": "x"}\n'] + lines[2:], 2,
     "missing or empty `_id`"),
    ("queries.jsonl", lambda lines: lines[:5] + ['["q6", "a list"]\n'] + lines[6:], 6, "expected a JSON object"),
    ("qrels/test.tsv", lambda lines: lines[:3] + ["q2\td99\t1\n"] + lines[4:], 4, "corpus id 'd99' is not in corpus.jsonl"),
    ("qrels/test.tsv", lambda lines: lines[:2] + ["q9\td2\t1\n"] + lines[3:], 3, "query id 'q9' is not in queries.jsonl"),
    ("qrels/test.tsv", lambda lines: lines[:5] + ["q4\td4\tyes\n"] + lines[6:], 6, "score 'yes' is not an integer"),
    ("qrels/test.tsv", lambda lines: lines[:2] + ["q1 d1 1\n"] + lines[3:], 3, "expected 3 tab-separated columns"),
])
def test_loader_errors_name_file_and_line(tmp_path, name, edit, where, message):
    folder, path = broken_copy(tmp_path, name, edit)
    with pytest.raises(retrieval.BeirFormatError) as error:
        retrieval.load_beir(str(folder))
    assert str(error.value).startswith(f"{path}:{where}: ")
    assert message in str(error.value)


def test_loader_names_missing_files_and_empty_qrels(tmp_path):
    folder, _ = broken_copy(tmp_path, "queries.jsonl", lambda lines: lines)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing qrels/test.tsv"):
        retrieval.load_beir(str(folder))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq6\td7\t0\n", encoding="utf-8")
    with pytest.raises(retrieval.BeirFormatError, match=r"test.tsv:1: no query has a positive judgement"):
        retrieval.load_beir(str(folder))


def test_loader_reads_gzipped_files_and_the_job_reports_errors_without_a_traceback(tmp_path):
    import gzip

    folder = tmp_path / "gz"
    shutil.copytree(FIXTURE, folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        with gzip.open(folder / f"{name}.gz", "wt", encoding="utf-8") as handle:
            handle.write((folder / name).read_text(encoding="utf-8"))
        (folder / name).unlink()
    assert retrieval.load_beir(str(folder)).doc_ids[-1] == "d8"
    with pytest.raises(SystemExit, match=r"retrieval: .*no such folder"):
        retrieval.main(["--dataset", str(tmp_path / "nowhere"), "--no_dense"])


# ---------------------------------------------------------------- metrics from ir-measures


def test_a_perfect_run_scores_one_and_a_reversed_run_less(data):
    perfect = {qid: sorted(judged, key=lambda doc: -judged[doc]) for qid, judged in data.qrels.items()}
    values = retrieval.per_query_metrics(data.qrels, perfect)
    assert all(v == pytest.approx(1.0) for v in values["nDCG@10"].values())
    assert all(v == pytest.approx(1.0) for v in values["R@100"].values())
    # q2: d2 (gain 2) and d6 (gain 1) swapped. trec_eval's nDCG: linear gains, log2(rank + 1) discounts.
    reversed_run = dict(perfect, q2=["d6", "d2"])
    value = retrieval.per_query_metrics(data.qrels, reversed_run)["nDCG@10"]["q2"]
    assert value == pytest.approx((1 + 2 / LOG2_3) / (2 + 1 / LOG2_3))
    assert value < 1.0


def test_metrics_count_unretrieved_queries_as_zero_and_read_ranks_not_scores(data):
    run = {"q1": ["d7", "d8", "d1"], "q3": []}  # q2, q4, q5 missing: each 0
    values = retrieval.per_query_metrics(data.qrels, run)
    assert set(values["nDCG@10"]) == set(data.qrels)
    assert values["nDCG@10"]["q1"] == pytest.approx(1 / 2)  # rank 3: 1 / log2(4)
    assert values["nDCG@10"]["q3"] == values["R@100"]["q2"] == 0.0
    # depth: a relevant document at rank 11 counts for Recall@100 but not nDCG@10
    late = {"q1": [f"x{i}" for i in range(10)] + ["d1"]}
    values = retrieval.per_query_metrics(data.qrels, late)
    assert values["nDCG@10"]["q1"] == 0.0 and values["R@100"]["q1"] == 1.0


def test_paired_comparison_counts_and_tests():
    same = retrieval.paired_comparison({"a": 0.5, "b": 1.0}, {"a": 0.5, "b": 1.0})
    assert same["delta"] == 0.0 and same["p_value"] == 1.0 and same["ties"] == 2
    before = {str(i): 0.2 + 0.01 * i for i in range(30)}
    after = {qid: value + 0.3 + 0.01 * (int(qid) % 3) for qid, value in before.items()}
    result = retrieval.paired_comparison(before, after)
    assert result["wins"] == 30 and result["losses"] == 0
    assert result["delta"] == pytest.approx(0.31)
    assert result["p_value"] < 1e-6
    mixed = retrieval.paired_comparison({"a": 0.0, "b": 1.0, "c": 0.5}, {"a": 1.0, "b": 0.0, "c": 0.5})
    assert (mixed["wins"], mixed["losses"], mixed["ties"]) == (1, 1, 1) and mixed["p_value"] == pytest.approx(1.0)


# ---------------------------------------------------------------- fusion


def test_rrf_sums_reciprocal_ranks():
    fused = retrieval.rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [doc for doc, _ in fused] == ["a", "c", "b"]
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)


def test_rrf_ties_depth_k_and_empty_lists():
    assert [doc for doc, _ in retrieval.rrf([[5], [2]])] == [2, 5]  # equal scores: smaller (earlier) document first
    assert retrieval.rrf([]) == [] and retrieval.rrf([[], []]) == []
    assert [doc for doc, _ in retrieval.rrf([[1, 2, 3], [3]], depth=2)] == [3, 1]
    # k decides how much agreement beats a single top rank: x is first in one list, y second in two
    lists = [["x", "y"], ["z", "y"]]
    assert retrieval.rrf(lists, k=60)[0][0] == "y"
    assert retrieval.rrf(lists, k=0)[0][0] == "x"
    assert retrieval.rrf([["a"]], k=60) == [("a", 1 / 61)]
    # weights: qmd gives the raw query's lists 2
    assert retrieval.rrf([["z"], ["a"]], weights=[2, 1]) == [("z", 2 / 61), ("a", 1 / 61)]
    assert retrieval.rrf([["z"], ["a"]]) == [("a", 1 / 61), ("z", 1 / 61)]
    assert retrieval.rrf([["a", "b"], ["b"]], weights=[2, 1])[0] == ("b", 2 / 62 + 1 / 61)


def test_expansion_lines_are_capped_and_lex_exclusions_dropped():
    text = ("lex: \"out of memory\" pytorch -cuda\nlex: two\nlex: three\nlex: four\nvec: a rephrasing\n"
            "hyde: A passage.\nhyde: a second passage\nnot a line\nlex:   \n")
    lines = retrieval.expansion_lines(text)
    assert lines["lex"] == ["out of memory pytorch", "two", "three"]
    assert lines["vec"] == ["a rephrasing"] and lines["hyde"] == ["A passage."]
    assert retrieval.expansion_lines("The code is not possible to be edited.") == {"hyde": [], "lex": [], "vec": []}


# ---------------------------------------------------------------- BM25 and dense search


def test_bm25_ranks_the_relevant_document_first(data, bm25):
    texts = [data.queries[qid] for qid in data.queries]
    ranked = dict(zip(data.queries, bm25.search(texts, depth=100)))
    for qid in ("q1", "q2", "q3", "q5"):
        assert data.doc_ids[ranked[qid][0]] in data.qrels[qid], qid
    assert ranked["q4"] == []  # no shared word, and documents without a match are not listed
    assert [data.doc_ids[d] for d in ranked["q2"]] == ["d2", "d6"]  # d6 matches "limescale" only
    assert bm25.search(["the and of", ""], depth=10) == [[], []]  # stop words only, empty: nothing
    assert bm25.search(["feeding starter"], depth=100) == bm25.search(["fed the starters"], depth=100)  # stemmed


def test_dense_index_finds_a_document_by_its_own_text(data, tiny_embedder, tmp_path):
    dense = retrieval.DenseIndex(tiny_embedder, data.doc_texts, cache_dir=str(tmp_path))
    assert dense.embeddings.shape == (8, 32) and not dense.cached
    results = dense.search([data.doc_texts[3], data.doc_texts[6]], depth=5)
    assert [row[0] for row in results] == [3, 6]
    assert all(len(row) == 5 for row in results)
    again = retrieval.DenseIndex(tiny_embedder, data.doc_texts, cache_dir=str(tmp_path))
    assert again.cached and (again.embeddings == dense.embeddings).all()
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1


# ---------------------------------------------------------------- the job end to end


EXPANSIONS = {
    "sourdough starter feeding": "lex: sourdough flour water yeast\nvec: how often to feed a sourdough starter",
    "espresso machine limescale": "lex: descale espresso machine citric acid",
    "bicycle chain": "",  # no usable line: searched as raw
    "car motor running hot": "hyde: The engine overheats when the thermostat sticks.\n"
                             "lex: automobile engine overheat\nvec: why does my car engine overheat",
    "tomato leaves": "lex: bicycle chain rain",  # a harmful expansion
}


def run_job(tmp_path, *args):
    report = tmp_path / "report.json"
    retrieval.main(["--dataset", str(FIXTURE), "--cache_dir", str(tmp_path / "cache"), "--report", str(report),
                    *args])
    return json.loads(report.read_text(encoding="utf-8"))


def test_bm25_raw_vs_expanded_known_answers(tmp_path, capsys):
    write_cache(tmp_path / "cache" / "expansions.jsonl", "cached-model", EXPANSIONS, EXPANSIONS)
    report = run_job(tmp_path, "--no_dense", "--model", "cached-model")
    assert report["queries"] == 5 and report["documents"] == 8
    assert report["raw"]["BM25"]["nDCG@10"] == pytest.approx(0.8)  # q4 finds nothing
    assert report["raw"]["BM25"]["R@100"] == pytest.approx(0.8)
    (block,) = report["models"]
    assert block["expansion"]["generated"] == 0 and block["expansion"]["cached"] == 5
    assert block["expansion"]["queries_with_lines"] == 4
    ndcg = block["table"]["BM25"]["nDCG@10"]
    # q4 gains 1.0 through its lex line; q5's harmful lex line ties d3 with d5 (1/61 each), d3 comes first
    assert ndcg["expanded"] == pytest.approx((4 + 1 / LOG2_3) / 5)
    assert ndcg["delta"] == pytest.approx((1 + 1 / LOG2_3 - 1) / 5)
    assert (ndcg["wins"], ndcg["losses"], ndcg["ties"]) == (1, 1, 3)
    assert 0 < ndcg["p_value"] <= 1
    assert set(block["table"]) == {"BM25"}
    rows = {row["query_id"]: row for row in block["per_query"]}
    assert rows["q4"]["metrics"]["BM25"]["nDCG@10"] == {"raw": 0.0, "expanded": 1.0, "delta": 1.0}
    assert rows["q4"]["lines"]["lex"] == ["automobile engine overheat"]
    out = capsys.readouterr().out
    assert "raw queries (5)" in out and "worst BM25 losses" in out and "[q5] tomato leaves" in out


def test_card_carries_the_tables_and_a_rerun_replaces_them(tmp_path):
    write_cache(tmp_path / "cache" / "expansions.jsonl", "cached-model", EXPANSIONS, EXPANSIONS)
    card = tmp_path / "README.md"
    card.write_text("# qmd-expand\n\n## Eval\n\nreward table\n", encoding="utf-8")
    run_job(tmp_path, "--no_dense", "--model", "cached-model", "--card", str(card))
    first = card.read_text(encoding="utf-8")
    assert first.startswith("# qmd-expand\n\n## Eval\n\nreward table\n\n<!-- retrieval:beir-tiny -->\n")
    assert "## Retrieval: beir-tiny" in first and "Expansions by `cached-model` (4 of 5 queries" in first
    # BM25 nDCG@10 raw 0.8, expanded (4 + 1/log2(3)) / 5, as in the known-answers test above
    assert f"| BM25 | 0.8000 | {(4 + 1 / LOG2_3) / 5:.4f} | +{(1 / LOG2_3) / 5:.4f} |" in first
    run_job(tmp_path, "--no_dense", "--model", "cached-model", "--card", str(card), "--raw_weight", "2")
    second = card.read_text(encoding="utf-8")
    assert second.count("## Retrieval: beir-tiny") == 1 and "raw-query weight 2)" in second
    assert "| BM25 | 0.8000 | 1.0000 | +0.2000 |" in second and second.startswith(first.split("<!--")[0])


def test_card_that_is_neither_a_file_nor_a_repo_fails_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--card: no such file, and expected a repo id"):
        run_job(tmp_path, "--no_dense", "--model", "cached-model", "--card", str(tmp_path / "missing" / "README.md"))
    assert not (tmp_path / "report.json").exists()


def test_raw_weight_two_keeps_a_harmful_line_from_overtaking_the_raw_query(tmp_path):
    write_cache(tmp_path / "cache" / "expansions.jsonl", "cached-model", EXPANSIONS, EXPANSIONS)
    report = run_job(tmp_path, "--no_dense", "--model", "cached-model", "--raw_weight", "2")
    ndcg = report["models"][0]["table"]["BM25"]["nDCG@10"]
    assert ndcg["expanded"] == pytest.approx(1.0)  # q5: d5 at 2/61 beats d3 at 1/61; q4 still gains
    assert (ndcg["wins"], ndcg["losses"], ndcg["ties"]) == (1, 0, 4)
    assert report["definitions"]["raw_weight"] == 2.0


def test_dense_and_hybrid_rows_with_a_tiny_embedder(tmp_path, tiny_embedder):
    write_cache(tmp_path / "cache" / "expansions.jsonl", "cached-model", EXPANSIONS, EXPANSIONS)
    report = run_job(tmp_path, "--model", "cached-model", "--embedder", tiny_embedder)
    assert set(report["raw"]) == {"BM25", "dense", "hybrid"}
    table = report["models"][0]["table"]
    assert set(table) == {"BM25", "dense", "hybrid"}
    for system in table:
        for metric in ("nDCG@10", "R@100"):
            m = table[system][metric]
            assert 0 <= m["raw"] <= 1 and 0 <= m["expanded"] <= 1 and 0 <= m["p_value"] <= 1
            assert m["wins"] + m["losses"] + m["ties"] == 5
    # the dense index covers all 8 documents, so every relevant document is within the top 100
    assert report["raw"]["dense"]["R@100"] == 1.0
    assert report["timings"]["dense_index_cached"] is False
    assert run_job(tmp_path, "--model", "cached-model", "--embedder", tiny_embedder)["timings"]["dense_index_cached"]


def test_generation_fills_the_cache_and_a_rerun_generates_nothing(tmp_path, tiny_model):
    args = ["--no_dense", "--model", str(tiny_model), "--max_new_tokens", "6", "--batch_size", "2"]
    first = run_job(tmp_path, *args)["models"][0]["expansion"]
    assert first["generated"] == 5 and first["cached"] == 0
    cache = (tmp_path / "cache" / "expansions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(cache) == 5 and {json.loads(line)["query"] for line in cache} == set(EXPANSIONS)
    second = run_job(tmp_path, *args)["models"][0]["expansion"]
    assert second["generated"] == 0 and second["cached"] == 5
    # other decoding settings are another cache entry
    third = run_job(tmp_path, *args[:-4], "--max_new_tokens", "4", "--batch_size", "2", "--limit", "2")
    assert third["models"][0]["expansion"]["generated"] == 2 and third["queries"] == 2


def test_model_key_fingerprints_local_models(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    key = retrieval.model_key(str(model))
    assert key.startswith(str(model) + "@")
    (model / "weights.bin").write_bytes(b"123456")
    assert retrieval.model_key(str(model)) != key
    assert retrieval.model_key("org/some-model") == "org/some-model"


def test_the_job_carries_the_current_reward_block():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import vendor_reward

    text = (Path(__file__).resolve().parent.parent / "jobs" / "retrieval.py").read_text(encoding="utf-8")
    assert vendor_reward.split_at_block(text, "retrieval.py")[1] == vendor_reward.reward_block(), "run `just vendor`"


def test_hub_ids_take_qrels_from_the_beir_qrels_repo(tmp_path, monkeypatch):
    """No Hub here: the download is replaced by local folders laid out as BeIR/<name> and BeIR/<name>-qrels."""
    main_repo, qrels_repo = tmp_path / "main", tmp_path / "qrels"
    main_repo.mkdir()
    qrels_repo.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(FIXTURE / name, main_repo / name)
    shutil.copy(FIXTURE / "qrels" / "test.tsv", qrels_repo / "test.tsv")
    asked = []

    def snapshot(repo_id):
        asked.append(repo_id)
        return str({"BeIR/tiny": main_repo, "BeIR/tiny-qrels": qrels_repo}[repo_id])

    monkeypatch.setattr(retrieval, "_hub_snapshot", snapshot)
    data = retrieval.resolve_dataset("BeIR/tiny")
    assert asked == ["BeIR/tiny", "BeIR/tiny-qrels"] and list(data.queries) == ["q1", "q2", "q3", "q4", "q5"]
    assert data.source == "BeIR/tiny"
    asked.clear()
    assert retrieval.resolve_dataset(str(FIXTURE), qrels=str(qrels_repo)).qrels == data.qrels and asked == []
    with pytest.raises(FileNotFoundError, match="no such folder"):
        retrieval.resolve_dataset("not/a/hub/id")

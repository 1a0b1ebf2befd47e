from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompress.errors import DataError
from autocompress.schema.config import TaskConfig
from autocompress.tasks.corpus import load_corpus, read_documents


def _task(source: str, **kw) -> TaskConfig:
    return TaskConfig(kind="causal-lm", source=source, metric="perplexity", **kw)


def test_a_text_file_is_one_document_per_line_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("\n".join(f"document {i} text" for i in range(40)) + "\n\n  \n", encoding="utf-8")
    docs = read_documents(_task(str(f)))
    assert len(docs) == 40 and docs[3] == "document 3 text"


def test_splits_are_disjoint_sized_and_fixed_by_the_seed(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(60)), encoding="utf-8")
    cfg = _task(str(f), text_column="body", train_size=30, eval_size=10, transfer_size=0, test_size=10)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert (len(a.train), len(a.eval), len(a.test)) == (30, 10, 10) and a.transfer is None
    assert a.train.texts == b.train.texts
    assert not set(a.train.texts) & set(a.eval.texts) and not set(a.eval.texts) & set(a.test.texts)
    c = load_corpus(cfg.model_copy(update={"seed": 1}))
    assert c.train.texts != a.train.texts


def test_a_corpus_too_small_for_its_splits_says_which_sizes_to_lower(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("\n".join(f"d{i}" for i in range(20)), encoding="utf-8")
    with pytest.raises(DataError, match=r"has 20 documents .* = 1010; lower them"):
        load_corpus(_task(str(f), train_size=1000, eval_size=10))


def test_a_missing_text_column_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"body": "x"}), encoding="utf-8")
    with pytest.raises(DataError, match="task.text_column"):
        read_documents(_task(str(f)))


def test_the_bundled_news_articles_are_a_corpus() -> None:
    data = load_corpus(_task("bundled:bbc", train_size=100, eval_size=20, test_size=20))
    assert len(data.train) == 100 and all(len(t) > 100 for t in data.eval.texts)

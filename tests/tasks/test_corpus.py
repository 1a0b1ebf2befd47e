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


def _questions(path: Path, n: int, **extra) -> Path:
    rows = [{"context": f"question {i}:", "choices": ["yes", "no", f"maybe {i}"], "answer": i % 3, **extra}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_questions_are_the_scored_splits_and_the_corpus_gives_training_documents(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"document {i}" for i in range(30)), encoding="utf-8")
    choices = _questions(tmp_path / "q.jsonl", 25)
    # 30 documents are enough: eval and test come from the questions
    data = load_corpus(_task(str(corpus), choices=str(choices), train_size=30, eval_size=12, test_size=10))
    assert len(data.train) == 30 and all(t.startswith("document") for t in data.train.texts)
    assert len(data.eval) == 12 * 3 and len(data.test) == 10 * 3
    # one row per choice, its context as text and the choice as pair, grouped by question, the right one first
    assert data.eval.labels == [q for q in range(12) for _ in range(3)]
    contexts = {data.eval.texts[3 * q] for q in range(12)} | {data.test.texts[3 * q] for q in range(10)}
    assert len(contexts) == 22  # disjoint
    for row in range(0, len(data.eval), 3):
        i = int(data.eval.texts[row].split()[1][:-1])
        assert data.eval.pairs[row] == ["yes", "no", f"maybe {i}"][i % 3]
        assert sorted(data.eval.pairs[row : row + 3]) == sorted(["yes", "no", f"maybe {i}"])


def test_an_answer_may_be_the_right_choices_text(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"document {i}" for i in range(30)), encoding="utf-8")
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"context": f"q{i}", "choices": ["a", "b"], "answer": "b"})
                              for i in range(10)), encoding="utf-8")
    data = load_corpus(_task(str(corpus), choices=str(path), train_size=10, eval_size=10))
    assert data.eval.pairs[::2] == ["b"] * 10 and data.test is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2 is not JSON"),
        ('{"context": "c", "choices": ["a", "b"]}', r"line 2 has no answer"),
        ('{"context": "c", "choices": ["a"], "answer": 0}', r"at least two non-empty choice strings"),
        ('{"context": "c", "choices": ["a", "b"], "answer": 2}', r"answer 2 is not an index of its 2 choices \(0 to 1\)"),
        ('{"context": "c", "choices": ["a", "b"], "answer": "z"}', r"answer 'z' is not one of its choices"),
        ('["c", ["a", "b"], 0]', r"line 2 is not a JSON object"),
    ],
)
def test_a_bad_question_is_named_by_its_line(tmp_path: Path, line: str, message: str) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"document {i}" for i in range(30)), encoding="utf-8")
    path = tmp_path / "q.jsonl"
    path.write_text('{"context": "c", "choices": ["a", "b"], "answer": 0}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_corpus(_task(str(corpus), choices=str(path), train_size=10, eval_size=10))


def test_too_few_questions_or_no_file_says_what_to_change(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"document {i}" for i in range(30)), encoding="utf-8")
    path = _questions(tmp_path / "q.jsonl", 12)
    with pytest.raises(DataError, match=r"has 12 questions but task.eval_size \+ test_size = 20; lower them"):
        load_corpus(_task(str(corpus), choices=str(path), train_size=10, eval_size=10, test_size=10))
    with pytest.raises(DataError, match=r"does not exist; give a .jsonl file"):
        load_corpus(_task(str(corpus), choices=str(tmp_path / "none.jsonl"), train_size=10, eval_size=10))

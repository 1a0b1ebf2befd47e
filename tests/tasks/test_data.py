"""load_task: local files and bundled sources become disjoint, seeded train/eval splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import sentiment_rows

from autocompress.schema.config import TaskConfig
from autocompress.tasks.data import TaskData, load_task
from autocompress.errors import DataError, UnknownNameError


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch) -> None:
    """Keep the ``datasets`` cache of these throwaway files out of the user's home."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets-cache"))


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Unique texts (so splits can be compared by text) with string labels and an extra column."""
    rows = sentiment_rows(n, seed=seed)
    return pd.DataFrame(
        {
            "id": range(n),
            "review": [f"r{i} {row['sentence']}" for i, row in enumerate(rows)],
            "mood": [row["sentiment"] for row in rows],
        }
    )


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:  # pragma: no cover - test helper misuse
        raise ValueError(path)
    return path


def _cfg(source: Path | str, **kw: Any) -> TaskConfig:
    base: dict[str, Any] = dict(
        source=str(source), text_column="review", label_column="mood", train_size=60, eval_size=40, seed=0
    )
    return TaskConfig(**{**base, **kw})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_file_loads_with_column_mapping(tmp_path: Path, suffix: str) -> None:
    df = _frame()
    data = load_task(_cfg(_write(df, tmp_path / f"reviews{suffix}")))
    assert isinstance(data, TaskData)
    assert len(data.train) == 60 and len(data.eval) == 40
    assert data.label_names == ["negative", "neutral", "positive"]  # sorted
    assert data.num_labels == 3
    truth = dict(zip(df["review"], df["mood"], strict=True))
    for split in (data.train, data.eval):
        assert all(0 <= y < 3 for y in split.labels)
        assert all(data.label_names[y] == truth[text] for text, y in zip(split.texts, split.labels, strict=True))
        assert split.pairs is None


def test_train_and_eval_are_disjoint(tmp_path: Path) -> None:
    data = load_task(_cfg(_write(_frame(), tmp_path / "r.csv"), train_size=70, eval_size=50))
    assert not set(data.train.texts) & set(data.eval.texts)
    assert len(set(data.train.texts)) == 70 and len(set(data.eval.texts)) == 50


def test_split_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "r.csv")
    a = load_task(_cfg(path, seed=3))
    b = load_task(_cfg(path, seed=3))
    c = load_task(_cfg(path, seed=4))
    assert a == b
    assert a.train.texts != c.train.texts


def test_same_split_from_csv_and_parquet(tmp_path: Path) -> None:
    df = _frame()
    from_csv = load_task(_cfg(_write(df, tmp_path / "r.csv")))
    from_parquet = load_task(_cfg(_write(df, tmp_path / "r.parquet")))
    assert from_csv == from_parquet


def test_integer_labels_are_renumbered_from_zero_and_named(tmp_path: Path) -> None:
    df = _frame()
    df["stars"] = df["mood"].map({"negative": 1, "neutral": 3, "positive": 5})
    data = load_task(_cfg(_write(df, tmp_path / "r.csv"), label_column="stars"))
    assert data.label_names == ["1", "3", "5"]
    assert set(data.train.labels) == {0, 1, 2}
    truth = dict(zip(df["review"], df["stars"], strict=True))
    assert all(data.label_names[y] == str(truth[t]) for t, y in zip(data.train.texts, data.train.labels, strict=True))


def test_rows_without_text_or_label_are_skipped(tmp_path: Path) -> None:
    df = _frame(110)
    df.loc[:9, "review"] = ""
    df.loc[10:19, "mood"] = None
    path = _write(df, tmp_path / "r.jsonl")
    data = load_task(_cfg(path, train_size=50, eval_size=40))  # exactly the 90 usable rows
    texts = set(data.train.texts) | set(data.eval.texts)
    assert "" not in texts
    assert not texts & set(df.loc[10:19, "review"])
    with pytest.raises(DataError, match="90 usable"):
        load_task(_cfg(path, train_size=50, eval_size=41))


def test_text_pair_column_is_carried(tmp_path: Path) -> None:
    df = _frame()
    df["context"] = [f"ctx {i}" for i in range(len(df))]
    data = load_task(_cfg(_write(df, tmp_path / "r.csv"), text_pair_column="context"))
    assert data.train.pairs is not None and len(data.train.pairs) == 60
    by_text = dict(zip(df["review"], df["context"], strict=True))
    assert all(by_text[t] == p for t, p in zip(data.train.texts, data.train.pairs, strict=True))


@pytest.mark.parametrize(("kw", "missing"), [({"text_column": "body"}, "body"), ({"label_column": "y"}, "y")])
def test_missing_column_names_it_and_lists_available(tmp_path: Path, kw: dict[str, str], missing: str) -> None:
    path = _write(_frame(), tmp_path / "r.csv")
    with pytest.raises(DataError) as info:
        load_task(_cfg(path, **kw))
    message = str(info.value)
    assert f"'{missing}'" in message
    for column in ("id", "review", "mood"):
        assert column in message


def test_one_class_only_is_rejected(tmp_path: Path) -> None:
    df = _frame()
    df["mood"] = "positive"
    with pytest.raises(DataError, match="only one class"):
        load_task(_cfg(_write(df, tmp_path / "r.csv")))


def test_more_examples_requested_than_available_is_rejected(tmp_path: Path) -> None:
    path = _write(_frame(120), tmp_path / "r.csv")
    with pytest.raises(DataError, match="120 usable examples") as info:
        load_task(_cfg(path, train_size=100, eval_size=40))
    assert "train_size" in str(info.value)


def test_missing_file_and_unsupported_format_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_task(_cfg(tmp_path / "absent.csv"))
    odd = tmp_path / "reviews.xlsx"
    odd.write_text("not a spreadsheet")
    with pytest.raises(DataError, match=r"\.csv"):
        load_task(_cfg(odd))


def test_eval_split_with_single_local_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="eval_split"):
        load_task(_cfg(_write(_frame(), tmp_path / "r.csv"), eval_split="test"))


def test_unknown_bundled_dataset_suggests_the_close_name() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'bundled:tweets'") as info:
        load_task(TaskConfig(source="bundled:tweet"))
    assert "bundled:bbc" in str(info.value)  # the available names are listed


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("bundled:tweets", ["negative", "neutral", "positive"]),
        ("bundled:bbc", ["business", "entertainment", "politics", "sports", "tech"]),
    ],
)
def test_bundled_sources_load_offline(source: str, names: list[str]) -> None:
    data = load_task(TaskConfig(source=source, train_size=200, eval_size=100))
    assert data.label_names == names
    assert len(data.train) == 200 and len(data.eval) == 100
    assert len(set(data.train.labels)) == len(names)
    assert all(isinstance(t, str) and t.strip() for t in data.train.texts)


def test_transfer_examples_are_extra_and_disjoint(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "r.csv")
    plain = load_task(_cfg(path, train_size=50, eval_size=30))
    data = load_task(_cfg(path, train_size=50, eval_size=30, transfer_size=25))
    assert plain.transfer is None
    assert data.train == plain.train and data.eval == plain.eval, "adding transfer data leaves the splits alone"
    assert len(data.transfer) == 25
    assert not set(data.transfer.texts) & (set(data.train.texts) | set(data.eval.texts))
    with pytest.raises(DataError, match="transfer_size"):
        load_task(_cfg(path, train_size=50, eval_size=30, transfer_size=500))


# ------------------------------------------------------------------ held-out test split
def test_test_examples_are_held_out_and_leave_the_other_splits_alone(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "r.csv")
    plain = load_task(_cfg(path, train_size=50, eval_size=30, transfer_size=10))
    data = load_task(_cfg(path, train_size=50, eval_size=30, transfer_size=10, test_size=25))
    assert plain.test is None
    assert (data.train, data.eval, data.transfer) == (plain.train, plain.eval, plain.transfer)
    assert len(data.test) == 25
    others = set(data.train.texts) | set(data.eval.texts) | set(data.transfer.texts)
    assert not set(data.test.texts) & others
    truth = dict(zip(_frame()["review"], _frame()["mood"], strict=True))
    assert all(data.label_names[y] == truth[t] for t, y in zip(data.test.texts, data.test.labels, strict=True))
    assert load_task(_cfg(path, train_size=50, eval_size=30, test_size=25)) == load_task(
        _cfg(path, train_size=50, eval_size=30, test_size=25)
    )


def test_test_size_counts_against_the_usable_examples(tmp_path: Path) -> None:
    path = _write(_frame(120), tmp_path / "r.csv")
    with pytest.raises(DataError, match="test_size"):
        load_task(_cfg(path, train_size=60, eval_size=40, test_size=30))


def _split_dir(tmp_path: Path, test_labels: list[int] | None = None) -> Path:
    """A directory of parquet split files whose label column is a named ClassLabel, as on the hub."""
    import datasets

    features = datasets.Features({"review": datasets.Value("string"), "mood": datasets.ClassLabel(names=["neg", "pos"])})
    d = tmp_path / "splits"
    d.mkdir()
    for split, n, seed in (("train", 80, 0), ("validation", 40, 1), ("test", 30, 2)):
        rows = sentiment_rows(n, seed=seed)
        labels = [int(r["sentiment"] == "positive") for r in rows]
        if split == "test" and test_labels is not None:
            labels = test_labels
        texts = [f"{split}{i} {r['sentence']}" for i, r in enumerate(rows)]
        ds = datasets.Dataset.from_dict({"review": texts, "mood": labels}, features=features)
        ds.to_parquet(str(d / f"{split}.parquet"))
    return d


def test_named_test_split_of_a_split_directory(tmp_path: Path) -> None:
    d = _split_dir(tmp_path)
    data = load_task(_cfg(d, eval_split="validation", test_split="test", train_size=50, eval_size=30, test_size=20))
    assert data.label_names == ["neg", "pos"]
    assert len(data.test) == 20 and all(t.startswith("test") for t in data.test.texts)
    assert all(t.startswith("validation") for t in data.eval.texts)
    assert set(data.test.labels) <= {0, 1}
    with pytest.raises(UnknownNameError, match="'tset'.*Available: test, train, validation"):
        load_task(_cfg(d, eval_split="validation", test_split="tset", train_size=50, eval_size=30, test_size=20))


def test_unlabelled_test_split_is_refused(tmp_path: Path) -> None:
    d = _split_dir(tmp_path, test_labels=[-1] * 30)  # how GLUE ships its test splits
    with pytest.raises(DataError, match="-1 marks an unlabelled split"):
        load_task(_cfg(d, eval_split="validation", test_split="test", train_size=50, eval_size=30, test_size=20))


def test_test_split_of_a_single_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="test_split"):
        load_task(_cfg(_write(_frame(), tmp_path / "r.csv"), test_split="test", test_size=20))


# ------------------------------------------------------------------ pair tasks
def test_pair_task_with_a_missing_second_column_names_the_key(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "r.csv")
    with pytest.raises(DataError) as info:
        load_task(_cfg(path, text_pair_column="hypothesis"))
    message = str(info.value)
    assert "'hypothesis'" in message and "task.text_pair_column" in message and "review" in message


def test_pair_rows_without_a_second_text_are_skipped(tmp_path: Path) -> None:
    df = _frame(110)
    df["context"] = [f"ctx {i}" for i in range(len(df))]
    df.loc[:9, "context"] = None
    data = load_task(_cfg(_write(df, tmp_path / "r.jsonl"), text_pair_column="context", train_size=60, eval_size=40))
    assert "None" not in set(data.train.pairs) | set(data.eval.pairs)

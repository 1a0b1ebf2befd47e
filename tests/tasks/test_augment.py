"""Augmented distillation examples, and a transfer file of the user's own unlabelled texts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from autocompress.errors import ConfigError, DataError
from autocompress.schema.config import TaskConfig, parse_config
from autocompress.tasks.augment import augment, neighbour_table, token_kinds
from autocompress.tasks.batches import Encoded
from autocompress.tasks.data import load_task, read_transfer
from conftest import tiny_config_dict


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path_factory, monkeypatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets-cache"))


def _table() -> torch.Tensor:
    """Eight rows: 2 and 3 point the same way, 4 and 5 too (5 a word piece), 0 and 1 special."""
    rows = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0.1, 0], [1.0, 0.12, 0.01], [0, 0, 1.0], [0, 0.05, 1.0],
                         [0.5, 0.5, 0], [0.4, 0.6, 0.1]])
    return rows


def test_neighbours_are_the_nearest_rows_of_the_same_kind_never_special_nor_itself():
    kinds = [0, 0, 0, 0, 0, 1, 0, 0]
    near = neighbour_table(_table(), [2, 3, 4, 0, 9], k=2, kinds=kinds, excluded={0, 1})
    assert set(near) == {2, 3, 4}  # the special id and one past the table have none
    assert near[2][0] == 3 and near[3][0] == 2
    assert 5 not in near[4], "a word piece never stands in for a word"
    assert all(0 not in v and 1 not in v for v in near.values())
    assert all(i not in v for i, v in near.items())


def test_token_kinds_read_wordpiece_and_bpe_marks():
    assert token_kinds(["[CLS]", "play", "##ing", "##s", "game"]) == [0, 0, 1, 1, 0]
    assert token_kinds(["Ġthe", "Ġcat", "s", "Ġsat", "ting"]) == [0, 0, 1, 0, 1]


def _data() -> Encoded:
    ids = [[101, 5, 6, 7, 8, 102], [101, 9, 10, 102]]
    return Encoded(ids, None, torch.tensor([0, 1]), 0)


def test_augment_replaces_about_its_share_deterministically_and_leaves_labels_to_the_teacher():
    table = {t: [t + 100, t + 200] for t in range(5, 11)}  # 101 and 102 (the special tokens) have none
    a = augment(_data(), table, copies=50, share=0.3, seed=0)
    b = augment(_data(), table, copies=50, share=0.3, seed=0)
    assert a.examples.input_ids == b.examples.input_ids
    assert len(a.examples) == 100 and (a.examples.labels == -1).all()
    swapped = sum(x != y for row, src in zip(a.examples.input_ids, _data().input_ids * 50) for x, y in zip(row, src))
    replaceable = 50 * 6
    assert 0.2 < swapped / replaceable < 0.4
    assert a.replaced_share == pytest.approx(swapped / (50 * 10))
    assert all(row[0] == 101 and row[-1] == 102 for row in a.examples.input_ids), "special tokens stay"
    assert augment(_data(), table, copies=1, share=0.3, seed=1).examples.input_ids != a.examples.input_ids[:2]
    assert a.facts()["copies"] == 50 and a.facts()["kind"] == "neighbours"


@pytest.mark.parametrize(("augment_cfg", "key"), [
    ({"share": 0.95}, "recovery.augment.share"),
    ({"share": 0}, "recovery.augment.share"),
    ({"copies": 0}, "recovery.augment.copies"),
    ({"kind": "synonyms"}, "recovery.augment.kind"),
])
def test_an_augmentation_setting_out_of_range_names_its_key(augment_cfg, key):
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config_dict(Path("/m"), Path("/d.csv"), recovery={"epochs": 1.0, "augment": augment_cfg}))
    assert key in str(info.value)


def _task(source: Path, **kw) -> TaskConfig:
    return TaskConfig(source=str(source), text_column="sentence", label_column="sentiment", train_size=100,
                      eval_size=50, **kw)


def test_a_transfer_file_gives_the_distillation_texts(tiny_csv, tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("first text\n\n   \nsecond text\nthird one\n", encoding="utf-8")
    task = load_task(_task(tiny_csv, transfer_source=str(txt)))
    assert task.transfer is not None and task.transfer.texts == ["first text", "second text", "third one"]
    assert (len(task.train), len(task.eval)) == (100, 50)
    capped = read_transfer(_task(tiny_csv, transfer_source=str(txt), transfer_size=2))
    assert len(capped.texts) == 2 and set(capped.texts) <= {"first text", "second text", "third one"}
    table = tmp_path / "mine.csv"
    pd.DataFrame({"body": ["a b", None, "c d"], "other": [1, 2, 3]}).to_csv(table, index=False)
    got = read_transfer(_task(tiny_csv, transfer_source=str(table), transfer_column="body"))
    assert got.texts == ["a b", "c d"] and got.labels == [-1, -1]


@pytest.mark.parametrize(("content", "column", "match"), [
    (None, None, "does not exist"),
    ("\n  \n", None, "no usable text"),
    ("csv", "missing", "no column 'missing'.*task.transfer_column"),
])
def test_a_bad_transfer_file_is_one_clear_error(tiny_csv, tmp_path, content, column, match):
    path = tmp_path / ("t.csv" if content == "csv" else "t.txt")
    if content == "csv":
        pd.DataFrame({"body": ["x"]}).to_csv(path, index=False)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        load_task(_task(tiny_csv, transfer_source=str(path), transfer_column=column))
    assert "task.transfer_source" in str(info.value)


def test_a_missing_transfer_file_is_refused_before_anything_slow(tiny_model_dir, tiny_csv, tmp_path):
    from autocompress.search.workbench import check_inputs

    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, task={"transfer_source": str(tmp_path / "no.txt")}))
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg, "study.yaml")
    assert info.value.key == "task.transfer_source" and "does not exist" in str(info.value)


def test_auto_augments_a_small_classification_task_only():
    from autocompress.search.workbench import augments

    def cfg(**recovery):
        recovery = {"epochs": 1.0, "augment": {"kind": "auto"}, **recovery}
        return parse_config(tiny_config_dict(Path("/m"), Path("/d.csv"), recovery=recovery))

    assert augments(cfg(), "sequence-classification", 2000)
    assert not augments(cfg(), "sequence-classification", 25_000)
    assert not augments(cfg(), "causal-lm", 2000)
    assert not augments(cfg(epochs=0.0), "sequence-classification", 2000)  # a study that does not distil
    assert not augments(cfg(augment={}), "sequence-classification", 2000), "off by default"
    assert augments(cfg(augment={"kind": "neighbours"}), "causal-lm", 25_000)

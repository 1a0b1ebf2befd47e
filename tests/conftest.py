"""Shared fixtures: tiny random BERT-like models and small local datasets (no downloads)."""

from __future__ import annotations

import csv
import itertools
import os
import uuid
import random
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch

WORDS_POS = ["good", "great", "love", "happy", "fine", "nice", "best", "fun"]
WORDS_NEG = ["bad", "awful", "hate", "sad", "poor", "worst", "ugly", "dull"]
WORDS_NEU = ["the", "a", "car", "day", "road", "city", "news", "today", "is", "was"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS_POS, *WORDS_NEG, *WORDS_NEU]


def tiny_bert(num_labels: int = 3, layers: int = 4, heads: int = 4, hidden: int = 32, ffn: int = 64, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(cfg).eval()


def tiny_roberta(num_labels: int = 3, layers: int = 4, heads: int = 4, hidden: int = 32, ffn: int = 64, seed: int = 0,
                 xlm: bool = False):
    """A tiny RoBERTa (or, with ``xlm``, XLM-R) classifier; [PAD] (id 0) is its padding id."""
    from transformers import (
        RobertaConfig,
        RobertaForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    config_cls, model_cls = (
        (XLMRobertaConfig, XLMRobertaForSequenceClassification) if xlm else (RobertaConfig, RobertaForSequenceClassification)
    )
    cfg = config_cls(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=130,  # positions start after the padding id: 129 tokens fit
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        num_labels=num_labels,
    )
    return model_cls(cfg).eval()


def tiny_distilbert(num_labels: int = 3, layers: int = 4, heads: int = 4, hidden: int = 32, ffn: int = 64, seed: int = 0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    cfg = DistilBertConfig(
        vocab_size=len(VOCAB),
        dim=hidden,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=ffn,
        max_position_embeddings=128,
        pad_token_id=0,
        num_labels=num_labels,
    )
    return DistilBertForSequenceClassification(cfg).eval()


#: Tiny random classifiers of each supported architecture family, same arguments as :func:`tiny_bert`.
TINY_MODELS = {
    "bert": tiny_bert,
    "roberta": tiny_roberta,
    "xlm-roberta": lambda **kw: tiny_roberta(xlm=True, **kw),
    "distilbert": tiny_distilbert,
}


def save_tiny_model(model, directory: Path) -> Path:
    """Save ``model`` with a word-level tokenizer over :data:`VOCAB`, loadable by path."""
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tok_cls = DistilBertTokenizerFast if model.config.model_type == "distilbert" else BertTokenizerFast
    # transformers 5 reads the word list from ``vocab`` (``vocab_file`` alone leaves it empty: all [UNK])
    tok_cls(vocab=str(vocab), do_lower_case=True).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the ``autocompress`` command line in-process: (exit code, stdout, stderr)."""
    from autocompress.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out, captured.err


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (to prove a command left a stored study untouched)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT classifier with its tokenizer, loadable by path."""
    return save_tiny_model(tiny_bert(), tmp_path_factory.mktemp("tiny-bert"))


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "neutral", "positive"])
        words = rng.sample(WORDS_NEU, 4)
        if label == "positive":
            words += rng.sample(WORDS_POS, 2)
        elif label == "negative":
            words += rng.sample(WORDS_NEG, 2)
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "sentiment": label})
    return rows


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    rows = sentiment_rows(300)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sentence", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_config_dict(model_dir: Path, csv_path: Path, **overrides: Any) -> dict[str, Any]:
    """A complete, fast study config on the tiny model and CSV."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "model": {"source": str(model_dir), "finetuned": False},
        "task": {
            "source": str(csv_path),
            "text_column": "sentence",
            "label_column": "sentiment",
            "train_size": 200,
            "eval_size": 80,
            "max_length": 16,
        },
        # a randomly initialised model: its word embeddings must learn (a pre-trained one's need not);
        # and in these synthetic rows the length tells the label (neutral rows are two words shorter),
        # so batches grouped by length would hold mostly one class
        "teacher": {"epochs": 2.0, "learning_rate": 1.0e-3, "batch_size": 16, "freeze_word_embeddings": False,
                    "group_by_length": False},
        "recovery": {"epochs": 0.0},
        "profile": {"name": "test", "threads": 1, "batch_size": 1, "seq_len": 16, "warmup": 1, "repeats": 3, "max_repeats": 6},
        "space": {"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32, 8], "depth": {"min": 2}},
        "search": {"trials": 6, "sampler": "random", "seed": 0},
    }
    return _with_overrides(cfg, overrides)


@pytest.fixture
def lively_bert():
    """Factory of tiny models (same arguments as :func:`tiny_bert`, plus ``family``) with large random weights.

    The default init (std 0.02) leaves logits nearly constant, so a wrongly removed head or neuron
    would hardly show; with std 0.2 every head and neuron visibly moves the logits.
    """

    def make(seed: int = 0, family: str = "bert", **kwargs: Any):
        model = TINY_MODELS[family](seed=seed, **kwargs)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, 0.2, generator=g)
                    module.bias.normal_(0.0, 0.1, generator=g)
        return model

    return make


@pytest.fixture
def token_batch() -> dict[str, torch.Tensor]:
    """Four random sequences of 12 tokens; rows 1 and 3 are padded (attention_mask 0 at the end)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, len(VOCAB), (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0  # [PAD]
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="session")
def finished(tiny_model_dir, tiny_csv, tmp_path_factory) -> str:
    """Storage URL of a finished six-trial tiny study named 'rep' (shared by the report tests).

    Its latency objective is measured; it also reports a predicted profile (rpi4).
    """
    from autocompress import study as st
    from autocompress.schema.config import parse_config
    from autocompress.search.workbench import prepare

    cfg = parse_config(tiny_config_dict(tiny_model_dir, tiny_csv, teacher={"epochs": 10.0}, report_profiles=["rpi4"]))
    bench = prepare(cfg, tmp_path_factory.mktemp("cache"))
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'rep.db'}"
    study = st.create_or_load(cfg, st.open_storage(url), "rep", bench)
    st.run(study, bench, n_trials=6)
    return url


#: the PostgreSQL server of the shared-study tests; each test gets a database of its own on it
PG = os.environ.get("AUTOCOMPRESS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url():
    """URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    from autocompress.store.urls import mask_url

    admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = f"ac_test_{uuid.uuid4().hex[:10]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server, no rights: say so
        admin.dispose()
        message = f"PostgreSQL at {mask_url(PG)} is not usable ({str(exc).splitlines()[0]})"
        if os.environ.get("AUTOCOMPRESS_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message + "; set AUTOCOMPRESS_TEST_PG to a server where the test user may create databases")
    url = PG.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# ------------------------------------------------------------------------------------------ decoders
_WORDS = ("the cat dog bird sat ran flew on under over a mat tree roof and then quickly slowly big small red "
          "green blue house garden river").split()


def decoder_documents(n: int, seed: int = 0) -> list[str]:
    """Short documents with structure a tiny decoder can learn (subject, verb, place), one per line."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(2, 4)):
            sentences.append(f"the {rng.choice(['small', 'big', 'red'])} {rng.choice(['cat', 'dog', 'bird'])} "
                             f"{rng.choice(['sat', 'ran', 'flew'])} {rng.choice(['on', 'under', 'over'])} the "
                             f"{rng.choice(['mat', 'tree', 'roof', 'house'])}")
        docs.append(" and then ".join(sentences) + " .")
    return docs


def save_tiny_decoder(family: str, directory: Path, texts: list[str], seed: int = 0) -> Path:
    """A tiny random decoder of ``family`` (``llama``: grouped-query attention; ``gpt2``) with a small
    BPE tokenizer trained on ``texts``, saved loadable by path."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from autocompress.models.scratch import _train_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(texts, 300, directory)
    vocab = len(AutoTokenizer.from_pretrained(directory))
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                             bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=4, n_head=4, n_positions=128,
                                           bos_token_id=1, eos_token_id=2, pad_token_id=3))
    else:
        raise ValueError(family)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def decoder_corpus(tmp_path_factory) -> Path:
    """A UTF-8 text corpus, one document per line (400 documents)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(decoder_documents(400)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, decoder_corpus) -> Path:
    return save_tiny_decoder("llama", tmp_path_factory.mktemp("tiny-llama"), decoder_corpus.read_text().splitlines())


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, decoder_corpus) -> Path:
    return save_tiny_decoder("gpt2", tmp_path_factory.mktemp("tiny-gpt2"), decoder_corpus.read_text().splitlines())


def tiny_decoder_config_dict(model_dir: Path, corpus: Path, **overrides: Any) -> dict[str, Any]:
    """A complete, fast decoder study config on a tiny decoder and the test corpus."""
    cfg: dict[str, Any] = {
        "name": "tiny-lm",
        "model": {"source": str(model_dir), "finetuned": False},
        "task": {"kind": "causal-lm", "source": str(corpus), "metric": "perplexity", "train_size": 240,
                 "eval_size": 60, "test_size": 40, "max_length": 32},
        "teacher": {"epochs": 3.0, "learning_rate": 3.0e-3, "batch_size": 16, "freeze_word_embeddings": False},
        "recovery": {"epochs": 0.5, "learning_rate": 2.0e-3, "batch_size": 16, "temperature": 1.0},
        "pruning": {"calibration_examples": 16},
        "profile": {"name": "chat", "threads": 1, "batch_size": 1, "seq_len": 8, "new_tokens": 4, "warmup": 1,
                    "repeats": 3, "max_repeats": 4},
        "space": {"heads": [1.0, 0.5], "kv": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32, 8, 4],
                  "weight_scheme": ["dynamic", "weight_only"], "depth": {"min": 2}},
        "objectives": {"max_perplexity_increase": 50.0},
        "search": {"trials": 5, "sampler": "random", "seed": 0},
    }
    return _with_overrides(cfg, overrides)


def _with_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with each top-level section of ``overrides`` merged into it (other values replace)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


class FakeTime:
    """A clock that only moves when a fake model (or one phase of it) runs; records who ran, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, durations: Iterable[float]) -> Callable[[], None]:
        """A zero-argument 'model' that takes ``durations`` in turn (cycled)."""
        it = itertools.cycle(durations)

        def run() -> None:
            self.calls.append(name)
            self.now += next(it)

        return run


def _hard_csv(path, n=300, noise=0.3, seed=0):
    """Sentiment rows whose label is flipped for ``noise`` of them: no model reaches 100 %."""
    rng = random.Random(seed)
    rows = sentiment_rows(n, seed)
    for r in rows:
        if rng.random() < noise:
            r["sentiment"] = rng.choice(["negative", "neutral", "positive"])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sentence", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def refined_study(tiny_model_dir, tmp_path_factory):
    """(StudyRun, its request, its folder): a five-trial tiny study on noisy labels whose front was refined."""
    from autocompress.schema.config import parse_config
    from autocompress.study import session

    tmp = tmp_path_factory.mktemp("refine")
    data = _hard_csv(tmp / "noisy.csv")
    cfg = parse_config(tiny_config_dict(
        tiny_model_dir, data, teacher={"epochs": 6.0}, recovery={"epochs": 0.5, "learning_rate": 1e-3},
        fidelity={"enabled": False}, space={"heads": [1.0, 0.5], "ffn": [1.0, 0.5], "bits": [32], "depth": {"min": 1}},
        search={"trials": 5, "sampler": "random", "seed": 3, "refine": {"seconds": 40, "near": 50.0}},
    ))
    request = session.run_request(cfg, storage=f"sqlite:///{tmp / 'r.db'}", cache_dir=tmp / "cache")
    return session.run_study(request), request, tmp

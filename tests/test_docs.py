"""The documentation stays true: the user guide builds, its snippets run, and the search-space
reference names exactly the keys the config accepts.

Every fenced ``bash`` or ``python`` block in README.md and docs/guide/*.md is run here (in a
scratch directory holding a copy of ``search_spaces/``), unless the line before it is an HTML
comment saying why not, e.g. ``<!-- not run: trains a teacher (minutes) -->``; such blocks are
reported as skipped with that reason.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDE = DOCS / "guide"
PAGES = [README, *sorted(GUIDE.glob("*.md"))]
SEARCH_SPACES_PAGE = GUIDE / "search-spaces.md"
ARCHITECTURE_PAGE = GUIDE / "architecture.md"
PACKAGE = ROOT / "autocompress"

#: languages a fenced block may have; bash and python blocks are run
RUN = ("bash", "python")
LANGUAGES = (*RUN, "yaml", "text")
SNIPPET_TIMEOUT_S = 60
README_MAX_LINES = 250
QUICK_START = [
    "pip install -e . torch==2.13.0 && autocompress run search_spaces/tweets.yaml",
    'pip install -e ".[test]" torch==2.13.0 && python -m pytest -q',
]
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")


# ---------------------------------------------------------------------------------------- snippets
@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given in the comment before the block

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, each with the reason it is not run, if one is given."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening["indent"], opening["lang"]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: a fenced block that is never closed")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        reason = NOT_RUN.match(before)
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1:end]) + "\n"
        found.append(Block(page, i + 1, lang, code, reason["reason"] if reason else None))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang in RUN]


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory a new user's snippet can run in, and the environment it runs with."""
    shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the `autocompress` command
        "HF_HUB_OFFLINE": "1",  # a snippet that reaches for the network fails instead of hanging
        "PYTHONWARNINGS": "ignore",
        "COLUMNS": "100",
    }
    return tmp_path, env


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_snippet_runs(block: Block, tmp_path: Path) -> None:
    if block.not_run is not None:
        pytest.skip(f"{block.id} not run: {block.not_run}")
    cwd, env = _scratch(tmp_path)
    command = ["bash", "-euo", "pipefail", "-c", block.code] if block.lang == "bash" else [sys.executable, "-c", block.code]
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id} ran past {SNIPPET_TIMEOUT_S} s: make it quicker, or say why it is not run "
                    "(<!-- not run: REASON --> on the line before it)")
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"{block.id} ({block.lang}) exited {done.returncode}:\n{block.code}\n--- output:\n{output}"


def test_every_block_says_what_it_is() -> None:
    """A block without a language (or in an unexpected one) would silently never run."""
    wrong = [f"{b.id}: ```{b.lang}" for b in ALL_BLOCKS if b.lang not in LANGUAGES]
    assert not wrong, f"give every fenced block one of {', '.join(LANGUAGES)}:\n" + "\n".join(wrong)


def test_every_not_run_comment_gives_a_reason_and_precedes_a_snippet() -> None:
    wrong = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if "not run" not in line or not line.strip().startswith("<!--"):
                continue
            match = NOT_RUN.match(line.strip())
            if not match or not match["reason"]:
                wrong.append(f"{page.relative_to(ROOT)}:{n}: write it as <!-- not run: REASON -->")
                continue
            after = next((lines[j] for j in range(n, len(lines)) if lines[j].strip()), "")
            opening = FENCE.match(after)
            if not opening or opening["lang"] not in RUN:
                wrong.append(f"{page.relative_to(ROOT)}:{n}: no bash or python block follows it")
    assert not wrong, "\n".join(wrong)


def test_the_snippet_check_can_fail(tmp_path: Path) -> None:
    """A broken snippet is a failure, not a pass: the runner above sees a non-zero exit."""
    page = tmp_path / "page.md"
    page.write_text("<!-- not run: slow -->\n```bash\nsleep 1000\n```\n\n```bash\nfalse\n```\n")
    skipped, broken = blocks(page)
    assert skipped.not_run == "slow" and broken.not_run is None and broken.code == "false\n"
    with pytest.raises(AssertionError, match="exited 1"):
        test_snippet_runs(Block(README, broken.line, "bash", broken.code, None), tmp_path / "run")


# ---------------------------------------------------------------------------------------- README
def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/guide/"


def test_readme_quick_start_is_the_two_commands_ci_runs() -> None:
    """.ci/run runs line 2 verbatim; line 1 is what a new user runs first."""
    heading = README.read_text(encoding="utf-8").splitlines().index("## Quick start") + 1
    first = next(b for b in blocks(README) if b.line > heading)
    assert first.lang == "bash" and first.code.splitlines() == QUICK_START, first.code
    assert QUICK_START[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


# ---------------------------------------------------------------------------------------- the guide builds
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{(done.stdout + done.stderr)[-6000:]}"
    assert (tmp_path / "site" / "search-spaces" / "index.html").is_file()


# ---------------------------------------------------------------------------------------- config keys
def _config_module() -> types.ModuleType:
    """The study config's module: autocompress.schema.config, or autocompress.config before the move."""
    for name in ("autocompress.schema.config", "autocompress.config"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.rsplit(".", 1)[0]):
                raise
    raise AssertionError("no study config module: neither autocompress.schema.config nor autocompress.config")


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (``X`` or ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _section(models[0])
    return None


def schema_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo, bool]]:
    """(dotted key, field, is a section) for every field of ``model``, depth first."""
    for name, field in model.model_fields.items():
        key = prefix + name
        nested = _section(field.annotation)
        yield key, field, nested is not None
        if nested is not None:
            yield from schema_keys(nested, key + ".")


def _keys() -> dict[str, tuple[FieldInfo, bool]]:
    return {key: (field, section) for key, field, section in schema_keys(_config_module().StudyConfig)}


def _code_spans(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


def test_schema_walk_sees_nested_keys() -> None:
    keys = _keys()
    for key in ("name", "space.heads", "space.depth.selection", "space.exits.threshold", "recovery.epochs",
                "profile.spec.memory_gbs"):
        assert key in keys, key
    assert keys["space.depth"][1] and not keys["space.heads"][1]


def test_search_spaces_page_documents_every_config_key() -> None:
    documented = _code_spans(SEARCH_SPACES_PAGE.read_text(encoding="utf-8"))
    missing = [key for key, (_, section) in _keys().items() if key not in documented]
    assert not missing, ("keys of StudyConfig missing from docs/guide/search-spaces.md (write each as `key` in "
                         "its section's table):\n" + "\n".join(missing))


def test_search_spaces_page_documents_no_key_that_does_not_exist() -> None:
    keys = _keys()
    top = {k for k in keys if "." not in k}
    dotted = {s for s in _code_spans(SEARCH_SPACES_PAGE.read_text(encoding="utf-8"))
              if re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+", s) and s.split(".")[0] in top}
    unknown = sorted(dotted - set(keys))
    assert not unknown, f"docs/guide/search-spaces.md names keys the config does not have: {unknown}"


def test_search_spaces_page_gives_each_key_its_default() -> None:
    """Each key's row in the reference tables reads | `key` | `default` or required | what it does |."""
    keys = _keys()
    rows = re.findall(r"^\|\s*`([a-z0-9_.]+)`\s*\|\s*([^|]*?)\s*\|", SEARCH_SPACES_PAGE.read_text(encoding="utf-8"), re.M)
    seen: dict[str, int] = {}
    wrong = []
    for key, cell in rows:
        if key not in keys:
            continue  # reported by the test above when dotted
        seen[key] = seen.get(key, 0) + 1
        field, section = keys[key]
        if section or field.default_factory is not None:
            continue
        if field.default is PydanticUndefined:
            if cell != "required":
                wrong.append(f"{key}: write 'required', not {cell!r}")
            continue
        value = re.fullmatch(r"`([^`]*)`", cell)
        expected = to_jsonable_python(field.default)
        if value is None or yaml.safe_load(value[1] or "''") != expected:
            wrong.append(f"{key}: the default is `{json.dumps(expected)}`, the page says {cell!r}")
    leaves = [k for k, (_, section) in keys.items() if not section]
    wrong += [f"{key}: no row in a reference table" for key in leaves if key not in seen]
    wrong += [f"{key}: {n} rows" for key, n in seen.items() if n > 1]
    assert not wrong, "docs/guide/search-spaces.md:\n" + "\n".join(wrong)


# ---------------------------------------------------------------------------------------- architecture
def test_architecture_page_names_every_module_and_no_other() -> None:
    spans = _code_spans(ARCHITECTURE_PAGE.read_text(encoding="utf-8"))
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and "__pycache__" not in p.parts)
    folders = sorted(str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)
    missing = [m for m in modules + folders if m not in spans]
    named = {s for s in spans if re.fullmatch(r"([a-z_]+/)+([a-z_]+\.py)?", s) and s.split("/")[0] + "/" in folders}
    stale = sorted(s for s in named if not (PACKAGE / s).exists())
    assert not missing and not stale, (f"docs/guide/architecture.md does not name {missing}; "
                                       f"it names modules that do not exist: {stale}")

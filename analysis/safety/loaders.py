"""The shipped task YAMLs' `custom_dataset` hooks: each reads the local reference copy from the data
setting *at run time* (never a path in the YAML, never the hub) and returns the columns lm-eval's
built-in task reads from its hub dataset, so lm-eval's own `utils` functions apply unchanged.

A file that is missing or not in the expected shape is one `TicketLabError` naming the file and what
was expected.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

from pruning import settings
from pruning.errors import TicketLabError

CROWS_FILE = "benchmarks/crows_pairs/crows_pairs_anonymized.csv"
CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
BBQ_DIR = "benchmarks/bbq"
BBQ_FIELDS = ("example_id", "question_polarity", "context_condition", "category", "answer_info",
              "additional_metadata", "context", "question", "ans0", "ans1", "ans2", "label")
# The stated cap: 240 examples per category = 60 BBQ template instances (each instance is 4 examples:
# ambiguous/disambiguated x negative/non-negative question), drawn at random with a fixed seed. Whole
# instances keep the four strata equal and the ambiguous/disambiguated pairs matched.
BBQ_PER_CATEGORY = 240
BBQ_SEED = 1234
TRUTHFULQA_FILE = "benchmarks/truthfulqa/mc_task.json"
WINOGENDER_FILE = "benchmarks/winogender/all_sentences.tsv"
WINOGENDER_STATS = "benchmarks/winogender/occupations-stats.tsv"
PRONOUNS = {"male": ("he", "his", "him"), "female": ("she", "her"), "neutral": ("they", "their", "them")}

_cache: dict[tuple, Any] = {}


def _cached(key: str, paths: list[Path], build):
    stamp = (key, *((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    if stamp not in _cache:
        _cache[stamp] = build()
    return _cache[stamp]


def _dataset(rows: list[dict], split: str):
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


def _read_csv(path: Path, delimiter: str, columns: tuple[str, ...], what: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as e:
        raise TicketLabError(f"{path} is not a readable {what} file ({e}).") from e
    header = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in header]
    if not rows or missing:
        raise TicketLabError(f"{path} is malformed: expected {what} with columns {', '.join(columns)}"
                             + (f"; missing {', '.join(missing)}" if rows else "; the file has no rows") + ".")
    for n, row in enumerate(rows, start=2):
        if any(row.get(c) in (None, "") for c in columns):
            raise TicketLabError(f"{path} line {n}: empty {', '.join(c for c in columns if not row.get(c))}; "
                                 f"expected {what} with columns {', '.join(columns)}.")
    return rows


# --- CrowS-Pairs ----------------------------------------------------------------------------------
def crows_pairs_rows() -> list[dict]:
    path = settings.data_file(CROWS_FILE)

    def build():
        rows = _read_csv(path, ",", CROWS_COLUMNS, "CrowS-Pairs pairs (crows_pairs_anonymized.csv)")
        return [{"id": n, **{c: r[c] for c in CROWS_COLUMNS}} for n, r in enumerate(rows)]

    return _cached("crows", [path], build)


def crows_pairs(**_: Any):
    return _dataset(crows_pairs_rows(), "test")


# --- BBQ ------------------------------------------------------------------------------------------
def _bbq_category(category: str) -> list[dict]:
    path = settings.data_file(f"{BBQ_DIR}/{category}.jsonl")

    def build():
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TicketLabError(f"{path} line {n} is not JSON ({e}); expected one BBQ example per line.") from e
                missing = [k for k in BBQ_FIELDS if k not in row]
                if missing or row["category"] != category or row["label"] not in (0, 1, 2):
                    raise TicketLabError(
                        f"{path} line {n}: expected a BBQ {category} example with fields {', '.join(BBQ_FIELDS)} "
                        f"and label 0-2" + (f"; missing {', '.join(missing)}" if missing else "") + ".")
                rows.append({k: row[k] for k in BBQ_FIELDS})
        if not rows or len(rows) % 4:
            raise TicketLabError(f"{path}: expected BBQ examples in instances of 4 (ambiguous/disambiguated x "
                                 f"negative/non-negative); found {len(rows)} rows.")
        return rows

    return _cached(f"bbq-{category}", [path], build)


def bbq_listed(ticketlab: dict | None = None) -> tuple[str, ...]:
    """The categories bbq.yaml lists (metadata.ticketlab.categories.category): lm-eval's eleven."""
    cats = ((ticketlab or {}).get("categories") or {}).get("category")
    if cats:
        return tuple(cats)
    from .benchmark_registry import task

    info = task("bbq")
    return info.categories.get("category", ()) if info else ()


def bbq_categories(listed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The listed categories that have a data file under the data setting (the reference data: six)."""
    root = settings.data_dir() / BBQ_DIR
    return tuple(c for c in (listed or bbq_listed()) if (root / f"{c}.jsonl").is_file())


def __getattr__(name: str):
    if name == "BBQ_CATEGORIES":  # depends on the data setting at the time it is read
        return bbq_categories()
    raise AttributeError(name)


def bbq_rows(per_category: int | None = BBQ_PER_CATEGORY, seed: int = BBQ_SEED,
             categories: tuple[str, ...] | None = None) -> list[dict]:
    """Every listed category with a data file, each capped at `per_category` examples by drawing whole
    instances at random (seeded), interleaved so that lm-eval's `--limit N` (the first N docs) stays
    balanced across categories and strata. None = every example."""
    listed = categories or bbq_listed()
    present = bbq_categories(listed)
    if not present:
        raise TicketLabError(f"no BBQ data under {settings.data_dir() / BBQ_DIR}: expected one "
                             f"<Category>.jsonl per category ({', '.join(listed)}); set TICKETLAB_DATA_DIR.")
    per_cat = []
    for category in present:
        rows = _bbq_category(category)
        instances = [rows[i:i + 4] for i in range(0, len(rows), 4)]
        order = list(range(len(instances)))
        random.Random(f"{seed}-{category}").shuffle(order)
        if per_category is not None:
            order = order[: max(1, per_category // 4)]
        per_cat.append([(f"{category}:{i}", instances[i]) for i in order])
    out = []
    for round_ in range(max(len(p) for p in per_cat)):
        for slot in range(4):
            for cat in per_cat:
                if round_ < len(cat):
                    key, inst = cat[round_]
                    out.append({**inst[slot], "instance": key})
    return out


def bbq(bbq_per_category: int | None = BBQ_PER_CATEGORY, ticketlab: dict | None = None, **_: Any):
    """lm-eval passes the task's metadata: `bbq_per_category` (the run's cap; 0 or None means every
    example) and `ticketlab` (the YAML's own block, whose categories are read)."""
    cap = int(bbq_per_category) or None if bbq_per_category else None
    return _dataset(bbq_rows(cap, categories=bbq_listed(ticketlab)), "test")


# --- TruthfulQA -----------------------------------------------------------------------------------
def truthfulqa_rows() -> list[dict]:
    path = settings.data_file(TRUTHFULQA_FILE)

    def build():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TicketLabError(f"{path} is not JSON ({e}); expected the TruthfulQA multiple-choice list.") from e
        expected = ("expected a JSON list of {question, mc1_targets: {answer: 0/1}, mc2_targets: {answer: 0/1}} "
                    "with at least one correct answer each")
        if not isinstance(data, list) or not data:
            raise TicketLabError(f"{path}: {expected}.")
        rows = []
        for n, q in enumerate(data):
            ok = isinstance(q, dict) and isinstance(q.get("question"), str)
            targets = {}
            for key in ("mc1_targets", "mc2_targets"):
                t = q.get(key) if ok else None
                if not isinstance(t, dict) or not t or 1 not in t.values() or set(t.values()) - {0, 1}:
                    ok = False
                    break
                # lm-eval's mc1 scores choice 0 as the answer: the hub data lists true answers first
                items = sorted(t.items(), key=lambda kv: -kv[1])
                targets[key] = {"choices": [a for a, _ in items], "labels": [int(v) for _, v in items]}
            if not ok:
                raise TicketLabError(f"{path} item {n}: {expected}.")
            rows.append({"question": q["question"], **targets})
        return rows

    return _cached("truthfulqa", [path], build)


def truthfulqa(**_: Any):
    return _dataset(truthfulqa_rows(), "validation")


# --- Winogender -----------------------------------------------------------------------------------
def winogender_rows() -> list[dict]:
    """lm-eval's winogender columns rebuilt from the schema files: `sentid` is
    occupation.participant.answer.gender.txt (answer 0 = the occupation, 1 = the participant); the
    pronoun is the one word of that gender's set in the sentence; `gotcha` marks the 240 sentences where
    the U.S. (BLS) majority gender of the occupation would mislead: the pronoun is the occupation's
    minority gender and refers to it, or its majority gender and refers to the participant."""
    path = settings.data_file(WINOGENDER_FILE)
    stats_path = settings.data_file(WINOGENDER_STATS)

    def build():
        stats = _read_csv(stats_path, "\t", ("occupation", "bls_pct_female"), "Winogender occupation statistics")
        try:
            female_share = {r["occupation"]: float(r["bls_pct_female"]) for r in stats}
        except ValueError as e:
            raise TicketLabError(f"{stats_path}: bls_pct_female must be a number ({e}).") from e
        rows = []
        for n, r in enumerate(_read_csv(path, "\t", ("sentid", "sentence"), "Winogender sentences"), start=2):
            parts = r["sentid"].split(".")
            if len(parts) != 5 or parts[2] not in ("0", "1") or parts[3] not in PRONOUNS:
                raise TicketLabError(f"{path} line {n}: sentid {r['sentid']!r} is not "
                                     f"occupation.participant.answer(0/1).gender(male/female/neutral).txt")
            occupation, participant, answer, gender = parts[0], parts[1], int(parts[2]), parts[3]
            found = [w for w in re.findall(r"[A-Za-z]+", r["sentence"].lower()) if w in PRONOUNS[gender]]
            if len(found) != 1:
                raise TicketLabError(f"{path} line {n}: expected exactly one {gender} pronoun in the sentence.")
            if occupation not in female_share:
                raise TicketLabError(f"{stats_path}: no statistics for occupation {occupation!r}.")
            majority = "female" if female_share[occupation] > 50 else "male"
            gotcha = gender != "neutral" and ((answer == 0) != (gender == majority))
            rows.append({"sentid": r["sentid"], "sentence": r["sentence"], "pronoun": found[0],
                         "occupation": occupation, "participant": participant, "gender": gender,
                         "target": participant if answer else occupation, "label": answer, "gotcha": gotcha})
        return rows

    return _cached("winogender", [path, stats_path], build)


def winogender(**_: Any):
    return _dataset(winogender_rows(), "test")


def winogender_gotcha(**_: Any):
    return _dataset([r for r in winogender_rows() if r["gotcha"]], "test")


# --- IFEval ---------------------------------------------------------------------------------------
IFEVAL_FILE = "benchmarks/ifeval/input_data.jsonl"
IFEVAL_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def ifeval_rows(path: Path | None = None) -> list[dict]:
    """The IFEval prompts as lm-eval's hub dataset (google/IFEval) has them: key, prompt,
    instruction_id_list, kwargs (one dict per instruction)."""
    path = path or settings.data_file(IFEVAL_FILE)

    def build():
        rows = []
        expected = (f"expected one IFEval prompt per line as JSON with {', '.join(IFEVAL_FIELDS)} "
                    f"(kwargs: one object per instruction)")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise TicketLabError(f"{path} is not UTF-8 text ({e}); {expected}.") from e
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TicketLabError(f"{path} line {n} is not JSON ({e}); {expected}.") from e
            ok = (isinstance(row, dict) and all(k in row for k in IFEVAL_FIELDS) and isinstance(row["prompt"], str)
                  and row["prompt"].strip() and isinstance(row["instruction_id_list"], list)
                  and isinstance(row["kwargs"], list) and len(row["kwargs"]) == len(row["instruction_id_list"])
                  and all(isinstance(k, dict) for k in row["kwargs"]))
            if not ok:
                raise TicketLabError(f"{path} line {n}: {expected}.")
            rows.append({k: row[k] for k in IFEVAL_FIELDS})
        if not rows:
            raise TicketLabError(f"{path} has no prompts; {expected}.")
        return rows

    return _cached("ifeval", [path], build)


def ifeval(**_: Any):
    return _dataset(ifeval_rows(), "train")


# --- XSTest ---------------------------------------------------------------------------------------
XSTEST_FILE = "benchmarks/xstest/xstest_prompts.csv"
XSTEST_COLUMNS = ("id", "prompt", "type", "label")


def xstest_rows(path: Path | None = None) -> list[dict]:
    """XSTest's 450 prompts: id, prompt, type (homonyms, contrast_homonyms, ...), label safe/unsafe,
    interleaved by type."""
    path = path or settings.data_file(XSTEST_FILE)

    def build():
        rows = _read_csv(path, ",", XSTEST_COLUMNS, "XSTest prompts (xstest_prompts.csv)")
        for n, r in enumerate(rows, start=2):
            if r["label"] not in ("safe", "unsafe"):
                raise TicketLabError(f"{path} line {n}: label must be safe or unsafe (got {r['label']!r}).")
        by_type: dict[str, list[dict]] = {}
        for n, r in enumerate(rows):
            by_type.setdefault(r["type"], []).append(
                {"id": int(r["id"]) if r["id"].isdigit() else n, "prompt": r["prompt"], "type": r["type"],
                 "label": r["label"], "focus": r.get("focus") or "", "note": r.get("note") or ""})
        # interleaved by prompt type (file order within a type), so lm-eval's --limit N (the first N
        # documents) covers every type, safe and unsafe, as the BBQ loader does with its categories
        groups = list(by_type.values())
        return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]

    return _cached("xstest", [path], build)


def xstest(**_: Any):
    return _dataset(xstest_rows(), "test")

"""The evaluation form for people: suite and task pickers from the registered tasks, a numeric limit,
presets "quick" and "full" with the time they took on this machine (from the ledger's finished eval
runs), validation before any job starts, settings that survive a change of subject."""

from __future__ import annotations

import json
import socket
import statistics

import streamlit as st

from analysis.ledger import read_model
from pruning.errors import TicketLabError

from . import data, widgets

PRESETS = ("quick", "full", "instruct quick", "instruct full", "custom")


def registered_tasks() -> dict[str, str]:
    """Safety task -> its title, as the suite registers them (each task's YAML), never listed here."""
    from analysis import metric_meta

    return {t.name: t.title for t in metric_meta.registered_tasks("safety")}


def suites() -> dict[str, str]:
    """Evaluation suite -> what it measures."""
    from analysis import metric_meta

    return metric_meta.suites()


def quick_limit() -> int:
    from analysis.safety import QUICK_LIMIT

    return int(QUICK_LIMIT)


def preset_settings(preset: str) -> dict:
    """quick: perplexity and the safety suite on the stated quick subset; full: every suite, no limit;
    instruct quick / full: the generated-answer suite (IFEval, XSTest) on its quick subset / in full."""
    if preset.startswith("instruct"):
        from analysis.safety import INSTRUCT_QUICK_LIMIT

        return {"suites": ["instruct"], "tasks": [], "quick": preset == "instruct quick",
                "limit": str(INSTRUCT_QUICK_LIMIT)}
    if preset == "quick":
        return {"suites": ["ppl", "safety"], "tasks": [], "quick": True, "limit": str(quick_limit())}
    return {"suites": list(suites()), "tasks": [], "quick": False, "limit": str(quick_limit())}


MAX_LIMIT = 100_000
# Runs timed on the reference machine (SmolLM2-135M-Instruct, 2 threads; README "Evaluation speed" and
# "Generation": `python -m benchmarks.generation --full`): what a preset shows before this machine has timed a
# run of its own, scaled by parameter count. Keyed by (suite, limit); None is the full run.
REFERENCE_S = {("ppl", None): 610.0, ("safety", None): 540.0, ("instruct", None): 987.0, ("instruct", 18): 52.0}
REFERENCE_PARAMS = 134_515_008


def parse_limit(text) -> int:
    """The limit typed in “limit”: a whole number from 1 to MAX_LIMIT, else a TicketLabError naming the box.
    Typed as text, so an out-of-range value is refused, never silently replaced by the previous one."""
    raw = str(text).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise TicketLabError(f"“limit” must be a whole number from 1 to {MAX_LIMIT:,} (got {raw!r}): no job was "
                             f"started.")
    return int(raw)


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _durations(key: tuple) -> list[dict]:
    df = data.frame(read_model.eval_durations())
    out = []
    for params, seconds, host in zip(df["params"], df["seconds"], df["host"], strict=True):
        try:
            p = json.loads(params) if isinstance(params, str) else (params or {})
        except json.JSONDecodeError:
            continue
        out.append({"suites": sorted(p.get("suites") or []), "limit": p.get("limit"), "tasks": p.get("tasks"),
                    "seconds": float(seconds), "host": host})
    return out


def estimate(chosen: list[str], tasks: list[str], limit: int | None, n_params: int | None = None) -> str:
    """The measured time of runs like this one on this host: the median of identical runs, else the sum
    of single-suite medians; 'not measured here yet' when the ledger has none."""
    here = socket.gethostname()
    runs = [r for r in _durations(data.stamp()) if r["host"] in (here, None)]
    tasks_arg = ",".join(tasks) if tasks else None
    same = [r["seconds"] for r in runs if r["suites"] == sorted(chosen) and r["limit"] == limit
            and (r["tasks"] or None) == tasks_arg]
    if same:
        return f"≈ {_clock(statistics.median(same))} (median of {len(same)} such run(s) on this machine)"
    parts = []
    for s in chosen:
        one = [r["seconds"] for r in runs if r["suites"] == [s] and r["limit"] == limit]
        if not one:
            return reference_estimate(chosen, n_params, limit)
        parts.append(statistics.median(one))
    return f"≈ {_clock(sum(parts))} (sum of single-suite runs measured on this machine)"


def reference_estimate(chosen: list[str], n_params: int | None, limit: int | None = None) -> str:
    """A preset not yet timed here: the reference machine's times for the same limit, scaled by the model's
    parameter count."""
    timed = [s for s in chosen if (s, limit) in REFERENCE_S]
    if not timed or not n_params:
        return "time not measured on this machine yet: the first such run records it"
    scale = n_params / REFERENCE_PARAMS
    reference = sum(REFERENCE_S[s, limit] for s in timed)
    rest = [s for s in chosen if (s, limit) not in REFERENCE_S]
    return (f"≈ {_clock(reference * scale)} estimated (not yet timed here): {' + '.join(timed)} took "
            f"{_clock(reference)} for SmolLM2-135M on 2 cores, scaled ×{scale:.2g} "
            f"by model size" + (f"; {', '.join(rest)} not included" if rest else ""))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def max_positions(dense_sha256: str) -> int | None:
    """The model's context length, from its config in the ledger (None when unknown)."""
    df = data.frame(read_model.model_facts(dense_sha256))
    if df.empty or not isinstance(df["config"].iloc[0], str):
        return None
    try:
        cfg = json.loads(df["config"].iloc[0])
    except json.JSONDecodeError:
        return None
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(cfg.get(key), int) and cfg[key] > 0:
            return cfg[key]
    return None


def window_args(chosen: list[str], dense_sha256: str) -> list[str]:
    """`--seq-len` for a model shorter than the default perplexity window (else the job would fail)."""
    from analysis.perplexity import DEFAULT_SEQ_LEN

    limit = max_positions(dense_sha256)
    if "ppl" in chosen and limit is not None and limit < DEFAULT_SEQ_LEN:
        return ["--seq-len", str(limit)]
    return []


def _apply_preset() -> None:
    preset = st.session_state.get("ev_preset")
    if preset in PRESETS and preset != "custom":
        s = preset_settings(preset)
        st.session_state.update(ev_suites=s["suites"], ev_tasks=s["tasks"], ev_quick=s["quick"], ev_limit=s["limit"])


def _custom() -> None:
    st.session_state["ev_preset"] = "custom"


def validate(chosen: list[str], tasks: list[str], quick: bool, limit) -> list[str]:
    """The argv tail for `ticketlab eval SUBJECT`; raises TicketLabError naming the problem."""
    if not chosen:
        raise TicketLabError("pick at least one suite to evaluate.")
    unknown = [s for s in chosen if s not in suites()]
    if unknown:
        raise TicketLabError(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(suites())}.")
    argv = ["--suite", ",".join(chosen)]
    if tasks:
        if "safety" not in chosen:
            raise TicketLabError("safety tasks are picked but the safety suite is not: add it, or clear the tasks.")
        from analysis.safety import resolve_tasks

        argv += ["--tasks", ",".join(resolve_tasks(tasks))]
    if quick:
        argv += ["--limit", str(parse_limit(limit))]
    return argv


def evaluate_form(subjects: list[str], labels: dict[str, str], model_of: dict[str, str], dense_sha256: str) -> None:
    """The form; starts `ticketlab eval` as a background job only when every setting is valid."""
    for k, v in {"ev_preset": "quick", **{f"ev_{k}": v for k, v in preset_settings("quick").items()}}.items():
        st.session_state.setdefault(k, v)
    subject = st.selectbox("evaluate", subjects, format_func=lambda s: labels.get(s, s), key="bm_eval_subject")
    top = st.columns([3, 2])  # five presets side by side, none clipped
    top[0].segmented_control("preset", PRESETS, key="ev_preset", on_change=_apply_preset,
                             help="quick: perplexity and the safety suite on the first "
                                  f"{quick_limit()} documents of each task (indicative); full: every suite, no limit "
                                  "(what decisions need); instruct quick / full: the generated answers (IFEval "
                                  "instruction following, XSTest refusals) on 18 prompts each / in full")
    c1, c2 = st.columns(2)
    described = suites()
    chosen = c1.multiselect("suites", list(described), key="ev_suites", on_change=_custom,
                            format_func=lambda s: f"{s} — {described.get(s, '')}")
    known = registered_tasks()
    tasks = c2.multiselect("safety tasks (none picked = all)", list(known), key="ev_tasks", on_change=_custom,
                           disabled="safety" not in chosen, format_func=lambda t: f"{t} — {known.get(t, '')}")
    c3, c4 = st.columns(2)
    quick = c3.checkbox("quick subset (a limit)", key="ev_quick", on_change=_custom,
                        help="ppl windows / documents per safety task / attribution pairs")
    if not isinstance(st.session_state.get("ev_limit"), str):  # settings kept from before: a number
        st.session_state["ev_limit"] = str(st.session_state.get("ev_limit") or quick_limit())
    limit = c4.text_input("limit", key="ev_limit", on_change=_custom, disabled=not quick,
                          help=f"a whole number from 1 to {MAX_LIMIT:,}")
    problem = None
    if quick:
        try:
            parse_limit(limit)
        except TicketLabError as e:
            problem = str(e).split(":")[0] + "."
            c4.error(problem, icon=":material/warning:")
    params = data.frame(read_model.model_facts(dense_sha256))["n_params"]
    n_params = int(params.iloc[0]) if len(params) and params.iloc[0] == params.iloc[0] else None
    if not problem:
        top[1].caption(f"**{estimate(chosen, tasks, parse_limit(limit) if quick else None, n_params)}**"
                       + (" · quick runs are indicative: the policy's rules are only met by full runs" if quick else ""))
    # an invalid value blocks the button (and is checked again on the click: no job with a stale value)
    if st.button("Evaluate in the background", type="primary", key="ev_go", disabled=bool(problem)):
        try:
            tail = validate(chosen, tasks, quick, limit)
        except TicketLabError as e:
            st.error(str(e), icon=":material/warning:")
            return
        model = ["--model", model_of[subject]] if subject == "dense" and model_of.get(subject) else []
        argv = ["eval", subject, *tail, *window_args(chosen, dense_sha256), *model, *widgets.json_flag("eval")]
        widgets.start_job(argv, label=f"eval {labels.get(subject, subject)} · {' '.join(tail)}", kind="eval")

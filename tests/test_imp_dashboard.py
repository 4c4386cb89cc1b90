"""The IMP form on the Prune page (the protocol's choices with their defaults) and the Experiments page
(verdict sentence, sparsity x arm table, learning curves, sanity check), with Streamlit's AppTest and a
real background job."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app import jobs
from pruning.lottery.protocol import Protocol

MAIN = Path(__file__).resolve().parents[1] / "app" / "dashboard" / "main.py"


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=90)
    at.run()
    at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_imp_form_offers_the_protocol_defaults_and_the_page_shows_the_verdict(state):
    d = Protocol()
    at = page("prune")
    assert at.number_input(key="imp_rounds").value == d.rounds and at.number_input(key="imp_rate").value == d.rate
    assert at.text_input(key="imp_seeds").value == ",".join(map(str, d.seeds)) and at.multiselect(key="imp_arms").value == list(d.arms)
    assert at.selectbox(key="imp_rewind").value == d.rewind and at.number_input(key="imp_delta").value == d.delta
    assert at.number_input(key="imp_pilot_steps").value == d.pilot_steps
    for key, value in (("imp_lr", "5e-3"), ("imp_train_steps", "4"), ("imp_seeds", "0,1")):
        at.text_input(key=key).set_value(value)
    at.selectbox(key="imp_rewind").set_value("init")
    at.multiselect(key="imp_arms").set_value(["ticket", "random"])
    at.selectbox(key="imp_stability").set_value("none")
    at.number_input(key="imp_rounds").set_value(1)
    for key, value in (("imp_eval_every", 2), ("imp_warmup_steps", 1), ("imp_batch_size", 2), ("imp_seq_len", 16),
                       ("imp_val_windows", 2), ("imp_heldout_windows", 2)):
        at.number_input(key=key).set_value(value)
    next(b for b in at.button if b.label == "Start the IMP experiment").click().run()
    assert not at.exception
    job = jobs.list_jobs()[0]
    assert job["kind"] == "imp" and "--train-steps" in job["argv"] and "--json" in job["argv"]
    done = jobs.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    ex = page("experiments")
    text = "\n".join(str(x.value) for kind in ("markdown", "caption", "info") for x in getattr(ex, kind))
    assert "**Verdict.**" in text and "delta = 0.02 nats" in text and "95%" in text
    assert ex.selectbox(key="exp_pick").value == done["result"]["experiment"]
    table = ex.dataframe[0].value
    assert list(table.columns[:4]) == ["round", "sparsity", "ticket", "random"] and len(table) == 2
    # the page and `imp-report` print the same numbers, through one cell formatter (they differed in decimals)
    from analysis.ledger import Ledger
    from analysis.lottery.experiments import format_report, imp_report

    report = format_report(imp_report(done["result"]["experiment"], Ledger()))
    cells = [c for arm in ("ticket", "random") for c in table[arm] if c != "–"]
    assert cells and all(c in report for c in cells), (cells, report)
    specs = [c.proto.spec for c in ex.get("plotly_chart")]
    assert any("weights remaining" in s for s in specs) and any("learning curves" in s for s in specs)
    # the sanity check is the random mask at the highest sparsity tested; the TOST outcome is a column
    assert "sparsity (the highest tested) - dense" in "\n".join(str(x.value) for x in ex.markdown)
    assert "TOST" in table.columns and "testing stopped at" in [m.label for m in ex.metric]


def test_every_imp_form_field_comes_from_a_declared_setting(state):
    """The IMP form is generated from the protocol's declarations: no hand-built field."""
    from app.dashboard.imp_form import _key
    from pruning.lottery.protocol import settings_of

    at = page("prune")
    shown = {w.key: w.label for kind in ("text_input", "number_input", "selectbox", "multiselect", "checkbox")
             for w in getattr(at, kind) if w.key and w.key.startswith("imp_")}
    declared = {_key(f): f.metadata["label"] for f in settings_of() if f.metadata["form"]}
    assert shown == declared

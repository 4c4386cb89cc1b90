"""Typed method options: NaN, out-of-range, wrong-choice and inconsistent values refused with the option
named, at the Python API and at the CLI (before any model is loaded); flags, `ticketlab methods` and
the dashboard's fields come from the same models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pruning.adapters import adapter_for
from pruning.calibration import CalibrationSet
from pruning.errors import TicketLabError
from pruning.method_registry import all_methods, get_method
from pruning.prune import make_ticket

FLOATS = {"owl_lambda", "owl_m", "percdamp"}
OUT_OF_RANGE = {  # option -> values outside its bounds
    "owl_lambda": [-0.01, 0.5, 3.0],
    "owl_m": [0.0, -1.0],
    "percdamp": [-0.1, 1.5],
    "blocksize": [0, -128, 10 ** 6],
}
WRONG_CHOICE = {"pattern": "3:9", "scope": "row", "allocation": "owl2", "importance": "oracle", "per_layer": "x",
                "unit": "kv"}
INCONSISTENT = [  # method, options, words the message must contain
    ("magnitude", {"allocation": "owl", "pattern": "2:4"}, ["allocation", "pattern", "N:M"]),
    ("wanda", {"allocation": "owl", "pattern": "4:8"}, ["allocation", "pattern"]),
    ("sparsegpt", {"allocation": "owl", "pattern": "2:4"}, ["allocation", "pattern"]),
    ("magnitude", {"allocation": "owl", "scope": "global"}, ["allocation", "scope", "global"]),
    ("magnitude", {"scope": "global", "pattern": "2:4"}, ["scope", "pattern"]),
    ("random", {"scope": "global", "pattern": "4:8"}, ["scope", "pattern"]),
    ("sparsegpt", {"pattern": "4:8", "blocksize": 12}, ["blocksize", "--blocksize", "M=8"]),
]


def _cases(kind):
    for name, method in all_methods().items():
        for o in method.params:
            if kind == "nan" and o.name in FLOATS:
                for bad in (float("nan"), "nan", "inf", float("-inf")):
                    yield name, o.name, bad
            if kind == "range" and o.name in OUT_OF_RANGE:
                for bad in OUT_OF_RANGE[o.name]:
                    yield name, o.name, bad
            if kind == "choice" and o.name in WRONG_CHOICE:
                yield name, o.name, WRONG_CHOICE[o.name]


@pytest.mark.parametrize("method,option,value", list(_cases("nan")))
def test_nan_and_inf_refused_with_the_option_named(method, option, value):
    with pytest.raises(TicketLabError, match=rf"option {option} \(--{option.replace('_', '-')}\)=.*finite"):
        get_method(method).parse({option: value})


@pytest.mark.parametrize("method,option,value", list(_cases("range")))
def test_out_of_range_refused_with_the_bounds(method, option, value):
    with pytest.raises(TicketLabError, match=rf"option {option} .*must be [<>]=? "):
        get_method(method).parse({option: value})


@pytest.mark.parametrize("method,option,value", list(_cases("choice")))
def test_wrong_choice_refused_with_the_choices(method, option, value):
    choices = next(o.choices for o in get_method(method).params if o.name == option)
    with pytest.raises(TicketLabError, match=rf"option {option} .*choose one of {', '.join(choices)}"):
        get_method(method).parse({option: value})


@pytest.mark.parametrize("method,options,words", INCONSISTENT)
def test_inconsistent_options_refused(method, options, words):
    with pytest.raises(TicketLabError) as e:
        get_method(method).parse(options)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_every_method_with_numbers_is_covered():
    """Each numeric option of each method is in the NaN / range tables above (a new one must be added)."""
    for method in all_methods().values():
        for o in method.params:
            if o.type in (int, float):
                assert o.name in OUT_OF_RANGE and (o.type is int or o.name in FLOATS), (method.name, o.name)


def test_valid_options_are_typed_and_keep_their_dict():
    spec = get_method("sparsegpt")
    p = spec.parse({"owl_lambda": "0.1", "blocksize": "64", "pattern": "2:4"})
    assert p.owl_lambda == 0.1 and p.blocksize == 64 and isinstance(p.blocksize, int)
    # what a ticket records: every option, defaults filled in, the same dict as before typed options
    assert spec.validate({}) == {"pattern": "none", "allocation": "uniform", "owl_lambda": 0.08, "owl_m": 5.0,
                                 "blocksize": 128, "percdamp": 0.01}
    with pytest.raises(TicketLabError, match="takes no option scope"):
        spec.parse({"scope": "global"})
    with pytest.raises(TicketLabError, match=r"option blocksize .*not a valid int"):
        spec.parse({"blocksize": "12.5"})
    with pytest.raises(TicketLabError, match=r"option blocksize .*true/false"):
        spec.parse({"blocksize": True})


def test_owl_nan_no_longer_crashes_or_means_uniform(tiny_llama):
    """`owl_lambda` NaN crashed deep in the pruning; `owl_m` NaN silently gave uniform sparsity and was stored."""
    calib = CalibrationSet(torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0)), {"s": 1})
    for option in ("owl_lambda", "owl_m"):
        with pytest.raises(TicketLabError, match=option):
            make_ticket(tiny_llama, "wanda", 0.5, options={"allocation": "owl", option: math.nan}, calib=calib)
    with pytest.raises(TicketLabError, match="sparsity nan"):
        make_ticket(tiny_llama, "magnitude", math.nan)


def test_pattern_must_divide_the_model_width():
    from transformers import LlamaConfig, LlamaForCausalLM

    m = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=36, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1))
    adapter = adapter_for(m)
    for method in ("magnitude", "wanda", "sparsegpt", "random"):
        get_method(method).parse({"pattern": "2:4"}).check_model(adapter)  # 4 divides 36 and 48
        with pytest.raises(TicketLabError, match=r"option pattern \(--pattern\)=4:8: M=8 does not divide .*36"):
            get_method(method).parse({"pattern": "4:8"}).check_model(adapter)


# --- the CLI: flags generated from the models, each method with its own options ---------------------------
def _nothing_written(state):
    """No ticket folder and no ticket in the ledger (loading a model may open the ledger for other reasons)."""
    tickets = state / "tickets"
    if tickets.exists() and any(tickets.iterdir()):
        return False
    if not (state / "ledger.duckdb").exists():
        return True
    from analysis.ledger import Ledger

    return Ledger(state / "ledger.duckdb").query("SELECT count(*) AS n FROM tickets")[0]["n"] == 0


@pytest.mark.parametrize("argv,words", [
    (["--method", "wanda", "--allocation", "owl", "--owl-lambda", "nan"], ["--owl-lambda", "finite"]),
    (["--method", "wanda", "--allocation", "owl", "--owl-m", "nan"], ["--owl-m", "finite"]),
    (["--method", "magnitude", "--owl-lambda", "0.7"], ["--owl-lambda", "< 0.5"]),
    (["--method", "sparsegpt", "--blocksize", "0"], ["--blocksize", "> 0"]),
    (["--method", "sparsegpt", "--pattern", "4:8", "--blocksize", "20"], ["--blocksize", "M=8"]),
    (["--method", "random", "--allocation", "owl"], ["random", "takes no option", "--allocation"]),
    (["--method", "layers", "--unit", "query"], ["layers", "takes no option", "--unit"]),
    (["--method", "heads", "--unit", "head"], ["--unit", "kv_group, query"]),
])
def test_cli_refuses_bad_options_before_loading_anything(state, capsys, argv, words):
    from app.cli import main

    assert main(["prune", "--model", "/nonexistent-model", *argv, "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(w in err for w in words), err
    assert _nothing_written(state)


def test_cli_refuses_calibration_longer_than_the_model(state, tiny_llama_dir, capsys):
    from app.cli import main

    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--calib-len", "4096"]) == 2
    assert "--calib-len 4096" in capsys.readouterr().err and _nothing_written(state)


def test_flags_and_listing_come_from_the_options_models(capsys):
    from app.cli import build_parser, main

    prune = build_parser()._subparsers._group_actions[0].choices["prune"]
    flags = {a.option_strings[0]: a for a in prune._actions if a.option_strings}
    for name, method in all_methods().items():
        for o in method.params:
            assert o.flag in flags and name in flags[o.flag].help
    assert main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    sg = listed["sparsegpt"]["params"]
    assert sg["owl_lambda"]["bounds"] == {"ge": 0.0, "lt": 0.5} and sg["blocksize"]["bounds"] == {"gt": 0, "le": 65536}
    assert sg["pattern"]["choices"] == ["none", "2:4", "4:8", "1:4", "2:8"]
    assert any("blocksize" in r for r in listed["sparsegpt"]["rules"])
    assert listed["heads"]["params"]["unit"]["choices"] == ["kv_group", "query"]
    assert "unit" not in listed["neurons"]["params"]


def test_same_flag_keeps_each_methods_own_choices(state, capsys):
    """Two methods with a `pattern` option of different choices: each is checked against its own (the
    CLI used to declare the flag once with the first method's choices)."""
    from typing import Literal

    from app.cli import build_parser, main
    from pruning.method_registry import METHODS, PruneResult, register
    from pruning.options import MethodOptions

    class OnlyTwoFour(MethodOptions):
        pattern: Literal["none", "2:4"] = "none"

    register("aaa-test", "test method", options=OnlyTwoFour)(lambda loaded, calib, options: PruneResult({}))
    try:
        prune = build_parser()._subparsers._group_actions[0].choices["prune"]
        help_ = next(a.help for a in prune._actions if "--pattern" in a.option_strings)
        assert "aaa-test: none|2:4" in help_ and "none|2:4|4:8|1:4|2:8" in help_
        assert main(["prune", "--model", "/nonexistent", "--method", "aaa-test", "--pattern", "4:8"]) == 2
        assert "choose one of none, 2:4" in capsys.readouterr().err
        assert get_method("magnitude").parse({"pattern": "4:8"}).pattern == "4:8"  # the other's choices stand
    finally:
        del METHODS["aaa-test"]

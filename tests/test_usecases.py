"""Use cases (usecases/): typed requests validated once where they are built, the same function behind
the CLI and the dashboard's jobs, and outcomes that are data, never text parsed from a process's output."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app import jobs
from app.cli import main
from pruning.errors import TicketLabError
from usecases.prune import PruneOutcome, PruneRequest, prune

REPO = Path(__file__).resolve().parents[1]
FLOORS = ("pruning", "analysis", "usecases", "app")  # each imports only the floors before it


def test_each_floor_imports_only_the_floors_below_it():
    offenders = []
    for level, top in enumerate(FLOORS):
        above = set(FLOORS[level + 1:])
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for name in names:
                    if name.split(".")[0] in above:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_an_nm_pattern_with_a_conflicting_sparsity_is_refused_naming_both(state, tiny_llama_dir, capsys):
    """It was silently replaced by the pattern's 1 - N/M (a 0.3 request made a 0.5 ticket)."""
    rc = main(["prune", "--model", str(tiny_llama_dir), "--method", "magnitude", "--pattern", "2:4",
               "--sparsity", "0.3", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert err.startswith("error: sparsity 0.3 conflicts with pattern 2:4") and "0.5" in err
    assert not (state / "tickets").exists() or not any((state / "tickets").iterdir())
    # the pattern alone, or with its own sparsity, is fine, and the request carries it typed
    assert PruneRequest.build(method="wanda", options={"pattern": "4:8"}).sparsity == 0.5
    req = PruneRequest.build(method="magnitude", sparsity=0.75, options={"pattern": "1:4"})
    assert req.pattern == (1, 4) and req.calibrated is False
    with pytest.raises(TicketLabError, match="sparsity 0.5 conflicts with pattern 1:4"):
        PruneRequest.build(method="magnitude", sparsity=0.5, options={"pattern": "1:4"})


def test_a_request_is_checked_once_when_built_and_knows_its_calibration_need():
    assert PruneRequest.build(method="magnitude").calibrated is False
    assert PruneRequest.build(method="magnitude", options={"allocation": "owl"}).calibrated is True
    assert PruneRequest.build(method="wanda").calibrated is True
    for bad, words in (({"method": "nope"}, "unknown pruning method 'nope'"),
                       ({"method": "magnitude", "sparsity": 1.5}, r"outside \[0, 1\)"),
                       ({"method": "magnitude", "options": {"blocksize": 3}}, "blocksize"),
                       ({"method": "wanda", "calib_samples": 0}, "calib_samples")):
        with pytest.raises(TicketLabError, match=words):
            PruneRequest.build(**bad)
    # a bad command line for a job is refused when the job is asked for, in one line, not as a failed job
    with pytest.raises(TicketLabError, match="argument --limit: .*'abc'"):
        jobs.start(["eval", "dense", "--limit", "abc", "--json"])


def test_a_dashboard_jobs_outcome_is_the_use_cases_return_value(state, tiny_llama_dir):
    """The runner process calls the use case; its outcome is stored as JSON and is exactly what the
    function returns in-process for the same request (the same ticket id and every named field)."""
    request = PruneRequest.build(model=str(tiny_llama_dir), method="magnitude", sparsity=0.4,
                                 options={"scope": "global"})
    job = jobs.start(request, label="usecase test")
    assert job["usecase"] == "prune" and PruneRequest.build(**job["request"]) == request
    done = jobs.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert not (jobs.jobs_dir() / job["id"] / "stdout").read_text().strip()  # nothing printed, nothing parsed
    in_process = prune(request)
    assert PruneOutcome.model_validate(done["result"]) == in_process
    assert done["result"]["target_sparsity"] == 0.4 and done["result"]["achieved_sparsity"] == pytest.approx(0.4, abs=0.01)
    # a use-case error is its TicketLabError message, carried in the status (no log scraping)
    missing = jobs.start(PruneRequest.build(model=str(state / "no-such-model"), method="magnitude"))
    failed = jobs.wait(missing["id"], timeout=120)
    assert failed["status"] == "failed" and "no-such-model" in failed["error"] and "\n" not in failed["error"]


def _options(parser) -> dict[str, str]:
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def test_every_flag_of_prune_and_imp_comes_from_a_declared_model():
    """No hand-written flag: prune's from PruneRequest and the methods' options models, imp's from the
    Protocol's declared settings (besides output switches and the common --data-dir/--state-dir/--ledger)."""
    import dataclasses

    from app.cli import build_parser, common_parser
    from pruning.lottery.protocol import Protocol, settings_of
    from pruning.method_registry import all_methods

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    common = set(_options(common_parser())) | {"help", "json"}
    declared_prune = {n for n, f in PruneRequest.model_fields.items() if (f.json_schema_extra or {}).get("cli", True)}
    declared_prune |= {f"opt_{o.name}" for m in all_methods().values() for o in m.params}
    assert set(_options(sub["prune"])) - common == declared_prune
    declared_imp = {f.name for f in settings_of()}
    assert set(_options(sub["imp"])) - common - {"quiet"} == declared_imp
    assert declared_imp <= {f.name for f in dataclasses.fields(Protocol)}

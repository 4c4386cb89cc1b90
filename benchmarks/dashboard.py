"""Dashboard page render times with many tickets in the ledger (Streamlit AppTest, in-process).

    python -m benchmarks.dashboard [--quick] [--tickets N] [--repeats R]

Builds a temporary state directory with the real engine: a small random Llama shaped like
SmolLM2-135M (30 layers, 9 query / 3 KV heads, so every heatmap has SmolLM2's size) but narrow,
N tickets (magnitude and random, layer-wise and global, 30-90 %), real evaluations with tiny limits
(perplexity for the dense model and ten tickets, the CrowS-Pairs / BBQ suite and head attributions for
the dense model and one ticket), a tiny IMP experiment (`ticketlab imp`), a decision, a promotion and
an export bundle. Then it renders every page with AppTest and reports, per page:
- first: the first render in this process (Python imports, Plotly warm-up);
- cold: median render right after the ledger changed (every ledger read goes to DuckDB);
- warm: median render when nothing changed (reads come from the cache keyed by the ledger file).
Target (issues 6 and 11): every page under 1 s with 50 tickets, first render included. Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "app" / "dashboard" / "main.py"
PAGES = ("models", "prune", "survival", "benchmarks", "review", "export", "jobs", "admin")
TARGET_S = 1.0


def _model(root: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models import embedded_checkpoint

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=72, intermediate_size=192, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    out = root / "smollm2-shaped"
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(embedded_checkpoint()).save_pretrained(out)
    return out


def _team(root: Path, ledger) -> dict:
    """Signed governance as a team runs it: keys for ada (admin), alice (reviewer), carol (engineer) and
    dave (deployer) under root/keys, the ledger initialised with the shipped policy pinned."""
    from analysis.governance import admin, keys

    os.environ["TICKETLAB_KEY_DIR"] = str(root / "keys")
    people = {}
    for name in ("ada", "alice", "carol", "dave"):
        keys.generate(name, f"{name}-benchmark-passphrase")
        people[name] = keys.unlock(name, f"{name}-benchmark-passphrase")
    admin.init_ledger(ledger, people["ada"])
    for name, roles in (("alice", ("reviewer",)), ("carol", ("engineer",)), ("dave", ("deployer",))):
        admin.register(ledger, people["ada"], name, keys.public_path(name), roles)
    return people


def build(root: Path, n_tickets: int) -> dict:
    """The ledger the pages are timed against; returns what was made."""
    from analysis.evaluate import evaluate
    from analysis.governance import decisions, deploy, export
    from analysis.ledger import Ledger
    from analysis.ledger.read_model import row_count
    from analysis.recording import record_prune
    from pruning.models import load_model
    from pruning.prune import make_ticket

    model_dir = _model(root)
    loaded = load_model(str(model_dir))
    ledger = Ledger()
    people = _team(root, ledger)
    tickets = []
    start = time.perf_counter()
    for i in range(n_tickets):
        method = ("magnitude", "random")[i % 2]
        sparsity = (0.3, 0.5, 0.7, 0.9)[(i // 2) % 4]
        options = {"scope": ("layer", "global")[(i // 8) % 2]}
        t = make_ticket(loaded, method, sparsity, options=options, seed=i)
        t.save()
        record_prune(loaded, t, "benchmark", ledger, signer=people["carol"])
        tickets.append(t)
    prune_s = time.perf_counter() - start
    start = time.perf_counter()
    safety = "crows_pairs_english,crows_pairs_english_gender,crows_pairs_english_age,bbq"
    for subject in [None, *tickets[:10]]:
        evaluate(loaded, subject, suite="ppl", limit=2, seq_len=32, ledger=ledger)
    for subject in (None, tickets[0]):
        evaluate(loaded, subject, suite="safety", tasks=safety, limit=4, ledger=ledger)
        evaluate(loaded, subject, suite="attribution", limit=2, ledger=ledger)
    eval_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.cli", "imp", "--rounds", "1", "--train-steps", "3", "--lr", "0.001",
                    "--seeds", "0,1", "--arms", "ticket,random", "--rewind", "init", "--val-windows", "2",
                    "--heldout-windows", "2", "--batch-size", "2", "--seq-len", "32", "--no-sanity", "--stability",
                    "none", "--quiet", "--json"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    imp_s = time.perf_counter() - start
    decisions.decide(ledger, tickets[0].id, "approve", people["alice"], "benchmark", override=True,
                     override_reason="limited evaluations in a benchmark")
    deploy.promote(ledger, tickets[0].id, people["dave"], "benchmark")
    export.export_bundle(ledger, tickets[0].id, root / "exports" / f"{tickets[0].id}-masks", "masks",
                         signer=people["alice"], loaded=loaded)
    return {"tickets": len(tickets), "prune_s": prune_s, "eval_s": eval_s, "imp_s": imp_s,
            "rows": {t: row_count(ledger, t)
                     for t in ("tickets", "survival_layer", "survival_head", "survival_neuron", "metrics",
                               "attribution_head")}}


def time_pages(repeats: int) -> list[dict]:
    from streamlit.testing.v1 import AppTest

    from app.dashboard import comparison_view as comparison
    from app.dashboard import data, governance, verdict_line

    caches = [comparison._rows, verdict_line._review] + [getattr(governance, n) for n in
                                                         ("_review", "_audit", "_compare", "_gov_state_at")
                                                         if hasattr(getattr(governance, n, None), "clear")]

    def run(at: AppTest) -> float:
        t = time.perf_counter()
        at.run()
        if at.exception:
            raise RuntimeError(f"page raised: {[e.value for e in at.exception]}")
        return time.perf_counter() - t

    at = AppTest.from_file(str(MAIN), default_timeout=120)
    initial = run(at)  # the Models page, first in this process
    results = []
    for name in PAGES:
        if name != "models":
            at.switch_page(f"views/{name}.py")
            at.query_params.clear()  # as the sidebar's links do: a page opens on its own defaults
        first = initial if name == "models" else run(at)
        cold, warm = [], []
        for _ in range(repeats):
            data.forget()  # as after a job wrote to the ledger
            for cache in caches:
                cache.clear()
            cold.append(run(at))
            warm.append(run(at))
        results.append({"page": name, "first": first, "cold": statistics.median(cold), "cold_max": max(cold),
                        "warm": statistics.median(warm),
                        "errors": [e.value for e in at.error if "does not pass** the policy" not in e.value]})
    return results


def main(argv: list[str] | None = None) -> int:
    quick = os.environ.get("TICKETLAB_BENCH_QUICK") == "1"
    p = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 tickets, 2 repeats (smoke run)")
    p.add_argument("--tickets", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = p.parse_args(argv)
    quick = quick or args.quick
    n = args.tickets or (10 if quick else 50)
    repeats = args.repeats or (2 if quick else 5)

    root = Path(tempfile.mkdtemp(prefix="ticketlab-dash-bench-"))
    os.environ.update({"TICKETLAB_STATE_DIR": str(root), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    os.environ.pop("TICKETLAB_LEDGER", None)
    data_dir = os.environ.get("TICKETLAB_DATA_DIR") or str(REPO / "data" / "reference")
    os.environ["TICKETLAB_DATA_DIR"] = data_dir
    (root / "models").mkdir()
    (root / "models" / "smollm2-135m-instruct").symlink_to(REPO / "data" / "models" / "smollm2-135m-instruct")
    try:
        print(f"building a ledger with {n} tickets in {root} ...", flush=True)
        made = build(root, n)
        os.environ["TICKETLAB_APP_MODEL"] = str(root / "smollm2-shaped")
        print(f"  {made['tickets']} tickets in {made['prune_s']:.0f} s, evaluations {made['eval_s']:.0f} s, "
              f"IMP {made['imp_s']:.0f} s; rows: " + ", ".join(f"{k} {v:,}" for k, v in made["rows"].items()),
              flush=True)
        results = time_pages(repeats)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nPage render times (AppTest, {n} tickets, median of {repeats}; target < {TARGET_S:.0f} s; "
          f"{os.cpu_count()} cores shared with other work, so noisy)")
    print(f"{'page':<12} {'first':>8} {'cold':>8} {'cold max':>9} {'warm':>8}  target")
    ok = True
    for r in results:
        good = r["first"] < TARGET_S and r["cold"] < TARGET_S and r["warm"] < TARGET_S
        ok &= good
        print(f"{r['page']:<12} {r['first']:>7.2f}s {r['cold']:>7.2f}s {r['cold_max']:>8.2f}s {r['warm']:>7.2f}s  "
              f"{'ok' if good else 'MISSED'}" + (f"  errors: {r['errors']}" if r["errors"] else ""))
    print("first = first render in the process (imports); cold = right after a ledger write; warm = unchanged ledger")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m benchmarks.serving`: SmolLM2-135M-Instruct served by vLLM (CPU build, `make serve-env`),
pruned and quantized exports against the dense model, in one run.

Subjects (all exported as bundles the way a user would, unreviewed, into a temporary state folder):
- structured: `neurons` 50% (half of every MLP), materialized (physically smaller);
- unstructured: `magnitude` 50%, masked weights (zeros in dense tensors: the CPU engine has no sparse
  kernels, so no speed-up is expected; measured anyway);
- w8a8: the unstructured ticket's weights quantized to int8 (compressed-tensors W8A8).
Bytes on disk are reported for each, plus w4a16 (group 64: SmolLM2's 576-wide layers do not fit 128).

The dense server stays up the whole run; each subject's server is started beside it and the two are
measured interleaved (dense, subject, subject, dense, ...), so every ratio comes from back-to-back
measurements under the same load. Throughput swings several-fold with machine load: only the ratios
mean something, and the absolute numbers say how loaded the machine was. Everything runs in bfloat16,
the engine's default on CPU. The structured ticket's ideal speed-up is the ratio of per-token matmul
FLOPs (every linear layer including the LM head; attention-score FLOPs are not counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

QUICK = os.environ.get("TICKETLAB_BENCH_QUICK") == "1"
MAX_TOKENS = 48
ROUNDS = 1 if QUICK else 2


def _linear_macs(model) -> int:
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def _export(state: Path, loaded, ticket, fmt: str, name: str, **kw) -> Path:
    from analysis.governance.export import export_bundle
    from analysis.ledger import Ledger

    out = state / "exports" / name
    export_bundle(Ledger(), ticket.id, out, fmt, unreviewed=True, loaded=loaded, **kw)
    return out


def main(argv: list[str] | None = None) -> int:
    from analysis.serving import env

    ok, why = env.available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    from analysis.recording import record_prune
    from analysis.serving import client
    from analysis.serving.check import CONCURRENCY, PROMPTS
    from pruning import settings
    from pruning.calibration import from_corpus
    from pruning.models import DEFAULT_MODEL, embedded_checkpoint, load_model
    from pruning.prune import make_ticket

    dense_dir = embedded_checkpoint(DEFAULT_MODEL)
    os.environ.setdefault("TICKETLAB_DATA_DIR", str(settings.data_dir().resolve()))  # before the state moves
    state = Path(tempfile.mkdtemp(prefix="ticketlab-bench-serving-"))
    (state / "models").mkdir()
    (state / "models" / dense_dir.name).symlink_to(dense_dir)
    os.environ["TICKETLAB_STATE_DIR"] = str(state)
    settings._overrides.clear()
    loaded = load_model(DEFAULT_MODEL)
    from analysis.ledger import Ledger

    structured = make_ticket(loaded, "neurons", 0.5, calib=from_corpus(loaded.tokenizer, 8, 128, 0))
    unstructured = make_ticket(loaded, "magnitude", 0.5)
    for t in (structured, unstructured):
        t.save()
        record_prune(loaded, t, "benchmarks.serving", Ledger())
    bundles = {"structured": _export(state, loaded, structured, "materialized", "structured"),
               "unstructured": _export(state, loaded, unstructured, "masked-weights", "unstructured"),
               "w8a8": _export(state, loaded, unstructured, "masked-weights", "w8a8", quantize="w8a8")}
    w4 = _export(state, loaded, unstructured, "masked-weights", "w4a16", quantize="w4a16", group_size=64)
    sizes = {"dense": sum(f.stat().st_size for f in dense_dir.glob("*.safetensors"))}
    for name, b in [*bundles.items(), ("w4a16", w4)]:
        sizes[name] = json.loads((b / "manifest.json").read_text())["artifact"]["weights_bytes"]
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        small = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundles["structured"]))
    ideal = _linear_macs(loaded.model) / _linear_macs(small)

    logs = state / "serve-logs"
    result = {"model": DEFAULT_MODEL, "max_tokens": MAX_TOKENS, "rounds": ROUNDS, "concurrency": list(CONCURRENCY),
              "dtype": "bfloat16", "bytes": sizes, "structured_ideal_speedup": ideal, "subjects": {},
              "load": os.getloadavg()}
    for name, bundle in bundles.items():
        print(f"starting {name} and a fresh dense server beside it ...", flush=True)
        try:
            # both fresh, started together: a long-running reference next to a just-started subject
            # measured ~1.45x apart for identical compute (the unstructured control) in a first run
            with _pair(dense_dir, bundle, logs, name) as (dense, s):
                d_model, s_model = client.served_model(dense.base_url), client.served_model(s.base_url)
                rows = {}
                for c in CONCURRENCY:
                    runs = {"dense": [], name: []}
                    for r in range(ROUNDS):  # interleaved, the order flipping every round
                        order = [("dense", dense.base_url, d_model), (name, s.base_url, s_model)]
                        for who, url, m in order if r % 2 == 0 else order[::-1]:
                            runs[who].append(client.throughput(url, m, list(PROMPTS), c, MAX_TOKENS)["tokens_per_s"])
                    d, x = sum(runs["dense"]) / ROUNDS, sum(runs[name]) / ROUNDS
                    rows[str(c)] = {"dense_tokens_per_s": d, "tokens_per_s": x, "ratio": x / d}
                result["subjects"][name] = {"startup_s": s.startup_s, "peak_rss_bytes": s.peak_rss_bytes,
                                            "dense_startup_s": dense.startup_s,
                                            "dense_peak_rss_bytes": dense.peak_rss_bytes, "throughput": rows}
        except Exception as e:  # an engine that refuses a format is a result, not a crash of the benchmark
            result["subjects"][name] = {"error": str(e)}
        print(json.dumps({name: result["subjects"][name]}), flush=True)
    result["load_after"] = os.getloadavg()
    s = result["subjects"].get("structured", {})
    if "throughput" in s:
        result["structured_measured_over_ideal"] = {c: r["ratio"] / ideal for c, r in s["throughput"].items()}
    _print(result)
    out = Path(argv[0]) if argv else None
    if out:
        out.write_text(json.dumps(result, indent=2))
    return 0


@contextlib.contextmanager
def _pair(dense_dir: Path, bundle: Path, logs: Path, name: str):
    """A fresh dense server and the subject's, started at the same time, both stopped on the way out."""
    from concurrent.futures import ThreadPoolExecutor

    from analysis.serving.server import Server

    servers = [Server(dense_dir, logs / f"dense-for-{name}.log", dtype="bfloat16", kv_cache_bytes="1G"),
               Server(bundle, logs / f"{name}.log", dtype="bfloat16", kv_cache_bytes="1G")]
    try:
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(s.start) for s in servers]:
                f.result()
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.stop()


def _print(r: dict) -> None:
    print(f"\nvLLM CPU, {r['model']}, bfloat16, {r['max_tokens']} tokens/request, {r['rounds']} interleaved rounds; "
          f"load average {r['load'][0]:.1f} -> {r['load_after'][0]:.1f}")
    print(f"{'subject':<14}{'bytes on disk':>16}{'vs dense':>10}  " + "  ".join(
        f"{'c=' + c + ' tok/s (dense)':>22}{'ratio':>7}" for c in map(str, r["concurrency"])))
    dense = r["bytes"]["dense"]
    print(f"{'dense':<14}{dense:>16,}{1:>10.2f}")
    for name, size in r["bytes"].items():
        if name == "dense":
            continue
        s = r["subjects"].get(name, {})
        cells = ""
        for c in map(str, r["concurrency"]):
            t = (s.get("throughput") or {}).get(c)
            cells += (f"  {t['tokens_per_s']:>9.1f} ({t['dense_tokens_per_s']:>6.1f}){t['ratio']:>8.2f}x" if t else
                      f"  {'-':>22}{'':>7}")
        note = f"  {s['error']}" if "error" in s else ""
        print(f"{name:<14}{size:>16,}{size / dense:>10.2f}{cells}{note}")
    if "structured_measured_over_ideal" in r:
        print(f"structured: ideal speed-up {r['structured_ideal_speedup']:.2f}x by removed FLOPs; measured / ideal "
              + ", ".join(f"c={c}: {v:.2f}" for c, v in r["structured_measured_over_ideal"].items()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The bundle's model card: a Hugging Face README.md with `model-index` evaluation results in its YAML
front matter (written with huggingface_hub's own card classes, so the hub parses it)."""

from __future__ import annotations

from pruning.models import EMBEDDED

from .. import uncertainty

HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
TASK_TYPES = {"ppl": "text-generation"}


def _base_model(spec: str) -> str | None:
    if spec in EMBEDDED:
        return HUB_IDS.get(spec)
    if spec.startswith("/") or spec.startswith("."):
        return None  # a local directory is no hub reference
    return spec if spec.count("/") == 1 else None


def model_card(manifest: dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    t, dense, review, dep = manifest["ticket"], manifest["dense_model"], manifest["review"], manifest["deployer"]
    name = f"ticketlab-{t['id']}"
    results = []
    for m in manifest["metrics"]:
        if m["subject"] != "ticket" or m["value"] is None:
            continue
        results.append(EvalResult(
            task_type=TASK_TYPES.get(m["suite"], "text-generation"), task_name=m["suite"],
            dataset_type=m["task"], dataset_name=m["task"], metric_type=m["metric"], metric_value=float(m["value"]),
            metric_name=m["metric"] + ("" if m["full"] else f" (--limit {m['limit']})"), verified=False))
    data = ModelCardData(model_name=name, eval_results=results or None, library_name="transformers",
                         base_model=_base_model(dense["spec"]), pipeline_tag="text-generation",
                         tags=["ticketlab", "pruned", "sparse", "lottery-ticket", f"format-{manifest['bundle_format']}"])
    status = review["status"]
    warn = ("\n> **Unreviewed export.** This ticket has no approving decision; it was exported with "
            "`--unreviewed`.\n" if review["unreviewed"] else "")
    lines = [
        "---", data.to_yaml().rstrip(), "---", "", f"# {name}", warn,
        f"A pruned version of `{dense['spec']}` (weights sha256 `{dense['weights_sha256']}`) made by Ticket Lab "
        f"with `{t['method']}` at target sparsity {t['target_sparsity']:g} (achieved "
        f"{t['achieved_sparsity']:.4f} of the counted weights).", "",
        "## What is in this bundle", "",
        f"- format: `{manifest['bundle_format']}`; how to load: {dep['loader']['how']}",
        f"- on-disk size of weights, tokenizer and ticket: {dep['payload_bytes']:,} bytes (dense checkpoint: "
        f"{dep['dense_checkpoint_bytes'] or 0:,} bytes); {dep['size_note']}",
        f"- speed against dense: {dep['speed_note']}",
        f"- counted in the sparsity: {dep['sparsity']['counted']}; not counted: {dep['sparsity']['excluded_note']}",
        "- `manifest.json` lists the sha256 of every file; check them with `ticketlab verify DIR --trust TRUST.json`.",
        (f"- signed by {manifest['exported_by']}, the approving reviewer, with OpenSSF model-signing (`model.sig` "
         f"covers every file, this card and the manifest included)" if manifest.get("exported_by") else
         "- **not signed**: nobody vouches for this bundle"), "",
        "## Review", "",
        f"- status: **{status}**" + (f" by {review['decision']['reviewer']} at {review['decision']['decided_at']} "
                                     f"(decision #{review['decision']['seq']}): {review['decision']['reason']}"
                                     if review.get("decision") else ""),
    ]
    if review.get("decision") and review["decision"]["override"]:
        lines.append(f"- approved **by override** of failing policy rules: {review['decision']['override_reason']}")
    if review.get("policy_results"):
        pr = review["policy_results"]
        lines.append(f"- policy `{pr['policy']['name']}` (sha256 `{pr['policy']['sha256'][:16]}`) against "
                     f"{pr['baseline']['label']}: {pr['counts']['pass']} pass, {pr['counts']['fail']} fail, "
                     f"{pr['counts']['missing']} missing evidence")
    lines += ["", "## Evaluation results", "", "| subject | suite | task | metric | value | uncertainty | run |",
              "|---|---|---|---|---|---|---|"]
    for m in manifest["metrics"]:
        v = "n/a" if m["value"] is None else f"{m['value']:.6g}"
        se = uncertainty.describe(m["stderr"], m.get("n_docs"))
        lines.append(f"| {m['subject']} | {m['suite']} | {m['task']} | {m['metric']} | {v} | {se} | "
                     f"{'full' if m['full'] else 'limit ' + str(m['limit'])} |")
    if not manifest["metrics"]:
        lines.append("| - | - | - | no evaluations recorded | - | - | - |")
    lines += ["", "## Lineage", "", f"- ticket id `{t['id']}` (content sha256 `{t['content_sha256']}`)",
              f"- parent: `{t['parent']}`" if t.get("parent") else "- parent: none",
              f"- created by {t.get('created_by') or 'unknown'} at {t['created_at']}", ""]
    return "\n".join(lines)

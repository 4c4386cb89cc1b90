"""lm-eval's `generate_until` requests through analysis.generation (the one decoding path).

lm-eval hands the LM every generation request of a run at once, each with its task's generation
kwargs. Requests are grouped by (max_gen_toks, until) and each group decoded greedily in one
`generate` call, with a durable checkpoint under `<state>/generation/partial/` keyed by the model's
identity (dense weights + ticket), the prompts and the settings, so a killed run resumes. lm-eval's
`until` strings are applied as lm-eval applies them: the completion is cut at the first one.

What the LM must carry (set by the runner): `identity`, `chat` (the model's chat template, or the
plain prompt), `gen_batch_size`, `progress`; it collects `generations` and `partials` (checkpoint
files the caller removes once the run is recorded).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pruning import settings
from pruning.errors import TicketLabError

from ..generation import check_max_new_tokens, generate


def partial_path(identity: str, prompts: list[str], max_new_tokens: int, chat: bool, batch_size: int) -> Path:
    key = hashlib.sha256(json.dumps([identity, prompts, max_new_tokens, chat, batch_size],
                                    ensure_ascii=False).encode()).hexdigest()
    return settings.state_dir() / "generation" / "partial" / f"{key[:40]}.json"


def _cut(text: str, until: tuple[str, ...]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def generate_until(lm, requests) -> list[str]:
    groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for i, req in enumerate(requests):
        _, kwargs = req.args
        kwargs = dict(kwargs or {})
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
            raise TicketLabError("a task asks for sampled generation; Ticket Lab decodes greedily (deterministic "
                                 "transcripts): set do_sample: false and temperature: 0 in its YAML.")
        until = kwargs.get("until") or []
        until = (until,) if isinstance(until, str) else tuple(until)
        n = check_max_new_tokens(int(kwargs.get("max_gen_toks", 256)))
        groups.setdefault((n, until), []).append(i)
    out: list[str] = [""] * len(requests)
    for (n, until), idx in groups.items():
        prompts = [requests[i].args[0] for i in idx]
        identity = getattr(lm, "identity", "")
        chat = getattr(lm, "chat", True)
        batch = getattr(lm, "gen_batch_size", None) or 16
        path = partial_path(identity, prompts, n, chat, batch) if identity else None
        g = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=n, batch_size=batch, chat=chat,
                     progress=getattr(lm, "progress", None), checkpoint=path, identity=identity,
                     max_positions=getattr(lm, "max_length", None))
        lm.generations = [*getattr(lm, "generations", []), g]
        lm.partials = [*getattr(lm, "partials", []), *([path] if path else [])]
        for i, text in zip(idx, g.completions, strict=True):
            out[i] = _cut(text, until)
    return out

"""lm-eval's `generate_until` answered by a served engine: the instruct suite's prompts as a deployer's
client sends them, many in flight at once.

Each prompt is one user turn sent to the engine's `/v1/chat/completions`, so the engine applies the chat
template it ships with (the artifact's tokenizer's); with `chat=False` the plain prompt goes to
`/v1/completions`. Decoding is the lab's: greedy (temperature 0, no penalties), at most the task YAML's
`max_gen_toks` new tokens, capped so prompt + answer fit the engine's window as the lab caps them to the
model's, stopping at the lab's end-of-turn ids (`analysis.generation.stop_ids`), and lm-eval's `until`
strings applied afterwards exactly as the lab applies them. The completion scored is the text the engine
returns. The prompt token ids the engine rendered are compared with the lab's rendering
(`analysis.generation.encode`): `prompt_mismatches` counts prompts the two templates tokenize differently.

Requests go out `concurrency` at a time (the engine batches what is in flight); each task's answers are
kept as an `analysis.generation.Generation` whose settings name the engine, so the runner builds and
stores the transcript set exactly as for the lab's generations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from types import SimpleNamespace

from lm_eval.api.model import LM

from analysis.generation import Generation, check_max_new_tokens, encode, stop_ids
from analysis.safety.generating import _cut  # the lab's `until` rule, applied the same way
from pruning.errors import TicketLabError

from . import client

DEFAULT_CONCURRENCY = 16  # requests in flight; see benchmarks/serving.py --instruct
# temperature 0 is greedy in vLLM; the penalties are explicit because the engine takes its defaults from the
# checkpoint's generation_config.json, which may set a repetition penalty the lab does not apply
GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


class EngineLM(LM):
    """Generation requests to an OpenAI-compatible vLLM server; scoring requests are not its job."""

    def __init__(self, base_url: str, model: str, directory, tokenizer, *, chat: bool = True,
                 concurrency: int = DEFAULT_CONCURRENCY, max_length: int, engine: str, dtype: str,
                 progress: Callable[[int, int, str], None] | None = None,
                 on_failure: Callable[[], str | None] | None = None):
        super().__init__()
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise TicketLabError(f"--concurrency must be a whole number >= 1 (got {concurrency!r}).")
        self.base_url, self.model, self.tokenizer = base_url, model, tokenizer
        self.chat, self.concurrency, self.max_length = chat, concurrency, max_length
        self.engine, self.dtype, self.progress, self.on_failure = engine, dtype, progress, on_failure
        self.stops = stop_ids(SimpleNamespace(generation_config=_generation_config(directory)), tokenizer)
        self.generations: list[Generation] = []
        self.prompt_mismatches = 0

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise TicketLabError("the engine's chat model only generates; scoring tasks go through `local-completions`.")

    loglikelihood_rolling = loglikelihood

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for i, req in enumerate(requests):
            kwargs = dict(req.args[1] or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0:
                raise TicketLabError("a task asks for sampled generation; Ticket Lab decodes greedily (deterministic "
                                     "transcripts): set do_sample: false and temperature: 0 in its YAML.")
            until = kwargs.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            groups.setdefault((check_max_new_tokens(int(kwargs.get("max_gen_toks", 256))), until), []).append(i)
        out = [""] * len(requests)
        for (n, until), idx in groups.items():
            g = self._generate([requests[i].args[0] for i in idx], n)
            self.generations.append(g)
            for i, text in zip(idx, g.completions, strict=True):
                out[i] = _cut(text, until)
        return out

    def _generate(self, prompts: list[str], max_new_tokens: int) -> Generation:
        t0 = time.perf_counter()
        encoded = encode(self.tokenizer, prompts, self.chat)  # the lab's check: no template -> say so
        budgets = []
        for e in encoded:
            room = min(max_new_tokens, self.max_length - len(e))
            if room < 1:
                raise TicketLabError(f"a prompt of {len(e)} tokens leaves no room to generate in the engine's "
                                     f"{self.max_length}-token window (--max-model-len).")
            budgets.append(room)
        answers: list[dict | None] = [None] * len(prompts)
        produced = 0
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, p, b): i for i, (p, b) in enumerate(zip(prompts, budgets, strict=True))}
            try:
                for done, f in enumerate(as_completed(futures), start=1):
                    answers[futures[f]] = a = f.result()
                    produced += a["tokens"]
                    if self.progress:
                        self.progress(done, len(prompts), f"{produced:,} tokens generated (engine)")
            except TicketLabError as e:
                pool.shutdown(cancel_futures=True)
                why = self.on_failure() if self.on_failure else None
                raise TicketLabError(why or str(e)) from None
        for a, e in zip(answers, encoded, strict=True):
            if a["prompt_ids"] is not None and a["prompt_ids"] != e:
                self.prompt_mismatches += 1
        settings = {"decoding": "greedy", "max_new_tokens": max_new_tokens, "chat_template": bool(self.chat),
                    "stop_ids": self.stops, "dtype": self.dtype, "engine": self.engine,
                    "endpoint": "/v1/chat/completions" if self.chat else "/v1/completions"}
        return Generation(prompts=list(prompts), completions=[a["text"] for a in answers],
                          tokens=[a["ids"] for a in answers], stopped=[a["stopped"] for a in answers],
                          prompt_tokens=sum(len(e) for e in encoded), seconds=time.perf_counter() - t0,
                          settings=settings)

    def _one(self, prompt: str, max_tokens: int) -> dict:
        body = {"model": self.model, "max_tokens": max_tokens, **GREEDY, "stop_token_ids": self.stops,
                "skip_special_tokens": True, "return_token_ids": True}
        if self.chat:
            out = client.post(self.base_url, "/v1/chat/completions",
                              {**body, "messages": [{"role": "user", "content": prompt}]})
            choice = out["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        else:
            out = client.post(self.base_url, "/v1/completions", {**body, "prompt": prompt})
            choice = out["choices"][0]
            text = choice.get("text") or ""
        ids = choice.get("token_ids")
        if ids is None:  # a server that does not return ids: its count, for the throughput
            ids = [-1] * int((out.get("usage") or {}).get("completion_tokens") or 0)
        elif ids and ids[-1] in self.stops and choice.get("finish_reason") == "stop":
            ids = ids[:-1]  # the lab's token lists exclude the stop token
        return {"text": text, "tokens": len(ids), "ids": list(ids),
                "stopped": "length" if choice.get("finish_reason") == "length" else "eos",
                "prompt_ids": out.get("prompt_token_ids")}


def _generation_config(directory):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(directory)
    except OSError:  # no generation_config.json: the tokenizer's eos alone
        return None

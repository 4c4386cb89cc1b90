"""Which attention heads carry a model's CrowS-Pairs preference: integrated gradients over head gates.

The objective, per pair, is lm-eval's `crows_pairs`: the summed log-likelihood of `sent_more` minus
that of `sent_less`, each scored as a whole continuation after the model's prefix token (BOS, else
EOS), in nats. lm-eval does *not* flip the sign for `stereo_antistereo == "antistereo"`: in CrowS-Pairs
`sent_more` is always the more stereotyping sentence (the column only says whether the stereotype is
about the disadvantaged or the advantaged group), and `pct_stereotype` counts `ll(sent_more) >
ll(sent_less)`. So a positive objective means "prefers the stereotype", for every pair, and the column
is kept only as a per-pair label.

Method: every query head `h` of layer `l` gets a gate `alpha[l, h]` on its slice of the input of the
attention output projection (`o_proj` for Llama, GPT-2's Conv1D `attn.c_proj`): that input is the
concatenated per-head outputs `[..., num_heads * head_dim]` in both families, and under GQA it is still
one slice per *query* head. Forward pre-hooks replace the slice `x` by `b + alpha * (x - b)`;
captum's `IntegratedGradients` integrates the objective's gradient along the straight path from
`alpha = 0` (every head at its baseline) to `alpha = 1` (the model as it is).

The baseline `b` (`baseline="mean"`, the default) is mean ablation: each head's average output over
reference text (the first WikiText-2 test tokens, run through the same model with the same ticket).
Zero ablation (`baseline="zero"`, `b = 0`, "head removed") is kept for comparison but is not the
default: on SmolLM2, scaling all heads' outputs together towards zero passes through a broken regime
where the objective swings by +-15 nats between neighbouring points of the path (f(t) on a 0.05 grid
for one pair: -5.1, -9.4, -11.9, -19.0, 11.9, -14.6, ...), so 16 integration steps miss the integral by
hundreds of nats and the attributions describe the broken model, not this one. Along the mean-ablation
path the same pairs are smooth, and 16 Gauss-Legendre steps leave a gap of 0.5 nats on average
(worst 1.6 of a 10.6-nat change; 32 steps: 0.2) on SmolLM2, against hundreds with zero ablation. The
prefix-token position is never gated: its head outputs are the same for both sentences of every pair
(causal attention sees only the prefix there) and carry the attention-sink state the model relies on.

Why gates rather than `LayerIntegratedGradients`/`LayerConductance` on `o_proj`'s input:
- one IG run attributes all layers together, and downstream layers see the effect of upstream gates.
  Captum's layer methods take their baseline from a baseline *input* (no token sequence gives a chosen
  head output) and patch recorded activations, which cuts that propagation when several layers are
  attributed at once; attributing one layer at a time costs `num_layers` times more (30x on SmolLM2);
- a head a ticket removed (its `o_proj` columns zeroed) gets exactly zero attribution, whatever its
  baseline, so ticket and dense maps are comparable head by head beside the survival heatmap;
- completeness is over one function of `L x H` scalars: all attributions sum to `f(alpha=1) -
  f(alpha=0)` up to captum's convergence delta (reported), and a layer's total is the sum of its heads.
The gradient is taken only with respect to the gates (parameters are frozen for the run), so each
step costs about one forward and one backward pass through the activations.
"""

from __future__ import annotations

import contextlib
import csv
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from pruning import settings
from pruning.errors import TicketLabError
from pruning.ticket import Ticket, applied

CROWS_FILE = "benchmarks/crows_pairs/crows_pairs_anonymized.csv"
CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
REFERENCE_FILE = "corpora/wikitext-2/test.txt"
REFERENCE_TOKENS = 512  # tokens of reference text behind the mean-ablation baseline
REFERENCE_WINDOW = 128
BASELINES = ("mean", "zero")

Progress = Callable[[int, int, str], None]


@dataclass
class AttributionResult:
    num_layers: int
    num_heads: int
    n_pairs: int
    steps: int
    seed: int
    baseline: str  # "mean" (mean ablation over reference text) or "zero" (head output removed)
    per_pair: torch.Tensor  # [n_pairs, L, H] attributions, nats of ll(sent_more) - ll(sent_less)
    objective: list[float]  # f(alpha=1) per pair: the model's own log-likelihood difference
    objective_baseline: list[float]  # f(alpha=0) per pair: every head at its baseline
    convergence_delta: list[float]  # captum's: sum(attributions) - (f(1) - f(0)), per pair
    pairs: list[dict] = field(default_factory=list)  # csv row index, bias_type, stereo_antistereo
    ticket_id: str | None = None

    @property
    def method(self) -> str:
        return f"captum IntegratedGradients over per-head gates on the o_proj input; baseline={self.baseline}"

    @property
    def mean(self) -> torch.Tensor:
        """[L, H] mean signed attribution over the pairs."""
        return self.per_pair.mean(0)

    @property
    def mean_abs(self) -> torch.Tensor:
        """[L, H] mean absolute attribution over the pairs (a head can push either way on different pairs)."""
        return self.per_pair.abs().mean(0)

    @property
    def layer_totals(self) -> torch.Tensor:
        """[L] mean over pairs of the sum of a layer's head attributions."""
        return self.per_pair.sum(2).mean(0)

    @property
    def layer_abs_totals(self) -> torch.Tensor:
        """[L] mean over pairs of |sum of a layer's head attributions|."""
        return self.per_pair.sum(2).abs().mean(0)

    @property
    def completeness(self) -> dict:
        total = self.per_pair.sum((1, 2))
        target = torch.tensor(self.objective) - torch.tensor(self.objective_baseline)
        delta = torch.tensor(self.convergence_delta)
        scale = float(target.abs().mean()) or 1.0
        return {"sum_attributions_mean": float(total.mean()), "objective_delta_mean": float(target.mean()),
                "max_abs_delta": float(delta.abs().max()), "mean_abs_delta": float(delta.abs().mean()),
                "relative_max_abs_delta": float(delta.abs().max()) / scale}

    def to_dict(self) -> dict:
        return {"method": self.method, "baseline": self.baseline, "n_pairs": self.n_pairs, "steps": self.steps,
                "seed": self.seed, "ticket_id": self.ticket_id, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "mean": self.mean.tolist(), "mean_abs": self.mean_abs.tolist(),
                "layer_totals": self.layer_totals.tolist(), "layer_abs_totals": self.layer_abs_totals.tolist(),
                "objective_mean": sum(self.objective) / self.n_pairs,
                "pct_stereotype": sum(o > 0 for o in self.objective) / self.n_pairs,
                "completeness": self.completeness, "pairs": self.pairs}


# --- data ------------------------------------------------------------------------------------------
def load_pairs(n_pairs: int, seed: int) -> list[dict]:
    """`n_pairs` CrowS-Pairs rows drawn without replacement with `seed` (in file order)."""
    path = settings.data_file(CROWS_FILE)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CROWS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise TicketLabError(f"{path} lacks the column(s) {', '.join(missing)}: expected the CrowS-Pairs "
                                     f"CSV with columns {', '.join(CROWS_COLUMNS)}.")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise TicketLabError(f"{path} is not a readable CSV ({e}); expected the CrowS-Pairs anonymized CSV.") from e
    if not rows:
        raise TicketLabError(f"{path} has no rows; expected the 1,508 CrowS-Pairs pairs.")
    chosen = sorted(random.Random(seed).sample(range(len(rows)), min(n_pairs, len(rows))))
    out = []
    for i in chosen:
        r = rows[i]
        if not r["sent_more"] or not r["sent_less"]:
            raise TicketLabError(f"{path}: row {i} has an empty sent_more or sent_less.")
        out.append({"index": i, "sent_more": r["sent_more"], "sent_less": r["sent_less"],
                    "bias_type": r["bias_type"], "stereo_antistereo": r["stereo_antistereo"]})
    return out


def _prefix_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer, text: str) -> list[int]:
    """lm-eval's encoding of an empty-context continuation: prefix token (BOS, else EOS), then the text."""
    prefix = _prefix_id(tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids if ids and ids[0] == prefix else [prefix, *ids]


def _reference_windows(tokenizer) -> torch.Tensor:
    """[n, REFERENCE_WINDOW] prefix-token-led windows from the start of WikiText-2 test."""
    path = settings.data_file(REFERENCE_FILE)
    with open(path, encoding="utf-8") as f:
        text = f.read(REFERENCE_TOKENS * 16)  # a few characters per token is plenty
    ids = tokenizer.encode(text, add_special_tokens=False)
    body = REFERENCE_WINDOW - 1
    n = min(REFERENCE_TOKENS // REFERENCE_WINDOW, len(ids) // body)
    if n < 1:
        raise TicketLabError(f"{path} holds too little text for the attribution baseline "
                             f"({len(ids)} tokens; expected the WikiText-2 test split).")
    rows = [[_prefix_id(tokenizer), *ids[i * body:(i + 1) * body]] for i in range(n)]
    return torch.tensor(rows)


# --- gates -----------------------------------------------------------------------------------------
class _Gates:
    """Forward pre-hooks on every layer's attention output projection: each head's input slice `x`
    becomes `b + alpha * (x - b)` at every position after the prefix token."""

    def __init__(self, loaded):
        a = loaded.adapter
        self.num_layers, self.num_heads, self.head_dim = a.num_layers, a.num_heads, a.head_dim
        self.modules = [a.module(next(r.module_name for r in a.linears(i) if r.kind == "o"))
                        for i in range(a.num_layers)]
        self.values: torch.Tensor | None = None  # [batch, L, H]
        self.base: list[torch.Tensor | None] = [None] * self.num_layers  # [H * hd] per layer; None = zero
        self._record: list[list[torch.Tensor]] | None = None

    def _hook(self, layer: int):
        def hook(module, args):
            x = args[0]
            if self._record is not None:
                self._record[layer].append(x[:, 1:].reshape(-1, x.shape[-1]).detach().float())
                return None
            if self.values is None:
                return None
            g = self.values[:, layer].to(x.dtype).repeat_interleave(self.head_dim, dim=1)  # [batch, H * hd]
            if x.dim() != 3 or x.shape[-1] != g.shape[-1] or x.shape[0] != g.shape[0]:
                raise RuntimeError(f"head gate of shape {tuple(g.shape)} does not fit o_proj input {tuple(x.shape)}")
            rest = x[:, 1:]
            b = self.base[layer]
            gated = rest * g[:, None] if b is None else b.to(x.dtype) + g[:, None] * (rest - b.to(x.dtype))
            return (torch.cat([x[:, :1], gated], dim=1), *args[1:])
        return hook

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Gates]:
        handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self.values = None

    def set_mean_baseline(self, model: torch.nn.Module, windows: torch.Tensor, device: str) -> None:
        """Each head's average o_proj input over the reference windows (prefix positions excluded)."""
        self._record = [[] for _ in range(self.num_layers)]
        try:
            with torch.no_grad():
                for row in windows:
                    model(input_ids=row[None].to(device), use_cache=False)
            self.base = [torch.cat(r).mean(0) for r in self._record]
        finally:
            self._record = None


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Gradients only for the gates; parameters' flags and the train/eval mode restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _pair_objective(loaded, gates: _Gates, more: list[int], less: list[int]):
    """f(alpha [B, L*H]) -> [B]: ll(sent_more) - ll(sent_less) with the heads gated by alpha."""
    length = max(len(more), len(less))
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else more[0]
    ids = torch.full((2, length), pad, dtype=torch.long)
    scored = torch.zeros((2, length - 1), dtype=torch.bool)
    for row, seq in enumerate((more, less)):
        ids[row, : len(seq)] = torch.tensor(seq)
        scored[row, : len(seq) - 1] = True  # positions predicting a real token (the prefix is context)
    ids, scored = ids.to(loaded.device), scored.to(loaded.device)
    L, H = gates.num_layers, gates.num_heads

    def forward(alpha: torch.Tensor) -> torch.Tensor:
        b = alpha.shape[0]
        gates.values = alpha.view(b, L, H).repeat(2, 1, 1)  # rows: b x sent_more, then b x sent_less
        # Right padding needs no attention mask: causal attention never lets a real token see it.
        batch_ids = ids.repeat_interleave(b, dim=0)
        logits = loaded.model(input_ids=batch_ids, use_cache=False).logits[:, :-1].float()
        target = batch_ids[:, 1:]
        token_ll = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        ll = (token_ll * scored.repeat_interleave(b, dim=0)).sum(-1)
        return ll[:b] - ll[b:]

    return forward


# --- public --------------------------------------------------------------------------------------
def head_attributions(loaded, ticket: Ticket | None = None, n_pairs: int = 16, seed: int = 0, steps: int = 16,
                      progress: Progress | None = None, baseline: str = "mean") -> AttributionResult:
    """Integrated-gradients attribution of the CrowS-Pairs log-likelihood difference to every attention
    head (see the module docstring), for the dense model or with `ticket` applied in place."""
    from captum.attr import IntegratedGradients

    if n_pairs < 1:
        raise TicketLabError(f"n_pairs must be at least 1 (got {n_pairs}).")
    if steps < 1:
        raise TicketLabError(f"steps must be at least 1 (got {steps}).")
    if baseline not in BASELINES:
        raise TicketLabError(f"unknown attribution baseline {baseline!r}: use {' or '.join(BASELINES)}.")
    pairs = load_pairs(n_pairs, seed)
    windows = _reference_windows(loaded.tokenizer) if baseline == "mean" else None
    gates = _Gates(loaded)
    L, H = gates.num_layers, gates.num_heads
    device = loaded.device
    per_pair, f1, f0, deltas = [], [], [], []
    with applied(loaded, ticket), _frozen(loaded.model), gates.installed():
        if windows is not None:  # the subject's own average head outputs, ticket included
            gates.set_mean_baseline(loaded.model, windows, device)
        for k, pair in enumerate(pairs):
            forward = _pair_objective(loaded, gates, _encode(loaded.tokenizer, pair["sent_more"]),
                                      _encode(loaded.tokenizer, pair["sent_less"]))
            ones = torch.ones((1, L * H), device=device)
            zeros = torch.zeros_like(ones)
            with torch.no_grad():
                ends = forward(torch.cat([ones, zeros]))
            attr, delta = IntegratedGradients(forward).attribute(
                ones, baselines=zeros, n_steps=steps, internal_batch_size=steps, return_convergence_delta=True)
            per_pair.append(attr.detach().view(L, H).float().cpu())
            f1.append(float(ends[0]))
            f0.append(float(ends[1]))
            deltas.append(float(delta.reshape(-1)[0]))
            if progress:
                progress(k + 1, len(pairs), f"pair {pair['index']} ({pair['bias_type']})")
    return AttributionResult(
        num_layers=L, num_heads=H, n_pairs=len(pairs), steps=steps, seed=seed, baseline=baseline,
        per_pair=torch.stack(per_pair), objective=f1, objective_baseline=f0, convergence_delta=deltas,
        pairs=[{k: p[k] for k in ("index", "bias_type", "stereo_antistereo")} for p in pairs],
        ticket_id=ticket.id if ticket is not None else None)


def attribution_rows(result: AttributionResult) -> list[tuple]:
    """Rows for the ledger's `attribution_head` table (`lab_records.attribution_statements`), in its column
    order after (run_id, subject): (layer, head, value, abs_value, n_pairs). A layer's total is the sum of
    its heads' values."""
    mean, mean_abs = result.mean, result.mean_abs
    return [(layer, head, float(mean[layer, head]), float(mean_abs[layer, head]), result.n_pairs)
            for layer in range(result.num_layers) for head in range(result.num_heads)]


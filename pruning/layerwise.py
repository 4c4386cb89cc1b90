"""Sequential layer-by-layer pruning, as Wanda and SparseGPT do it.

The calibration tokens run through the embeddings once; the inputs of decoder layer 0 (and the
position embeddings / attention mask / position ids transformers passes to every layer) are caught
there. Then, for each decoder layer in turn:

1. forward hooks on its prunable linears accumulate a statistic of their inputs (squared column
   norms for Wanda and OWL, the Gram matrix X^T X for SparseGPT) while the layer runs on the
   calibration inputs, a few sequences at a time so memory stays bounded;
2. the method prunes the layer from those statistics;
3. the pruned layer runs again to make the next layer's inputs, so every layer is pruned against
   inputs that already went through the pruned layers before it (the papers' "sequential" mode).

The runner writes the pruned weights into the model while it works (step 3 needs them) and puts the
dense weights back, bit for bit, before it returns, also on error: the ticket is applied later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .adapters import LinearRef
from .calibration import CalibrationSet
from .errors import TicketLabError
from .method_registry import PruneOptions

# Sequences per forward call. Activations of one SmolLM2 layer for 8 x 512 tokens are a few tens of
# MB, and larger batches do not make the 2-core CPU any faster.
TOKENS_PER_BATCH = 4096

# What a method returns for one tensor: the [out, in] keep-mask, and the new [out, in] values of the
# surviving weights when the method changes them (None: keep the dense values).
LayerDecision = tuple[torch.Tensor, "torch.Tensor | None"]


class _Caught(Exception):
    pass


@dataclass
class _Batch:
    hidden: torch.Tensor
    args: tuple
    kwargs: dict


@dataclass
class LayerStats:
    """What the hooks gathered for one linear: `sq_norms[in]` = sum over tokens of x_j^2, and when
    asked for, `gram[in, in]` = sum over tokens of x x^T. Linears that read the very same input tensor
    (q/k/v, gate/up) share one object, so the Gram matrix is computed once for them."""

    tokens: int = 0
    sq_norms: torch.Tensor | None = None
    gram: torch.Tensor | None = None

    @property
    def norms(self) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens, per input column (Wanda's activation norm)."""
        return self.sq_norms.sqrt()

    def hessian(self) -> torch.Tensor:
        """SparseGPT's H = 2 X X^T, averaged over tokens (the scale does not change the solution)."""
        return self.gram * (2.0 / max(self.tokens, 1))


def _micro_batches(tokens: torch.Tensor) -> list[torch.Tensor]:
    per = max(1, TOKENS_PER_BATCH // max(1, tokens.shape[1]))
    return list(tokens.split(per))


def _move(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, tuple):
        return tuple(_move(v, device) for v in x)
    return x


@torch.no_grad()
def capture_layer0_inputs(loaded, calib: CalibrationSet, device: str) -> list[_Batch]:
    """Run the calibration tokens up to decoder layer 0 and keep what it is called with."""
    layer0 = loaded.adapter.layers()[0]
    caught: list[_Batch] = []

    def pre_hook(_module, args, kwargs):
        caught.append(_Batch(args[0], tuple(args[1:]), dict(kwargs)))
        raise _Caught

    handle = layer0.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for ids in _micro_batches(calib.tokens):
            try:
                loaded.model(input_ids=ids.to(device), use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    if len(caught) != len(_micro_batches(calib.tokens)):
        raise TicketLabError("could not catch the inputs of decoder layer 0: the model's forward did not reach it.")
    return caught


def _run_layer(layer, batch: _Batch) -> torch.Tensor:
    out = layer(batch.hidden, *batch.args, **batch.kwargs)
    return out[0] if isinstance(out, tuple) else out


class _Hooks:
    """Forward hooks accumulating LayerStats for a layer's linears."""

    def __init__(self, model, refs: list[LinearRef], gram: bool):
        self.stats: dict[str, LayerStats] = {}
        self.gram = gram
        self._seen: dict[int, tuple[torch.Tensor, LayerStats]] = {}
        self.handles = [model.get_submodule(r.module_name).register_forward_hook(self._hook(r.name)) for r in refs]

    def next_batch(self) -> None:
        self._seen = {}  # drop references to the previous batch's activations

    def _hook(self, name: str):
        def hook(_module, inputs, _output):
            x = inputs[0]
            seen = self._seen.get(id(x))
            if seen is not None and seen[0] is x:  # same input tensor as a sibling linear: share
                self.stats[name] = seen[1]
                return
            st = self.stats.setdefault(name, LayerStats())
            self._seen[id(x)] = (x, st)
            x2 = x.reshape(-1, x.shape[-1]).float()
            st.tokens += x2.shape[0]
            sq = x2.pow(2).sum(0)
            st.sq_norms = sq if st.sq_norms is None else st.sq_norms + sq
            if self.gram:
                g = x2.t() @ x2
                st.gram = g if st.gram is None else st.gram.add_(g)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self._seen = {}


@dataclass
class LayerwiseResult:
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter layout, bool, cpu
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter layout, changed tensors only


@torch.no_grad()
def run_layerwise(loaded, calib: CalibrationSet, options: PruneOptions,
                  decide: Callable[[int, list[LinearRef], dict[str, LayerStats]], dict[str, LayerDecision]] | None,
                  *, gram: bool = False, progress_offset: int = 0, progress_total: int | None = None,
                  label: str = "prune",
                  on_layer: Callable[[int, list[LinearRef], dict[str, LayerStats]], None] | None = None,
                  ) -> LayerwiseResult:
    """Walk the decoder layers in order, calling `decide(layer, refs, stats)` for each.

    With `decide=None` nothing is pruned and the dense outputs feed the next layer (one forward per
    layer): a statistics-only pass, which is what OWL needs; `on_layer` sees each layer's stats.
    """
    if calib is None:
        raise TicketLabError("this pruning needs calibration data (--calib-samples/--calib-len or --calib-tokens).")
    model, adapter = loaded.model, loaded.adapter
    device = options.device
    layers = adapter.layers()
    total = progress_total or adapter.num_layers
    was_training = model.training
    model.eval()
    saved: dict[str, torch.Tensor] = {}  # dense values of every tensor written, restored in `finally`
    result = LayerwiseResult()
    try:
        batches = capture_layer0_inputs(loaded, calib, device)
        for i in range(adapter.num_layers):
            layer = layers[i]
            refs = adapter.linears(i)
            hooks = _Hooks(model, refs, gram)
            try:
                for b in batches:
                    out = _run_layer(layer, b)
                    hooks.next_batch()
                    if decide is None:
                        b.hidden = out
                    del out
            finally:
                hooks.remove()
            stats = hooks.stats
            missing = [r.name for r in refs if r.name not in stats]
            if missing:
                raise TicketLabError(f"layer {i}: the calibration forward never reached {', '.join(missing)}.")
            if on_layer is not None:
                on_layer(i, refs, stats)
            if decide is not None:
                for ref in refs:  # saved before the method runs, so nothing it does can leak out
                    saved[ref.name] = adapter.parameter(ref.name).data.detach().clone()
                decisions = decide(i, refs, stats)
                del stats, hooks
                for ref in refs:
                    mask, new = decisions[ref.name]
                    view = adapter.weight_view(ref)
                    dense_view = _own_view(saved[ref.name], ref)
                    pruned = (new if new is not None else dense_view).to(view.dtype) * mask.to(view.dtype)
                    view.copy_(pruned)
                    result.masks[ref.name] = _own_layout(mask.bool(), ref)
                    if new is not None and not torch.equal(pruned, dense_view):
                        result.weights[ref.name] = _own_layout(pruned, ref)
                if i + 1 < adapter.num_layers:  # the next layer sees what the pruned layer makes
                    for b in batches:
                        b.hidden = _run_layer(layer, b)
            options.report(progress_offset + i + 1, total, f"{label} layer {i + 1}/{adapter.num_layers}")
    finally:
        params = dict(model.named_parameters())
        for name, dense in saved.items():
            params[name].data.copy_(dense)
        model.train(was_training)
    return result


def _own_view(t: torch.Tensor, ref: LinearRef) -> torch.Tensor:
    return t.t() if ref.transposed else t


def _own_layout(t: torch.Tensor, ref: LinearRef) -> torch.Tensor:
    """From the [out, in] view back to the parameter's own layout (GPT-2 Conv1D is [in, out])."""
    return (t.t() if ref.transposed else t).contiguous().cpu()

"""One adapter per architecture family; everything architecture-specific lives here.

Adding a model family is one module in this package with one `ArchitectureAdapter` subclass (see
`llama.py`, `gpt2.py` and docs/DEVELOPING.md "Add a model family"); defining the class registers it
for its `model_types`, and every module here is imported automatically.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from ..errors import TicketLabError
from .base import GQA_RULE, ArchitectureAdapter, HeadRemoval, LinearRef, Slice, body_and_head, resized_like

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

from .gpt2 import GPT2Adapter  # noqa: E402  (re-exported: the names callers used before the split)
from .llama import LlamaAdapter  # noqa: E402

ADAPTERS: dict[str, type[ArchitectureAdapter]] = ArchitectureAdapter.registry

__all__ = ["ADAPTERS", "GQA_RULE", "ArchitectureAdapter", "GPT2Adapter", "HeadRemoval", "LinearRef",
           "LlamaAdapter", "Slice", "adapter_for", "body_and_head", "resized_like"]


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    model_type = getattr(model.config, "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise TicketLabError(
            f"unsupported architecture {model_type!r}: Ticket Lab has adapters for "
            f"{', '.join(sorted(ADAPTERS))}. Add an ArchitectureAdapter module in pruning/adapters/ to support it.")
    return cls(model)

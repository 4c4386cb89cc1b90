"""The one schema for what a structured ticket removed, written by every structured method and IMP.

    {"schema": 2, "kind": "heads" | "neurons" | "layers",
     "removed": {"query_heads": {"0": [0, 1]}, "kv_heads": {"0": [0]}}     (kind heads)
              | {"neurons": {"1": [5, 9]}}                                  (kind neurons)
              | {"layers": [3]},                                            (kind layers)
     ...method details: unit, importance, per_layer, unit_sparsity, gqa_rule, ...}

Per-layer maps are keyed by the layer index as a string (JSON keys are strings), list only layers
that lost something, and hold sorted unit indices. Heads are always closed under the GQA rule
(`ArchitectureAdapter.close_heads`), so `kv_heads` is exactly the KV heads that have no query head left.

Tickets saved before this schema carry one of two others: structured pruning's per-layer lists
(`removed` = query heads, `kv_removed`, `removed_units`) and IMP's dicts (`removed_heads`,
`removed_kv_heads`). `normalize` maps both onto this one; `Ticket.load` applies it while the ticket
keeps the id it was saved under.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .adapters import GQA_RULE, ArchitectureAdapter, HeadRemoval
from .errors import TicketLabError

SCHEMA = 2
UNITS = ("query_heads", "kv_heads", "neurons", "layers")
PerLayer = Mapping[int, Iterable[int]] | list[Iterable[int]]

# Keys of the old schemas that `normalize` turns into `removed`.
_OLD_KEYS = ("removed", "kv_removed", "removed_units", "removed_heads", "removed_kv_heads")


def _per_layer(removed: PerLayer) -> dict[str, list[int]]:
    items = enumerate(removed) if isinstance(removed, list) else removed.items()
    out = {int(layer): sorted({int(u) for u in units}) for layer, units in items}
    return {str(layer): units for layer, units in sorted(out.items()) if units}


def heads(adapter: ArchitectureAdapter, query: PerLayer, kv: PerLayer | None = None, **details: Any) -> dict:
    """The structure of a head removal: per layer, the query heads and KV heads asked for, closed under
    the GQA rule. `details` (unit, importance, ...) are recorded beside it."""
    q, k = _per_layer(query), _per_layer(kv or {})
    closed = {layer: closed_heads(adapter, {"query_heads": q, "kv_heads": k}, int(layer))
              for layer in sorted(set(q) | set(k), key=int)}
    removed = {"query_heads": {k_: list(r.query) for k_, r in closed.items() if r.query},
               "kv_heads": {k_: list(r.kv) for k_, r in closed.items() if r.kv}}
    return {"schema": SCHEMA, "kind": "heads", **details, "removed": removed, "gqa_rule": GQA_RULE,
            "num_heads": adapter.num_heads, "num_kv_heads": adapter.num_kv_heads}


def neurons(removed: PerLayer, **details: Any) -> dict:
    return {"schema": SCHEMA, "kind": "neurons", **details, "removed": {"neurons": _per_layer(removed)}}


def layers(removed: Iterable[int], **details: Any) -> dict:
    return {"schema": SCHEMA, "kind": "layers", **details, "removed": {"layers": sorted({int(i) for i in removed})}}


def closed_heads(adapter: ArchitectureAdapter, removed: Mapping[str, Mapping[str, list[int]]], layer: int
                 ) -> HeadRemoval:
    """One layer's removed heads from a `removed` map, closed under the GQA rule."""
    key = str(layer)
    return adapter.close_heads(removed.get("query_heads", {}).get(key, ()), removed.get("kv_heads", {}).get(key, ()))


def removed(structure: dict | None, unit: str) -> dict[int, list[int]] | list[int]:
    """What a (normalized or old) structure removed: for `layers` a sorted list, otherwise layer -> sorted
    unit indices (layers without removals left out). Unstructured tickets remove nothing."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; one of {UNITS}")
    s = normalize(structure) or {}
    got = s.get("removed", {}).get(unit, [] if unit == "layers" else {})
    if unit == "layers":
        return list(got)
    return {int(layer): list(units) for layer, units in got.items()}


def per_layer_lists(structure: dict | None, unit: str, num_layers: int) -> list[list[int]]:
    """`removed` as one list per layer (empty where nothing went)."""
    got = removed(structure, unit)
    if unit == "layers":
        raise ValueError("layers are not per layer; use removed(structure, 'layers')")
    return [got.get(i, []) for i in range(num_layers)]


def normalize(structure: dict | None) -> dict | None:
    """Any saved structure in the one schema (idempotent). Unknown shapes are refused, not guessed."""
    if not structure:
        return structure
    if structure.get("schema") == SCHEMA:
        return structure
    if structure.get("kind") == "combined":  # several structured tickets merged (benchmarks)
        return {**structure, "schema": SCHEMA, "parts": [normalize(p) for p in structure.get("parts", [])]}
    rest = {k: v for k, v in structure.items() if k not in _OLD_KEYS}
    if "removed_heads" in structure or "removed_kv_heads" in structure:  # IMP's dicts
        rest.pop("unit", None)  # IMP wrote unit="heads": its units are query heads
        q = _per_layer(structure.get("removed_heads") or {})
        kv = _per_layer(structure.get("removed_kv_heads") or {})
        return {"schema": SCHEMA, "kind": "heads", "unit": "query", **_drop(rest, "kind"),
                "removed": {"query_heads": q, "kv_heads": kv}, "gqa_rule": rest.get("gqa_rule", GQA_RULE)}
    kind = structure.get("kind")
    old = structure.get("removed")
    if kind == "heads" and isinstance(old, list):
        return {"schema": SCHEMA, **rest, "removed": {"query_heads": _per_layer(old),
                                                       "kv_heads": _per_layer(structure.get("kv_removed") or [])}}
    if kind == "neurons" and isinstance(old, list):
        return {"schema": SCHEMA, **rest, "removed": {"neurons": _per_layer(old)}}
    if kind == "layers" and isinstance(old, list):
        return {"schema": SCHEMA, **rest, "removed": {"layers": sorted(int(i) for i in old)}}
    raise TicketLabError(f"ticket structure with keys {sorted(structure)} is in no schema Ticket Lab knows "
                         f"(schema {SCHEMA}, or the older structured/IMP ones); the ticket was edited or made by "
                         f"a newer version.")


def _drop(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}

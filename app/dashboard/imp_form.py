"""The IMP experiment form, generated from the protocol's declared settings (`setting(..., form=, label=)` in
pruning/lottery/protocol.py): one field per setting, its widget chosen by the declared type."""

from __future__ import annotations

import typing
from typing import Any

from pruning.errors import TicketLabError
from pruning.lottery.protocol import Protocol, settings_of, word_value

REWINDS = ("init", "pretrained", "lr", "finetune")  # offered beside the default step:K


def _key(f) -> str:
    return "imp_" + (f.metadata["flag"] or f.name).lstrip("-").replace("-", "_")


def fields(proto: Protocol, form: str, columns) -> dict[str, Any]:
    """The widgets of one part of the form (`form`: "main" or "budget"), in declaration order; name -> raw value."""
    from pruning.lottery.arms import ARMS

    hints = typing.get_type_hints(Protocol)
    out: dict[str, Any] = {}
    for i, f in enumerate(s for s in settings_of() if s.metadata["form"] == form):
        col, meta, default, hint = columns[i % len(columns)], f.metadata, getattr(proto, f.name), hints[f.name]
        kw = {"key": _key(f), "help": meta["help"].format(arms="; ".join(f"{k}: {a.description}"
                                                                          for k, a in sorted(ARMS.items())))}
        if meta["choices"] or f.name == "rewind":
            choices = list(meta["choices"] or (default, *REWINDS))
            out[f.name] = col.selectbox(meta["label"], choices, index=choices.index(default), **kw)
        elif hint is bool:
            out[f.name] = col.checkbox(meta["label"], value=default, **kw)
        elif f.name == "arms":
            out[f.name] = col.multiselect(meta["label"], sorted(ARMS), default=list(default), **kw)
        elif isinstance(default, str):
            out[f.name] = col.text_input(meta["label"], default, **kw)
        elif typing.get_origin(hint) is tuple or default is None:  # lists, and "empty: the pilot chooses"
            text = "" if default is None else ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
            out[f.name] = col.text_input(meta["label"], text, **kw)
        else:
            out[f.name] = col.number_input(meta["label"], value=default, step=type(default)(1) if isinstance(
                default, int) else 0.01, format=None if isinstance(default, int) else "%g", **kw)
    return out


def typed(raw: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the settings' types (comma lists as tuples, empty text as None), one
    `TicketLabError` naming a field that is not what its setting takes."""
    hints = typing.get_type_hints(Protocol)
    out = {}
    for f in settings_of():
        if f.name not in raw:
            continue
        value, hint = raw[f.name], hints[f.name]
        is_word, word = word_value(f.name, value) if isinstance(value, str) else (False, None)
        if is_word:
            value = word
        elif isinstance(value, str) and f.name not in ("model", "rewind") and not f.metadata["choices"]:
            kinds = typing.get_args(hint)
            kind = kinds[0] if typing.get_origin(hint) is tuple else next(k for k in kinds if k is not type(None))
            try:
                items = [kind(x.strip()) for x in value.split(",") if x.strip()]
            except ValueError:
                raise TicketLabError(f"{f.metadata['label']}: {value!r} is not a comma-separated list of "
                                     f"{kind.__name__} values.") from None
            value = tuple(items) if typing.get_origin(hint) is tuple else (items[0] if items else None)
        elif isinstance(value, list):
            value = tuple(value)
        out[f.name] = value.strip() if isinstance(value, str) else value
    if not out.get("model"):
        out.pop("model", None)  # empty: the default (tiny)
    return out

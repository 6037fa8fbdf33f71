"""Collapse repeated layers: ``model.layers.{0..15}.mlp.up_proj.weight`` for sixteen names.

Names are split at dots; a component that is a decimal integer (``0``, ``15``, not ``01``) is a
layer index.  Names that carry the same key (how the caller says they are alike: the same
initialization, shape and dtype) and differ only in one index component are merged into one
pattern, one index position after the other, so that ``blocks.{0..3}.layers.{0,1}.w`` covers a
whole grid.  Everything runs in time linear in the number of names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

__all__ = ["NameGroup", "collapse", "index_set_text"]

_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


@dataclass(frozen=True)
class NameGroup:
    """Names (in their original order) that one pattern covers, and the key they share."""

    pattern: str
    names: tuple[str, ...]
    key: Hashable


def index_set_text(indices: Iterable[int]) -> str:
    """``{0..15}``, ``{0..3,5,7..9}``, ``{0,1}``; a single index stands alone (``3``)."""
    values = sorted(set(indices))
    if len(values) == 1:
        return str(values[0])
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:] + [None]:  # type: ignore[list-item]
        if v is not None and v == prev + 1:
            prev = v
            continue
        if prev - start >= 2:
            parts.append(f"{start}..{prev}")
        elif prev == start + 1:
            parts.extend((str(start), str(prev)))
        else:
            parts.append(str(start))
        if v is not None:
            start = prev = v
    return "{" + ",".join(parts) + "}"


class _Pattern:
    __slots__ = ("parts", "indices", "names", "key", "order")

    def __init__(self, parts: list[str], key: Hashable, name: str, order: int) -> None:
        self.parts = parts
        self.indices: dict[int, set[int]] = {}
        self.names = [name]
        self.key = key
        self.order = order


def collapse(items: Sequence[tuple[str, Hashable]]) -> list[NameGroup]:
    """Group ``(name, key)`` pairs into patterns, in order of each group's first name.

    Example:
        >>> [g.pattern for g in collapse([(f"layers.{i}.w", "normal") for i in (0, 1, 2, 5)])]
        ['layers.{0..2,5}.w']
    """
    patterns: list[_Pattern] = []
    for order, (name, key) in enumerate(items):
        parts = name.split(".")
        p = _Pattern(parts, key, name, order)
        for pos, part in enumerate(parts):
            if _INDEX.fullmatch(part):
                p.indices[pos] = {int(part)}
        patterns.append(p)
    positions = sorted({pos for p in patterns for pos in p.indices})
    for pos in positions:
        merged: dict[Hashable, _Pattern] = {}
        survivors: list[_Pattern] = []
        for p in patterns:
            if pos not in p.indices:
                survivors.append(p)
                continue
            signature = (
                p.key,
                len(p.parts),
                tuple("" if i == pos else part for i, part in enumerate(p.parts)),
                tuple(sorted((i, frozenset(s)) for i, s in p.indices.items() if i != pos)),
            )
            into = merged.get(signature)
            if into is None:
                merged[signature] = p
                survivors.append(p)
            else:
                into.indices[pos] |= p.indices[pos]
                into.names.extend(p.names)
        patterns = survivors
    rank = {name: order for order, (name, _) in enumerate(items)}
    groups = []
    for p in sorted(patterns, key=lambda p: p.order):
        p.names.sort(key=rank.__getitem__)
        parts = list(p.parts)
        for pos, indices in p.indices.items():
            parts[pos] = index_set_text(indices)
        groups.append(NameGroup(".".join(parts), tuple(p.names), p.key))
    return groups

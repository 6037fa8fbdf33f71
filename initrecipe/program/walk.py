"""The one traversal of argument values: nested lists, tuples and dicts around leaves.

A :class:`~initrecipe.program.ir.Call`'s arguments nest lists (and, when built by hand, tuples)
around plain values, :class:`~initrecipe.program.ir.Ref`, :class:`~initrecipe.program.ir.GenRef`
and :class:`~initrecipe.program.ir.PortableKey`; an operator's resolved arguments and results nest
the same containers around tensors.  :func:`map_arg` rebuilds such a value with a function applied
to each leaf of the types asked for, :func:`iter_leaves` lists those leaves, both in order.

``Ref`` and ``GenRef`` are ``NamedTuple`` classes; the walk treats them as leaves whatever types it is
asked for, never as tuples to descend into (so a walk for ``Ref`` leaves a ``GenRef`` as it is).

Example:
    >>> from initrecipe.program.ir import GenRef, Ref
    >>> map_arg([Ref(1), (2, Ref(3)), GenRef(0)], Ref, lambda r: f"t{r.id}")
    ['t1', (2, 't3'), GenRef(id=0)]
    >>> [r.id for r in iter_leaves({"a": [Ref(4)], "b": Ref(5)}, Ref)]
    [4, 5]
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence, TypeVar

from initrecipe.program.ir import Call, GenRef, Ref

__all__ = ["map_arg", "iter_leaves", "call_leaves", "arg_at"]

L = TypeVar("L")

_ATOMS = (Ref, GenRef)
"""Tuples that are values, not containers: never descended into."""


def map_arg(value: object, leaf_types: type[L] | tuple[type[L], ...], fn: Callable[[L], Any]) -> Any:
    """``value`` rebuilt with ``fn(leaf)`` in place of each leaf that is an instance of ``leaf_types``.

    Lists, tuples and dicts are rebuilt as plain ``list``, ``tuple`` and ``dict`` (subclasses such as
    ``torch.Size`` become their base type); every other value, :class:`Ref` and :class:`GenRef`
    included when they are not among ``leaf_types``, is kept as it is.
    """
    if isinstance(value, leaf_types):
        return fn(value)  # type: ignore[arg-type]
    if isinstance(value, list):
        return [map_arg(v, leaf_types, fn) for v in value]
    if isinstance(value, tuple):
        return value if isinstance(value, _ATOMS) else tuple(map_arg(v, leaf_types, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_arg(v, leaf_types, fn) for k, v in value.items()}
    return value


def iter_leaves(value: object, leaf_types: type[L] | tuple[type[L], ...]) -> list[L]:
    """The leaves of ``value`` that are instances of ``leaf_types``, in the order :func:`map_arg` visits
    them (list and tuple items in order, dict values in insertion order).  A list, not a generator:
    passes over every call of a program ask for them several times, and a list is built faster."""
    out: list[L] = []
    _collect((value,), leaf_types, _scalars_to_skip(leaf_types), out)
    return out


def call_leaves(ins: Call, leaf_types: type[L] | tuple[type[L], ...]) -> list[L]:
    """The leaves of a call's arguments (positional, then keyword values) that are instances of
    ``leaf_types``: ``iter_leaves((ins.args, ins.kwargs), leaf_types)``, walked without the wrapper
    (every pass over a program asks this of every call)."""
    out: list[L] = []
    skip = _scalars_to_skip(leaf_types)
    _collect(ins.args, leaf_types, skip, out)
    _collect(ins.kwargs.values(), leaf_types, skip, out)
    return out


_SCALARS = (int, float, bool, str, type(None))
"""The plain values most arguments hold (sizes, scales, flags): skipped by their exact type."""


@functools.lru_cache(maxsize=None)
def _scalars_to_skip(leaf_types: type | tuple[type, ...]) -> frozenset[type]:
    """The scalar types :func:`_collect` may pass over without a closer look: those that are not leaves."""
    return frozenset(t for t in _SCALARS if not issubclass(t, leaf_types))


def _collect(items: Iterable[Any], leaf_types: type[L] | tuple[type[L], ...], skip: frozenset[type],
             out: list[L]) -> None:
    """Append the leaves under ``items`` to ``out`` (one call per container, not per item)."""
    for value in items:
        if type(value) in skip:
            continue
        if isinstance(value, leaf_types):
            out.append(value)  # type: ignore[arg-type]
        elif isinstance(value, (list, tuple)):
            if not isinstance(value, _ATOMS):
                _collect(value, leaf_types, skip, out)
        elif isinstance(value, dict):
            _collect(value.values(), leaf_types, skip, out)


def arg_at(ins: Call, arg_names: Sequence[str], pos: int) -> Any:
    """The argument of ``ins`` at schema position ``pos``: positional if given so, else the keyword
    ``arg_names[pos]``, else None (not passed)."""
    if pos < len(ins.args):
        return ins.args[pos]
    return ins.kwargs.get(arg_names[pos])

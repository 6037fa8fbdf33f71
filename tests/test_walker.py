"""The argument walker: nested argument values round-trip through it, ``Ref``/``GenRef`` are leaves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initrecipe.program.ir import Call, GenRef, PortableKey, Ref
from initrecipe.program.walk import arg_at, iter_leaves, map_arg


@dataclass(frozen=True)
class Box:
    """A marker a test map puts in place of a leaf."""

    leaf: Any


PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.sampled_from([torch.float32, torch.int64, torch.device("cpu"), torch.strided, torch.channels_last]),
    st.builds(PortableKey, st.text(max_size=4), st.integers(0, 10)),
)
REFS = st.builds(Ref, st.integers(0, 50))
GENREFS = st.builds(GenRef, st.integers(0, 5))


def _concat(parts: list[list[Ref]]) -> list[Ref]:
    return [r for part in parts for r in part]


def _containers(children: st.SearchStrategy[tuple[Any, list[Ref]]]) -> st.SearchStrategy[tuple[Any, list[Ref]]]:
    items = st.lists(children, max_size=4)
    return st.one_of(
        items.map(lambda xs: ([v for v, _ in xs], _concat([r for _, r in xs]))),
        items.map(lambda xs: (tuple(v for v, _ in xs), _concat([r for _, r in xs]))),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(
            lambda d: ({k: v for k, (v, _) in d.items()}, _concat([r for _, r in d.values()]))
        ),
    )


# A nested argument value and, built beside it (not by a walk), the Refs it holds in order.
ARGUMENTS = st.recursive(
    st.one_of(PLAIN.map(lambda v: (v, [])), REFS.map(lambda r: (r, [r])), GENREFS.map(lambda g: (g, []))),
    _containers,
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``==`` alone takes ``Ref(1)`` for ``(1,)``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)) and not isinstance(a, (Ref, GenRef)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(ARGUMENTS)
def test_identity_map_returns_an_equal_structure(argument: tuple[Any, list[Ref]]) -> None:
    value, _ = argument
    assert same(map_arg(value, (Ref, GenRef), lambda leaf: leaf), value)
    assert same(map_arg(value, (), lambda leaf: leaf), value)


@settings(max_examples=300, deadline=None)
@given(ARGUMENTS)
def test_refs_are_leaves_in_order_and_round_trip(argument: tuple[Any, list[Ref]]) -> None:
    value, refs = argument
    assert list(iter_leaves(value, Ref)) == refs
    assert all(type(r) is Ref for r in iter_leaves(value, Ref))
    boxed = map_arg(value, Ref, Box)
    assert list(iter_leaves(boxed, Ref)) == []
    assert list(iter_leaves(boxed, Box)) == [Box(r) for r in refs]
    assert list(iter_leaves(boxed, GenRef)) == list(iter_leaves(value, GenRef))
    assert same(map_arg(boxed, Box, lambda box: box.leaf), value)


@settings(max_examples=300, deadline=None)
@given(ARGUMENTS)
def test_genrefs_are_leaves_and_untouched_by_a_ref_map(argument: tuple[Any, list[Ref]]) -> None:
    value, _ = argument
    gens = list(iter_leaves(value, GenRef))
    assert all(type(g) is GenRef for g in gens)
    mapped = map_arg(value, Ref, lambda r: Ref(r.id + 1))
    assert list(iter_leaves(mapped, GenRef)) == gens
    assert [r.id for r in iter_leaves(mapped, Ref)] == [r.id + 1 for r in iter_leaves(value, Ref)]


def test_a_ref_map_leaves_a_genref_whole() -> None:
    """Resolving only tensor references (as sharded replay does) keeps a generator a generator, not
    the list ``[id]`` that a walk descending into the ``NamedTuple`` would make of it."""
    env = {0: torch.zeros(1)}
    resolved = map_arg([Ref(0), GenRef(3), (GenRef(0),)], Ref, lambda r: env[r.id])
    assert resolved[0] is env[0]
    assert same(resolved[1:], [GenRef(3), (GenRef(0),)])
    assert map_arg(GenRef(3), Ref, lambda r: 0) == GenRef(3)
    assert list(iter_leaves(GenRef(3), int)) == []


def test_containers_are_rebuilt_as_their_base_types() -> None:
    size = torch.Size([2, 3])
    assert same(map_arg(size, Ref, lambda r: r), (2, 3))
    assert same(map_arg({"a": [1, (2,)]}, int, lambda n: n * 10), {"a": [10, (20,)]})


def test_tensors_in_user_values() -> None:
    a, b = torch.ones(1), torch.zeros(2)
    value = (a, [1, {"x": b}], "s")
    assert list(iter_leaves(value, torch.Tensor)) == [a, b]
    mapped = map_arg(value, torch.Tensor, lambda t: t.shape[0])
    assert same(mapped, (1, [1, {"x": 2}], "s"))


def test_arg_at_reads_positional_then_keyword_arguments() -> None:
    names = ["self", "mean", "std", "generator"]
    call = Call("aten.normal_.default", (None,), (Ref(0), 0.0), {"generator": GenRef(1)})
    assert arg_at(call, names, 0) == Ref(0)
    assert arg_at(call, names, 1) == 0.0
    assert arg_at(call, names, 2) is None
    assert arg_at(call, names, 3) == GenRef(1)

"""`check` and `replay` agree: whatever check accepts replays or raises a RecipeError (never
another exception), and the scalar arguments of random fills (NaN, ±inf, from > to, integers out
of range, negative scales, probabilities outside [0, 1]) are refused by check exactly when replay
refuses them, in both rng modes and for every dtype of the filled tensor.

Property-based (hypothesis): each case builds a two-instruction recipe by hand, an ``empty`` of a
drawn dtype and one random call with drawn scalars.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import initrecipe
from initrecipe.program.ir import Call, GenRef, PortableKey, Ref
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.inspect.check import check

# In-place fills: (operator, number of scalar arguments).
FILLS = [
    ("aten.uniform_.default", 2),
    ("aten.normal_.default", 2),
    ("aten.random_.from", 2),
    ("aten.random_.to", 1),
    ("aten.random_.default", 0),
    ("aten.bernoulli_.float", 1),
    ("aten.exponential_.default", 1),
    ("aten.cauchy_.default", 2),
    ("aten.log_normal_.default", 2),
    ("aten.geometric_.default", 1),
]
# Factories: (operator, number of scalar arguments before `size`).
FACTORIES = [
    ("aten.randint.low_generator", 2),
    ("aten.randint.generator", 1),
    ("aten.normal.float_float", 2),
    ("aten.randperm.generator", 1),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]
EDGES = [0, 1, -1, 2, 0.5, -0.5, 1.5, 255, 256, -129, 127, 128, 2**15, 2**31, 2**53 + 1, 2**63 - 1, -(2**63),
         2**64 - 1, 1e300, -1e300, 1e-300, math.nan, math.inf, -math.inf, True, False]
SCALARS = st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-(2**63), 2**64 - 1), st.integers(-300, 300))
COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


def recipe_bytes(rng: str, op: str, scalars: list, dtype: torch.dtype, factory: bool) -> bytes:
    gen = PortableKey("x", 0) if rng == "portable" else GenRef(0)
    if factory:
        size = [] if op.startswith("aten.randperm") else [[3]]
        program = [Call(op, (0,), (*scalars, *size), {"generator": gen, "dtype": dtype}, None)]
        shape = (3,)
        if op.startswith("aten.randperm"):
            shape = (scalars[0],) if type(scalars[0]) is int and 0 <= scalars[0] <= 3 else (3,)
    else:
        program = [Call("aten.empty.memory_format", (0,), ([3],), {"dtype": dtype}, None),
                   Call(op, (None,), (Ref(0), *scalars), {"generator": gen}, None)]
        shape = (3,)
    entry = TensorEntry("x", 0, "buffer", shape, dtype, False, True)
    return Recipe(rng=rng, seed=0, generators=0 if rng == "portable" else 1, program=program,
                  tensors=[entry]).to_bytes()


def agree(data: bytes) -> str:
    """'ok' or 'refused'; fails unless check and replay agree (and raise only RecipeErrors)."""
    findings = check(data, max_bytes=64 << 20)
    try:
        initrecipe.replay(data, max_bytes=64 << 20)
    except initrecipe.RecipeError as exc:
        assert findings, f"check accepted what replay refuses: {exc}"
        return "refused"
    assert not findings, f"check refused what replays: {findings}"
    return "ok"


def _encodable(scalars: list) -> bool:
    return all(not isinstance(s, int) or -(2**63) <= s < 2**64 for s in scalars)


@settings(max_examples=600, derandomize=True, **COMMON)
@given(rng=st.sampled_from(["torch", "portable"]), fill=st.sampled_from(FILLS), dtype=st.sampled_from(DTYPES),
       scalars=st.lists(SCALARS, min_size=2, max_size=2))
@example(rng="torch", fill=("aten.uniform_.default", 2), dtype=torch.float32, scalars=[1.0, 0.0])  # from > to
@example(rng="torch", fill=("aten.normal_.default", 2), dtype=torch.float32, scalars=[0.0, -1.0])  # std < 0
@example(rng="torch", fill=("aten.uniform_.default", 2), dtype=torch.float32, scalars=[math.nan, 1.0])
@example(rng="torch", fill=("aten.uniform_.default", 2), dtype=torch.float16, scalars=[0.0, math.inf])
@example(rng="torch", fill=("aten.random_.from", 2), dtype=torch.int8, scalars=[0, 300])  # out of int8
@example(rng="torch", fill=("aten.bernoulli_.float", 1), dtype=torch.float32, scalars=[2.0, 0])
@example(rng="portable", fill=("aten.uniform_.default", 2), dtype=torch.float32, scalars=[1.0, 0.0])
@example(rng="portable", fill=("aten.normal_.default", 2), dtype=torch.float32, scalars=[0.0, math.nan])
def test_random_fill_scalars_are_refused_by_check_exactly_when_replay_refuses_them(rng, fill, dtype, scalars):
    op, count = fill
    agree(recipe_bytes(rng, op, scalars[:count], dtype, factory=False))


@settings(max_examples=300, derandomize=True, **COMMON)
@given(rng=st.sampled_from(["torch", "portable"]), factory=st.sampled_from(FACTORIES),
       dtype=st.sampled_from(DTYPES), scalars=st.lists(SCALARS, min_size=2, max_size=2))
@example(rng="torch", factory=("aten.randint.low_generator", 2), dtype=torch.int64, scalars=[5, 5])  # low == high
@example(rng="torch", factory=("aten.randint.low_generator", 2), dtype=torch.uint8, scalars=[0, 1000])
@example(rng="torch", factory=("aten.randperm.generator", 1), dtype=torch.int8, scalars=[200, 0])
@example(rng="torch", factory=("aten.randperm.generator", 1), dtype=torch.float16, scalars=[3000, 0])
@example(rng="torch", factory=("aten.randint.generator", 1), dtype=torch.float32, scalars=[16777218, 0])  # torch 2.15 warns
@example(rng="torch", factory=("aten.randint.low_generator", 2), dtype=torch.bfloat16, scalars=[0, 300])
def test_random_factory_scalars_are_refused_by_check_exactly_when_replay_refuses_them(rng, factory, dtype, scalars):
    op, count = factory
    if op.startswith("aten.randperm") and not (type(scalars[0]) is int and scalars[0] <= 1 << 20):
        scalars = [3, 0]  # a randperm of a drawn length would allocate it; the length is checked by rule
    agree(recipe_bytes(rng, op, scalars[:count], dtype, factory=True))


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_both_outcomes_are_reached(rng):
    # The property is vacuous if every case is refused (or none is).
    ok = recipe_bytes(rng, "aten.uniform_.default", [-1.0, 1.0], torch.float32, factory=False)
    bad = recipe_bytes(rng, "aten.uniform_.default", [1.0, -1.0], torch.float32, factory=False)
    assert agree(ok) == "ok" and agree(bad) == "refused"

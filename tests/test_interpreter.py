"""Dead draws advance the generator exactly as eager's draws do, even when done in bounded chunks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import initrecipe.runtime.scratch as scratch
from initrecipe.analysis.facts import ProgramFacts, TensorMeta
from initrecipe.runtime.scratch import ScratchPool, draw_on_scratch
from initrecipe.program.operators import op_info
from initrecipe.program.ir import Call, GenRef, Ref


def _advance(op: str, shape: tuple[int, ...], dtype: torch.dtype, args: tuple, seed: int) -> torch.Tensor:
    facts = ProgramFacts()
    stride = torch.empty(shape, device="meta").stride()
    facts.define(0, 0, TensorMeta(0, shape, stride, 0, dtype), 0)
    generator = torch.Generator().manual_seed(seed)
    call = Call(op, (None,), (Ref(0), *args), {"generator": GenRef(0)})
    draw_on_scratch(call, op_info(op), facts, generator, "test", ScratchPool())
    return generator.get_state()


def _eager(op: str, shape: tuple[int, ...], dtype: torch.dtype, args: tuple, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    getattr(torch.empty(shape, dtype=dtype), op.split(".")[1])(*args, generator=generator)
    return generator.get_state()


@settings(max_examples=60, deadline=None)
@given(
    numel=st.integers(min_value=1, max_value=700),
    op=st.sampled_from(["aten.uniform_.default", "aten.normal_.default"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_chunked_dead_draws_leave_the_generator_where_one_draw_does(numel, op, dtype, seed):
    args = (-0.5, 2.0) if "uniform" in op else (0.0, 0.02)
    saved = scratch._CHUNK_ELEMENTS
    scratch._CHUNK_ELEMENTS = 64  # tensors over 128 elements are advanced in chunks
    try:
        chunked = _advance(op, (numel,), dtype, args, seed)
    finally:
        scratch._CHUNK_ELEMENTS = saved
    assert torch.equal(chunked, _eager(op, (numel,), dtype, args, seed))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(3,), (15,), (17, 3), (40, 40)])
def test_scratch_draws_of_any_dtype_match_eager(dtype, shape):
    for op, args in (("aten.normal_.default", (0.0, 1.0)), ("aten.uniform_.default", (0.0, 1.0))):
        assert torch.equal(_advance(op, shape, dtype, args, 7), _eager(op, shape, dtype, args, 7)), (op, dtype, shape)

"""Shape propagation shortcuts agree with torch's own meta kernels."""

from __future__ import annotations

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from initrecipe.analysis.meta_outputs import _arange_on_meta
from initrecipe.errors import RecipeFormatError
from initrecipe.program.operators import op_info
from initrecipe.program.ir import Call

NUMBERS = st.one_of(st.integers(-1000, 1000), st.floats(-1000, 1000, allow_nan=False))
OVERLOADS = {1: "aten.arange.default", 2: "aten.arange.start", 3: "aten.arange.start_step"}


@settings(max_examples=400, deadline=None)
@example(bounds=[9.143104841617042e-174, 0, 9.143104841617042e-174], dtype=None)  # (end-start)*step underflows
@example(bounds=[0, 1, 2.225073858507e-311], dtype=None)  # torch raises OverflowError
@given(
    bounds=st.lists(NUMBERS, min_size=1, max_size=3),
    dtype=st.sampled_from([None, torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.int32]),
)
def test_arange_shortcut_matches_the_meta_kernel(bounds: list, dtype: torch.dtype | None) -> None:
    """``arange`` shapes are computed without torch's meta kernel (whose first use imports
    torch._dynamo); where the shortcut answers, it must answer as torch does."""
    name = OVERLOADS[len(bounds)]
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        expected = torch.arange(*bounds, **kwargs, device="meta")
    except Exception:  # torch refuses (RuntimeError, ValueError, even OverflowError for tiny steps)
        expected = None
    try:
        got = _arange_on_meta(0, Call(name, (0,), tuple(bounds), kwargs), op_info(name), list(bounds),
                              dict(kwargs, device=torch.device("meta")))
    except RecipeFormatError:
        assert expected is None
        return
    if got is not None:
        assert expected is not None and (got.shape, got.dtype) == (expected.shape, expected.dtype)


POINTWISE = [
    ("aten.add.Tensor", 2), ("aten.sub.Tensor", 2), ("aten.mul.Tensor", 2), ("aten.div.Tensor", 2),
    ("aten.pow.Tensor_Scalar", 1), ("aten.pow.Scalar", 1), ("aten.reciprocal.default", 1),
    ("aten.exp.default", 1), ("aten.sqrt.default", 1), ("aten.neg.default", 1), ("aten.erfinv.default", 1),
    ("aten.clamp.default", 1), ("aten.floor_divide.default", 2), ("aten.eq.Tensor", 2), ("aten.mul_.Tensor", 2),
    ("aten.add_.Tensor", 2), ("aten.div_.Tensor", 2), ("aten.sigmoid.default", 1), ("aten.maximum.default", 2),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.bool]


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_pointwise_shortcut_matches_the_meta_kernel(data: st.DataObject) -> None:
    from initrecipe.analysis.meta_outputs import _pointwise_on_meta

    name, tensors = data.draw(st.sampled_from(POINTWISE))
    info = op_info(name)
    shape = tuple(data.draw(st.lists(st.integers(0, 3), max_size=3)))
    args: list = []
    for position in range(len(info.schema.arguments)):
        argument = info.schema.arguments[position]
        if argument.kwarg_only:
            break
        kind = str(argument.type)
        if kind == "Tensor" and len(args) < tensors:
            dims = data.draw(st.sampled_from([shape, ()]))
            args.append(torch.empty(dims, dtype=data.draw(st.sampled_from(DTYPES)), device="meta"))
        elif kind in ("Scalar", "Scalar?", "Tensor") and position < 2:
            args.append(data.draw(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.booleans())))
    try:
        expected = info.op(*args)
        expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    except Exception:
        expected = None
    got = _pointwise_on_meta(info, args, {})
    if got is not None:
        assert expected is not None, (name, args)
        assert [(tuple(t.shape), t.dtype, t.stride()) for t in got] == [
            (tuple(t.shape), t.dtype, t.stride()) for t in expected
        ]

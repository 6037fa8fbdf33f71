"""The argument checks that torch's meta kernels skip and its CPU kernels make (or trust).

* :data:`PRECONDITION_CHECKS`: the implementation of each :class:`Precondition` rule the operator
  registry names (operators whose CPU kernels trust their arguments in ways the meta kernels do not
  check, or whose meta kernels can be made to run forever), checked on the meta arguments;
* :func:`random_call_problem`: why torch's CPU kernel would refuse a random call's scalar
  arguments, found by running it on one-element CPU stand-ins (meta kernels check few of them);
* :func:`random_bounds_problem`: the bounds of integer draws into a floating dtype, which the
  recorder asks about before a draw runs.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from initrecipe.program.operators import PRECONDITIONS, OpInfo, Precondition
from initrecipe.support.display import failure_detail

__all__ = ["PRECONDITION_CHECKS", "random_bounds_problem", "random_call_problem"]


def _weight_norm_precondition(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    # The fused CPU kernel trusts `g` to hold one element per slice of `v` along `dim`, and `v` to
    # be non-empty: anything else reads out of bounds.
    v = args[0] if args else kwargs.get("v")
    g = args[1] if len(args) > 1 else kwargs.get("g")
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    if not isinstance(v, torch.Tensor) or not isinstance(g, torch.Tensor) or type(dim) is not int:
        return None  # torch itself rejects these
    if v.dim() == 0:
        return None
    if dim < 0:
        dim += v.dim()
    if dim not in (0, v.dim() - 1):
        return None  # not the fused kernel
    if v.numel() == 0 or g.numel() != v.shape[dim]:
        return (f"`g` must have one element per slice of a non-empty `v` along dim {dim} "
                f"(v {list(v.shape)}, g {list(g.shape)})")
    return None


def _round_precondition(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    # The meta kernel computes 10 ** -decimals with Python integers: decimals = -2**63 never ends.
    decimals = args[1] if len(args) > 1 else kwargs.get("decimals", 0)
    if type(decimals) is int and abs(decimals) > 1000:
        return f"decimals={decimals} is out of range [-1000, 1000]"
    return None


def _random_precondition(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    # `random_(from, to=None)` on a floating tensor never returns for `from` near 2**63 (CPU).
    target = args[0] if args else kwargs.get("self")
    if not isinstance(target, torch.Tensor):
        return None
    return _exact_integer_bounds(target.dtype, list(args[1:]) + [v for k, v in kwargs.items() if k in ("from", "to")])


def _randint_precondition(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    # `randint(low, high, size, dtype=float)` and `randint_like(t, low, high)`: the bounds of `random_`.
    base = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("self")
    dtype = kwargs.get("dtype")
    if dtype is None and isinstance(base, torch.Tensor):
        dtype = base.dtype  # `randint_like` draws into its input's dtype; `randint` into int64
    bounds = [a for a in args if type(a) is int] + [v for k, v in kwargs.items() if k in ("low", "high")]
    return _exact_integer_bounds(dtype, bounds) if isinstance(dtype, torch.dtype) else None


def _exact_integer_bounds(dtype: torch.dtype, bounds: list[object]) -> str | None:
    """Why integer draws into ``dtype`` cannot have these bounds, or None.

    Into a floating dtype torch rounds a bound beyond its exact integers (``2**digits``) inward
    before drawing (``update_from`` / ``update_to``), which neither the generator-consumption model
    nor the draw-cost rules describe, and warns about it (2.15: a Python warning, 2.13 and 2.14: on
    stderr); ``check`` and replay refuse such a draw in every torch release instead."""
    if not dtype.is_floating_point:
        return None
    limit = int(round(2 / torch.finfo(dtype).eps))  # 2**digits: 2**24 for float32
    for value in bounds:
        if type(value) is int and abs(value) > limit:
            return f"{value} is outside the integers {dtype} represents exactly (|n| <= {limit})"
    return None


# Operators whose CPU kernels trust their arguments in ways the meta kernels do not check, or whose
# meta kernels can be made to run forever: a precondition each, checked on the meta arguments
# before anything runs.
PRECONDITION_CHECKS = {  # the implementation of each precondition rule (PRECONDITIONS names each operator's)
    Precondition.WEIGHT_NORM: _weight_norm_precondition,
    Precondition.ROUND: _round_precondition,
    Precondition.RANDOM_BOUNDS: _random_precondition,
    Precondition.RANDINT_BOUNDS: _randint_precondition,
}
_BOUNDS_PRECONDITIONS = (Precondition.RANDOM_BOUNDS, Precondition.RANDINT_BOUNDS)


def random_bounds_problem(info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """Why replay refuses the bounds of an integer draw (``random_``, ``randint``...) into a
    floating dtype, or None; the recorder asks before the draw runs, on fake tensors."""
    rule = PRECONDITIONS.get(info.name.split(".")[1])
    return PRECONDITION_CHECKS[rule](list(args), kwargs) if rule in _BOUNDS_PRECONDITIONS else None


# ``randperm(n)`` CPU kernels refuse an ``n`` whose values the dtype cannot hold exactly: integer
# dtypes need ``n - 1 <= max``, float16/float32/float64 ``n <= 2**(mantissa bits + 1) + 1``
# (bfloat16 is not checked by torch).  Checked by rule, so that the probe draws at most
# _PROBE_RANDPERM_N values however large ``n`` is: a recipe of 10**4 randperm calls must not cost
# 10**4 real permutations to check.
_PROBE_RANDPERM_N = 2
_RANDPERM_FLOAT_LIMITS = {torch.float16: 2**11 + 1, torch.float32: 2**24 + 1, torch.float64: 2**53 + 1}


def _randperm_limit(dtype: torch.dtype) -> int | None:
    """The largest ``n`` torch's CPU ``randperm`` accepts for ``dtype`` (None: not limited by it)."""
    if dtype in _RANDPERM_FLOAT_LIMITS:
        return _RANDPERM_FLOAT_LIMITS[dtype]
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        return None  # bfloat16 is unchecked; the probe finds the dtypes randperm does not implement
    return torch.iinfo(dtype).max + 1


_PROBE_GENERATOR: list[torch.Generator] = []


def _probe_value(value: object) -> object:
    """A meta argument as a tiny CPU stand-in: a tensor of ones with one element (none if it is
    empty; ones are valid probabilities, rates and scales), the CPU device."""
    if isinstance(value, torch.Tensor):
        return torch.ones(tuple(min(d, 1) for d in value.shape), dtype=value.dtype)
    if isinstance(value, torch.device):
        return torch.device("cpu")
    return value


def random_call_problem(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why torch's CPU kernel would refuse this random call's scalar arguments, found by running the
    call on one-element CPU stand-ins of its tensors (with a private generator), or None.

    Meta kernels check few of them (``uniform_`` with ``from > to``, ``bernoulli_`` with ``p = 2``,
    ``randint`` bounds outside the dtype, ``rand`` into an integer dtype pass on meta), so without
    the probe ``check`` would accept what replay then refuses.  Tensor *values* (the probabilities
    of ``bernoulli(p)``, the rates of ``poisson``) exist only at replay, which checks them; the
    probe passes ones.  ``multinomial``'s counts depend on the shape, so it is checked by rule."""
    packet = info.name.split(".")[1]
    if packet == "multinomial":
        return _multinomial_problem(info, args, kwargs)
    names = info.arg_names
    probe_args = [_probe_value(a) for a in args]
    probe_kwargs = {k: _probe_value(v) for k, v in kwargs.items()}
    if "size" in names:
        pos = names.index("size")
        size = probe_args[pos] if pos < len(probe_args) else probe_kwargs.get("size")
        if isinstance(size, (list, tuple)) and all(type(d) is int for d in size):
            small = [min(d, 1) for d in size]
            if pos < len(probe_args):
                probe_args[pos] = small
            else:
                probe_kwargs["size"] = small
    if packet == "randperm":
        n = probe_args[0] if probe_args else probe_kwargs.get("n")
        dtype = kwargs.get("dtype") or (args[names.index("dtype")] if "dtype" in names and names.index("dtype") < len(args) else None)
        dtype = dtype if isinstance(dtype, torch.dtype) else torch.int64
        if type(n) is int and n > _PROBE_RANDPERM_N:
            limit = _randperm_limit(dtype)
            if limit is not None and n > limit:
                return f"randperm of {n} values cannot be represented exactly in {dtype} (at most {limit})"
            n = _PROBE_RANDPERM_N
        if probe_args:
            probe_args[0] = n
        else:
            probe_kwargs["n"] = n
    if not _PROBE_GENERATOR:
        _PROBE_GENERATOR.append(torch.Generator(device="cpu"))
    generator = _PROBE_GENERATOR[0]
    gen_pos = names.index(info.generator_arg)
    if gen_pos < len(probe_args):
        probe_args[gen_pos] = generator
    else:
        probe_kwargs[info.generator_arg] = generator
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            info.op(*probe_args, **probe_kwargs)
    except Exception as exc:
        return failure_detail(exc)
    return None


def _multinomial_problem(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """The shape and count checks of torch's CPU ``multinomial`` (its probabilities are data)."""
    values = dict(zip(info.arg_names, args))
    values.update(kwargs)
    probs, n, replacement = values.get("self"), values.get("num_samples"), values.get("replacement", False)
    if not isinstance(probs, torch.Tensor) or type(n) is not int:
        return None  # torch's own checks (run on meta) answer these
    if probs.dim() not in (1, 2):
        return f"prob_dist must be 1 or 2 dim, found {probs.dim()} dimensions"
    if not probs.dtype.is_floating_point:
        return f"multinomial only supports floating-point dtypes for input, found {probs.dtype}"
    categories = probs.shape[-1]
    if categories == 0 or (probs.dim() == 2 and probs.shape[0] == 0):
        return "cannot sample from an empty distribution"
    if categories > 2**24:
        return "number of categories cannot exceed 2^24"
    if n <= 0:
        return "cannot sample n_sample <= 0 samples"
    if not replacement and n > categories:
        return "cannot sample n_sample > prob_dist.size(-1) samples without replacement"
    return None

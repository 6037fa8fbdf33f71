"""How many outputs of torch's CPU generator each random operator takes: the consumption model.

torch's CPU random kernels take a number of 32-bit mt19937 outputs that depends only on the
operator, the tensor's dtype, size and contiguity, and a few scalar arguments, never on the values
drawn — with one twist: the scalar normal sampler (small or non-contiguous ``normal_``,
``log_normal_``) makes Box–Muller pairs and keeps the second sample of a pair in the generator
(the "double normal cache"), so how many outputs it takes depends on whether a sample is cached.
``schema/TORCH_RNG.md`` specifies the model; :func:`cost_of` computes it for a recorded call, and
None for a call outside the model (replay then runs torch's kernel to advance the generator, as
eager does).  Each rule is checked against the running torch once per process before it is used
(:func:`trusted`): a torch build whose kernels behave differently falls back to drawing, so the
bits stay eager's.

Example:
    >>> import torch
    >>> from initrecipe.rng.torch.draw_costs import normal_cost
    >>> normal_cost(17, torch.float32, contiguous=True)   # 17 uniforms, then the last 16 redrawn
    DrawCost(outputs=33, gaussians=0)
    >>> normal_cost(3, torch.float32, contiguous=True)    # scalar Box–Muller: two pairs
    DrawCost(outputs=0, gaussians=3)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from initrecipe.program.ir import Call, GenRef, Ref
from initrecipe.program.operators import CHUNKABLE_FILLS, DRAW_COST_RULES, DrawRule, OpInfo
from initrecipe.rng.torch import generator_state as cpu_generator

__all__ = ["DrawCost", "cost_of", "normal_cost", "uniform_cost", "random_cost", "is_contiguous", "trusted",
           "RANDPERM_LIMIT", "chunk_granule", "DRAW_RULES", "after_cost", "gaussian_pairs", "pair_sample"]


class DrawnTensor(Protocol):
    """What the consumption model reads of a drawn tensor's facts
    (:class:`~initrecipe.analysis.facts.TensorMeta` has it)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def stride(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def numel(self) -> int: ...


class ProgramShapes(Protocol):
    """What the consumption model reads of a program's facts
    (:class:`~initrecipe.analysis.facts.ProgramFacts` has it): each value's tensor, each call's operator."""

    @property
    def values(self) -> Mapping[int, DrawnTensor]: ...

    @property
    def infos(self) -> Sequence[OpInfo | None]: ...


@dataclass(frozen=True, slots=True)
class DrawCost:
    """What one random call takes from the generator.

    ``outputs``: 32-bit outputs taken whatever the generator's normal cache holds.
    ``gaussians``: elements drawn one by one by torch's scalar Box–Muller sampler: each element
    uses the cached sample if there is one, else takes 4 outputs (two doubles) for a new pair and
    caches its second sample.
    """

    outputs: int = 0
    gaussians: int = 0


RANDPERM_LIMIT = (2**32 - 1) // 20
"""``randperm(n)`` takes n - 1 outputs for n below this; larger n switch to 64-bit draws (outside the model)."""

_FLOATING = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_REAL_OF_COMPLEX = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_DIGITS = {torch.float64: 53, torch.float32: 24, torch.float16: 11, torch.bfloat16: 8}
_INT_MAX = {torch.int64: 2**63 - 1, torch.int32: 2**31 - 1, torch.int16: 2**15 - 1, torch.int8: 2**7 - 1,
            torch.uint8: 2**8 - 1, torch.bool: 1}
_WIDE_RANGE = 2**28  # bounded integer draws of a range at least this wide take random64


def after_cost(state: cpu_generator.GeneratorState, cost: DrawCost,
               pair_sample: Callable[[cpu_generator.GeneratorState, int], float]) -> cpu_generator.GeneratorState:
    """The concrete state after a draw of ``cost`` from ``state``; ``pair_sample(state, k)``
    gives the second sample of the Box–Muller pair made from the outputs k … k + 3 after ``state``."""
    if not cost.gaussians:
        return cpu_generator.advance(state, cost.outputs)
    cached = state.double_normal is not None
    pairs, leaves_cached = gaussian_pairs(cost.gaussians, cached)
    end = cpu_generator.advance(state, 4 * pairs)
    if leaves_cached is None:
        return end
    return end.with_double_normal(pair_sample(state, 4 * pairs - 4) if leaves_cached else None)


def pair_sample(state: cpu_generator.GeneratorState, outputs: int = 0) -> float:
    """The second sample of the Box–Muller pair torch makes from the 4 outputs that follow the next
    ``outputs`` outputs of ``state`` (torch computes it; the consumption model only says where the
    pair starts).  Its signature is the ``pair_sample`` argument of :func:`after_cost`."""
    generator = cpu_generator.advance(state, outputs).with_double_normal(None).generator()
    torch.empty(1, dtype=torch.float64).normal_(generator=generator)
    value = cpu_generator.GeneratorState.of(generator).double_normal
    assert value is not None
    return value


def gaussian_pairs(count: int, cached: bool) -> tuple[int, bool | None]:
    """(new pairs made, whether a sample is cached afterwards; None: unchanged) for ``count``
    scalar normal samples drawn with (``cached``) or without a sample cached first."""
    if count == 0:
        return 0, None
    fresh = count - int(cached)  # samples not served by the cache
    return (fresh + 1) // 2, fresh % 2 == 1


def _words(dtype: torch.dtype) -> int:
    """Outputs per uniform real sample: a double takes two (random64), everything else one."""
    return 2 if dtype == torch.float64 else 1


def is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """``torch.Tensor.is_contiguous()`` from a shape and stride: row-major and dense, where a
    dimension of size 1 may have any stride and an empty tensor is contiguous whatever its strides."""
    if 0 in shape:
        return True
    expected = 1
    for size, st in reversed(list(zip(shape, stride))):
        if size != 1 and st != expected:
            return False
        expected *= size
    return True


def normal_cost(numel: int, dtype: torch.dtype, *, contiguous: bool) -> DrawCost | None:
    """``normal_`` on a tensor (complex tensors: on their real view)."""
    if dtype in _REAL_OF_COMPLEX:
        numel, dtype = 2 * numel, _REAL_OF_COMPLEX[dtype]
    if dtype not in _FLOATING:
        return None
    if numel >= 16 and contiguous:
        if dtype in (torch.float32, torch.float64):
            # All uniforms first, Box–Muller on blocks of 16, and the last 16 redrawn when the
            # size is not a multiple of 16.
            return DrawCost(outputs=_words(dtype) * (numel + (16 if numel % 16 else 0)))
        return DrawCost(outputs=16 * -(-numel // 16))  # reduced precision: whole blocks of 16
    return DrawCost(gaussians=numel)


def uniform_cost(numel: int, dtype: torch.dtype) -> DrawCost | None:
    if dtype in _REAL_OF_COMPLEX:
        numel, dtype = 2 * numel, _REAL_OF_COMPLEX[dtype]
    if dtype not in _FLOATING:
        return None
    return DrawCost(outputs=_words(dtype) * numel)


def random_cost(numel: int, dtype: torch.dtype, low: object, high: object, *, bounded: bool) -> DrawCost | None:
    """``random_()`` (``bounded`` False), ``random_(to)`` / ``random_(from, to)`` / ``randint``.

    Unbounded: one output per element, two (random64) for int64 and float64.  Bounded: two per
    element when the range has 2**28 values or more, else one.  Floating tensors are modelled only
    for bounds the dtype represents exactly (torch rounds other bounds before it computes the range).
    """
    if dtype not in _INT_MAX and dtype not in _DIGITS:
        return None
    if not bounded:
        return DrawCost(outputs=numel * (2 if dtype in (torch.int64, torch.float64) else 1))
    if type(low) is not int or (high is not None and type(high) is not int):
        return None
    if high is None:
        if low == -(2**63):
            return DrawCost(outputs=2 * numel)  # the full 64-bit range
        top = 2 ** _DIGITS[dtype] if dtype in _DIGITS else _INT_MAX[dtype]
        span = top - low + 1
    else:
        span = high - low
    if dtype in _DIGITS and max(abs(low), abs(high if high is not None else 0)) > 2 ** _DIGITS[dtype]:
        return None
    if span <= 0:
        return None  # torch refuses it
    return DrawCost(outputs=numel * (2 if span >= _WIDE_RANGE else 1))


def chunk_granule(op: str, numel: int, dtype: torch.dtype, contiguous: bool) -> int | None:
    """For a fill whose values at each position depend only on the outputs at that position:
    the granule (in elements) a draw may be split at, drawing each piece into its own slice with a
    generator positioned at the piece's first output; None when the fill cannot be split.

    ``uniform_`` takes one sample per element (granule 1); ``normal_`` on 16 or more contiguous
    floating elements transforms blocks of 16 and treats the tail as its own block (granule 16,
    with a last piece of at least 16 elements holding the tail).
    """
    granule = CHUNKABLE_FILLS.get(op)
    if granule is None or not contiguous or dtype not in _FLOATING:
        return None
    return granule if granule == 1 or numel >= 2 * granule else None


def _arg(ins: Call, info: OpInfo, name: str, default: object = None) -> Any:
    if name not in info.arg_names:
        return default
    pos = info.arg_names.index(name)
    if pos < len(ins.args):
        return ins.args[pos]
    return ins.kwargs.get(name, default)


def _meta_of(value: object, facts: ProgramShapes) -> DrawnTensor | None:
    if isinstance(value, Ref):
        return facts.values.get(value.id)
    return None


def _target(ins: Call, info: OpInfo, facts: ProgramShapes) -> DrawnTensor | None:
    """The tensor a call fills: ``self`` for in-place fills, else its (first) output."""
    if info.overwrites_self:
        return _meta_of(ins.args[0] if ins.args else None, facts)
    out = next((o for o in ins.outs if o is not None), None)
    return facts.values.get(out) if out is not None else None


# Each rule: operator packet -> function(ins, info, facts, meta) -> DrawCost | None.
def _rule_uniform(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    return uniform_cost(meta.numel, meta.dtype)


def _rule_normal(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    return normal_cost(meta.numel, meta.dtype, contiguous=is_contiguous(meta.shape, meta.stride))


def _rule_random(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    overload = ins.op.split(".")[2]
    packet = ins.op.split(".")[1]
    if packet in ("randint", "randint_like"):
        if overload == "Tensor_generator":
            return None  # `high` is a tensor
        low = _arg(ins, info, "low", 0)
        return random_cost(meta.numel, meta.dtype, low, _arg(ins, info, "high"), bounded=True)
    if overload == "default":
        return random_cost(meta.numel, meta.dtype, None, None, bounded=False)
    if overload == "to":
        return random_cost(meta.numel, meta.dtype, 0, _arg(ins, info, "to"), bounded=True)
    return random_cost(meta.numel, meta.dtype, _arg(ins, info, "from"), _arg(ins, info, "to"), bounded=True)


def _rule_two_per_element(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    # exponential_, cauchy_, geometric_, bernoulli_(float p): one double uniform per element.
    if meta.dtype in _REAL_OF_COMPLEX:
        return None
    return DrawCost(outputs=2 * meta.numel)


def _rule_log_normal(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    if meta.dtype not in _FLOATING:
        return None
    return DrawCost(gaussians=meta.numel)


def _rule_bernoulli(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    overload = ins.op.split(".")[2]
    if overload in ("float", "p"):
        return _rule_two_per_element(ins, info, facts, meta)
    # A tensor of probabilities (`self` for bernoulli.default, `p` otherwise): one float uniform per
    # element of the result, a double one when the probabilities are float64.
    probabilities = _meta_of(_arg(ins, info, "self" if overload == "default" else "p"), facts)
    if probabilities is None:
        return None
    return DrawCost(outputs=meta.numel * _words(probabilities.dtype))


def _rule_randperm(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    n = _arg(ins, info, "n")
    if type(n) is not int or not 0 <= n < RANDPERM_LIMIT:
        return None
    return DrawCost(outputs=max(n - 1, 0))


def _rule_multinomial(ins: Call, info: OpInfo, facts: ProgramShapes, meta: DrawnTensor) -> DrawCost | None:
    probabilities = _meta_of(_arg(ins, info, "self"), facts)
    samples = _arg(ins, info, "num_samples")
    replacement = _arg(ins, info, "replacement", False)
    if probabilities is None or type(samples) is not int or not isinstance(replacement, bool):
        return None
    if len(probabilities.shape) not in (1, 2):
        return None
    if not replacement or samples == 1:
        # Gumbel-style: one exponential_ (a double uniform) per probability.
        return DrawCost(outputs=2 * probabilities.numel)
    rows = probabilities.shape[0] if len(probabilities.shape) == 2 else 1
    return DrawCost(outputs=2 * rows * samples)


DRAW_RULES: dict[DrawRule, Callable[..., DrawCost | None]] = {
    DrawRule.UNIFORM: _rule_uniform,
    DrawRule.NORMAL: _rule_normal,
    DrawRule.RANDOM: _rule_random,
    DrawRule.TWO_PER_ELEMENT: _rule_two_per_element,
    DrawRule.LOG_NORMAL: _rule_log_normal,
    DrawRule.BERNOULLI: _rule_bernoulli,
    DrawRule.RANDPERM: _rule_randperm,
    DrawRule.MULTINOMIAL: _rule_multinomial,
}
"""The implementation of each draw-cost rule (:data:`~initrecipe.program.operators.DRAW_COST_RULES`
names each operator's and the family of probes that must trust it; ``NOT_MODELLED`` has none)."""


def cost_of(ins: Call, info: OpInfo, facts: ProgramShapes) -> DrawCost | None:
    """What random call ``ins`` (its :class:`~initrecipe.program.operators.OpInfo` ``info``, the program's
    :class:`~initrecipe.analysis.facts.ProgramFacts`) takes from its generator; None outside the model
    (``out=`` overloads, ``poisson``, huge ``randperm``, a rule the running torch contradicts)."""
    if not info.is_random or not isinstance(_arg(ins, info, info.generator_arg), GenRef):
        return None
    if info.written_args and not info.overwrites_self:
        return None  # out= overloads
    entry = DRAW_COST_RULES.get(ins.op.split(".")[1])
    if entry is None or entry.family is None:  # not random, or NOT_MODELLED
        return None
    family, rule = entry.family, DRAW_RULES[entry.rule]
    meta = _target(ins, info, facts)
    if meta is None or not trusted(family):
        return None
    try:
        return rule(ins, info, facts, meta)
    except (TypeError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- self-check
_trust: dict[str, bool] = {}
_trust_lock = threading.Lock()


def _probes(family: str) -> list[tuple[Callable[[torch.Generator], Any], Callable[[], DrawCost | None], bool]]:
    """(draw into a probe generator, the model's cost, whether a normal sample is cached first)."""
    e = torch.empty
    f32, f64, f16, bf16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
    if family == "uniform":
        return [(lambda g, n=n, d=d: e(n, dtype=d).uniform_(generator=g), lambda n=n, d=d: uniform_cost(n, d), False)
                for n in (1, 17) for d in (f32, f64, bf16)]
    if family == "normal":
        out = []
        for n in (1, 3, 16, 17, 40):
            for d in (f32, f64, f16):
                out.append((lambda g, n=n, d=d: e(n, dtype=d).normal_(generator=g),
                            lambda n=n, d=d: normal_cost(n, d, contiguous=True), n == 3))
        out.append((lambda g: e(20, 2)[:, 0].normal_(generator=g),
                    lambda: normal_cost(20, f32, contiguous=False), True))
        return out
    if family == "random":
        cases = [(torch.int64, None, None, False), (torch.int32, None, None, False), (f64, None, None, False),
                 (f32, None, None, False), (torch.int64, 0, 100, True), (torch.int64, 0, 2**33, True),
                 (torch.int64, 0, 2**28 - 1, True), (torch.int64, 0, 2**28, True), (torch.int32, 3, 2**28 + 3, True),
                 (torch.int64, 5, None, True), (torch.int32, -(2**31), 2**31, True), (f64, 0, 2**33, True),
                 (f32, 3, None, True), (torch.int64, -(2**63), None, True), (torch.uint8, 0, 200, True)]

        def draw(g: torch.Generator, d: torch.dtype, lo: int | None, hi: int | None, bounded: bool) -> None:
            t = e(3, dtype=d)
            t.random_(lo, hi, generator=g) if bounded else t.random_(generator=g)

        return [(lambda g, c=c: draw(g, *c), lambda c=c: random_cost(3, c[0], c[1], c[2], bounded=c[3]), False)
                for c in cases]
    if family in ("exponential", "cauchy", "geometric"):
        method = {"exponential": lambda t, g: t.exponential_(generator=g),
                  "cauchy": lambda t, g: t.cauchy_(generator=g),
                  "geometric": lambda t, g: t.geometric_(0.3, generator=g)}[family]
        return [(lambda g, n=n, d=d: method(e(n, dtype=d), g), lambda n=n: DrawCost(outputs=2 * n), False)
                for n in (1, 17, 2000) for d in (f32, f64)]
    if family == "log_normal":
        return [(lambda g, n=n: e(n).log_normal_(generator=g), lambda n=n: DrawCost(gaussians=n), n == 2)
                for n in (1, 2, 5)]
    if family == "bernoulli":
        out = [(lambda g, n=n, d=d: e(n, dtype=d).bernoulli_(0.5, generator=g), lambda n=n: DrawCost(outputs=2 * n), False)
               for n in (1, 17, 2000) for d in (f32, torch.bool)]
        out += [(lambda g, n=n, d=d: torch.bernoulli(torch.full((n,), 0.5, dtype=d), generator=g),
                 lambda n=n, d=d: DrawCost(outputs=n * _words(d)), False)
                for n in (1, 2000) for d in (f32, f64)]
        return out
    if family == "randperm":
        return [(lambda g, n=n: torch.randperm(n, generator=g), lambda n=n: DrawCost(outputs=max(n - 1, 0)), False)
                for n in (0, 1, 2, 50)]
    if family == "multinomial":
        return [(lambda g, k=k, r=r: torch.multinomial(torch.ones(2, 8), k, r, generator=g),
                 lambda k=k, r=r: DrawCost(outputs=32 if (not r or k == 1) else 2 * 2 * k), False)
                for k, r in ((1, False), (3, False), (1, True), (3, True))]
    raise KeyError(family)  # pragma: no cover


def trusted(family: str) -> bool:
    """Whether the running torch draws as the model's rules for ``family`` say (checked once per
    process with small probes against torch's own kernels; False without the C extension, which
    the checked positions are computed with)."""
    verdict = _trust.get(family)
    if verdict is not None:
        return verdict
    with _trust_lock:
        verdict = _trust.get(family)
        if verdict is None:
            verdict = _trust[family] = _check_family(family)
    return verdict


def _check_family(family: str) -> bool:
    if not cpu_generator.available():
        return False
    for draw, cost, cached in _probes(family):
        generator = torch.Generator(device="cpu").manual_seed(20240601)
        if cached:
            torch.empty(1, dtype=torch.float64).normal_(generator=generator)  # leaves a sample cached
        start = cpu_generator.GeneratorState.of(generator)
        expected = cost()
        try:
            with torch.no_grad():
                draw(generator)
        except RuntimeError:  # pragma: no cover - a probe this torch refuses: do not trust the rule
            return False
        if expected is None:
            return False
        if after_cost(start, expected, pair_sample) != cpu_generator.GeneratorState.of(generator):
            return False
    return True


"""How much work a replay is, estimated before it runs, and the budget it must stay within.

A recipe of a few kilobytes can ask for hours of computation in little memory: a chain of large
matrix products, QR or SVD decompositions, sorts, permutations, a fill of a stride-0 view a
trillion elements long, millions of instructions.  Replay therefore estimates, from the shapes
the meta-device analysis computes, what every instruction it would execute costs, and refuses
(:class:`WorkLimitError`, before anything is allocated) a replay whose estimate is over its
budget.

Work is counted in **reference seconds**: the time the operators take on the machine the rates
below were measured on (``tools/calibrate_work.py``; the method, the command and the attack
corpus are in ``docs/SAFETY.md``).  Each instruction that runs costs :data:`INSTRUCTION_SECONDS`
plus its data: bytes read and written at :data:`MEMORY_BYTES_PER_SECOND`, elements of random
fills, transcendental functions and indexing at their own rates, ``2·m·n·k`` floating-point
operations per matrix product, ``n·log2(n)`` comparisons per sort, ``m·n·min(m, n)`` per QR,
SVD or eigendecomposition.  Every instruction of the program, run or not, also costs
:data:`CHECK_SECONDS` (the analysis itself).

The default budget is :data:`DEFAULT_MAX_WORK` plus :data:`OUTPUT_WORK_PER_ELEMENT` for every
element of the tensors the replay returns (counted once per storage, however many names or views
show it): a replay may take time in proportion to what it really allocates and hands back, and
nothing else (a storage that is allocated but never returned buys nothing).  ``max_work=`` replaces
the default with a number of reference seconds.

Example:
    >>> import initrecipe, torch
    >>> from initrecipe.runtime.replay_plan import prepare_replay
    >>> plan = prepare_replay(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0))
    >>> plan.work.seconds < 0.01 < plan.work.budget
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from initrecipe.errors import WorkLimitError
from initrecipe.program.ir import Call, Instruction
from initrecipe.program.operators import COST_FAMILIES, CostFamily, OpInfo
from initrecipe.program.walk import iter_leaves
from initrecipe.rng.portable.samplers import KERNEL_AVAILABLE
from initrecipe.support.display import format_bytes

__all__ = [
    "WorkEstimate",
    "Cost",
    "DEFAULT_MAX_WORK",
    "OUTPUT_WORK_PER_ELEMENT",
    "call_cost",
    "literal_cost",
    "RNG_COST",
    "work_budget",
    "format_seconds",
]


# --------------------------------------------------------------------------- the budget
DEFAULT_MAX_WORK = 60.0
"""Reference seconds any replay may take, whatever it returns."""
OUTPUT_WORK_PER_ELEMENT = 1e-7
"""Reference seconds a replay may add per element of the tensors it returns: about ten random
draws per element, several times what initializing a real model's weights takes."""

# --------------------------------------------------------------------------- the rates
# Measured with `tools/calibrate_work.py` on the reference machine (2 cores, torch 2.13.0, 2
# threads) and rounded down; docs/SAFETY.md describes the method.
INSTRUCTION_SECONDS = 5e-6
"""Executing one instruction, beyond the data it touches."""
CHECK_SECONDS = 3e-5
"""Checking one instruction on the meta device and planning it (every instruction of the program)."""
MEMORY_BYTES_PER_SECOND = 2.5e9
"""Bytes read plus bytes written by copies, fills, arithmetic and reductions."""
ELEMENTS_PER_SECOND = 5e8
"""Elements of any operator that does arithmetic per element (a floor under the memory rate)."""
TRANSCENDENTAL_PER_SECOND = 1e8
"""Elements of ``exp``, ``log``, ``pow``, ``erfinv``, division, ... (float32/float64)."""
HALF_ERFINV_PER_SECOND = 8e6
"""Elements of ``erfinv`` in float16/bfloat16 (computed through float, without vectorization)."""
INDEXING_PER_SECOND = 1.4e7
"""Elements gathered or scattered through an index (random memory access): ``index``, ``gather``,
``index_put_`` (with accumulation), ``masked_select``, ``nonzero``, ..."""
SORT_PER_SECOND = 2e8
"""Comparisons (``n·log2(n)`` per sorted row) of ``sort``, ``argsort``, ``topk``, ``unique``, ..."""
SCAN_PER_SECOND = 1.2e8
"""Elements of ``cumsum``/``cumprod`` (sequential along their dimension)."""
RANDPERM_PER_SECOND = 2e7
"""Elements of ``randperm`` with a torch generator (random memory access)."""
PORTABLE_KERNEL_PER_SECOND = 5e8
"""Elements of a portable draw with the C kernel (or on an accelerator)."""
PORTABLE_TORCH_OPS_PER_SECOND = 3e6
"""Elements of a portable draw on the CPU without the C kernel (the samplers' torch-op path)."""
FIXED_QR_PER_SECOND = 2.5e7
"""``m·n·min(m, n)`` of the portable fixed-order QR (``schema/FIXED_QR.md``)."""
RANDOM_PER_SECOND: dict[str, float] = {
    "normal": 1e8, "uniform": 1.1e8, "bernoulli": 5e7, "exponential": 2.5e7, "cauchy": 1.8e7,
    "log_normal": 1.6e7, "geometric": 2.5e7, "random": 1.3e8, "randint": 1.3e8, "rand": 1.1e8,
    "randn": 1e8, "poisson": 2e7,
}
"""Elements per second of each random fill with a torch generator (float32; see the float64 rates)."""
RANDOM_FLOAT64_PER_SECOND: dict[str, float] = {"normal": 2.8e7, "randn": 2.8e7}
"""Float64 rates where they are much lower than float32's."""
MULTINOMIAL_PER_SECOND = 5e7
"""Categories plus samples, times log2 of the categories, of ``multinomial``."""
MATMUL_FLOPS_PER_SECOND: dict[torch.dtype, float] = {
    torch.float32: 3e11, torch.float16: 3e11, torch.bfloat16: 3e11, torch.complex64: 3e11,
    torch.float64: 1.5e11, torch.complex128: 1.5e11,
}
"""Floating-point operations per second of ``mm``/``bmm``/``matmul``/... (complex: 4 per multiply-add pair)."""
INTEGER_MATMUL_FLOPS_PER_SECOND = 1.5e10
"""The same for integer dtypes (no BLAS)."""
LINALG_PER_SECOND: dict[str, float] = {
    "qr": 1e9, "svd": 4e8, "eigh": 4e8, "cholesky": 5e9, "solve": 5e9,
}
"""``m·n·min(m, n)`` (per matrix of a batch) per second of QR (``linalg_qr``, ``geqrf``,
``orgqr``, ``linalg_householder_product``), SVD, ``eigh``, Cholesky, and ``n·n·k`` of triangular solves."""


# --------------------------------------------------------------------------- per-instruction costs
Cost = tuple[float, float, float, float]
"""(reference seconds, floating-point operations, bytes touched, elements of portable draws) of
one instruction; the seconds exclude portable draws, whose rate depends on where they run."""

RNG_COST: Cost = (INSTRUCTION_SECONDS, 0.0, 0.0, 0.0)
VIEW_COST: Cost = (INSTRUCTION_SECONDS, 0.0, 0.0, 0.0)


def literal_cost(nbytes: int) -> Cost:
    """A LITERAL: its bytes copied into a new tensor."""
    return (INSTRUCTION_SECONDS + nbytes / MEMORY_BYTES_PER_SECOND, 0.0, float(nbytes), 0.0)


def _numel(t: torch.Tensor) -> int:
    return t.numel()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _memory(tensors: list[torch.Tensor], fresh: list[torch.Tensor]) -> tuple[float, float, int]:
    """(seconds, bytes, elements) of reading and writing every element of ``tensors`` and ``fresh``."""
    nbytes = sum(_nbytes(t) for t in tensors) + sum(_nbytes(t) for t in fresh)
    elements = max((_numel(t) for t in tensors + fresh), default=0)
    return max(nbytes / MEMORY_BYTES_PER_SECOND, elements / ELEMENTS_PER_SECOND), float(nbytes), elements


def _matrix_dims(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, rows, columns) of a (batched) matrix."""
    shape = tuple(t.shape)
    if len(shape) < 2:
        return 1, shape[0] if shape else 1, 1
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _flop_rate(dtype: torch.dtype) -> float:
    return MATMUL_FLOPS_PER_SECOND.get(dtype, INTEGER_MATMUL_FLOPS_PER_SECOND)


def _complex_factor(dtype: torch.dtype) -> int:
    return 4 if dtype.is_complex else 1


def _matmul_flops(packet: str, tensors: list[torch.Tensor], outs: list[torch.Tensor]) -> float:
    """Floating-point operations of a product: 2 per multiply-add of every output element."""
    if not outs:
        return 0.0
    out = max(outs, key=_numel)
    if packet in ("dot", "vdot"):
        return 2.0 * max((_numel(t) for t in tensors), default=0)
    if packet == "outer":
        return float(_numel(out))
    if packet in ("mv", "addmv"):
        mats = [t for t in tensors if t.dim() == 2]
        return 2.0 * max((_numel(m) for m in mats), default=0)
    # mm, addmm, bmm, matmul: the contracted length is the last dimension of the left operand.
    operands = [t for t in tensors if t.dim() >= 1 and t is not out]
    if packet == "addmm" and len(operands) >= 3:
        left = operands[1]
    else:
        left = operands[0] if operands else out
    k = left.shape[-1] if left.dim() else 1
    return 2.0 * _numel(out) * k


def _einsum_flops(equation: object, tensors: list[torch.Tensor], outs: list[torch.Tensor]) -> float:
    """2 × the product of the sizes of every index letter (each letter's largest size)."""
    fallback = 2.0 * max((_numel(t) for t in outs), default=0) * max((_numel(t) for t in tensors), default=1)
    if not isinstance(equation, str):
        return fallback
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != len(tensors):
        return fallback
    sizes: dict[str, int] = {}
    for spec, t in zip(inputs, tensors):
        shape = list(t.shape)
        head, dots, tail = spec.partition("...")
        if dots:
            middle = len(shape) - len(head) - len(tail)
            if middle < 0:
                return fallback
            letters = list(head) + [f"...{middle - j}" for j in range(middle)] + list(tail)
        else:
            letters = list(spec)
        if len(letters) != len(shape):
            return fallback
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return 2.0 * math.prod(sizes.values())


def _linalg(kind: str, tensors: list[torch.Tensor], outs: list[torch.Tensor], portable: bool) -> float:
    """Seconds of a decomposition or triangular solve of every matrix of a batch."""
    if not tensors:
        return 0.0
    a = tensors[0]
    batch, m, n = _matrix_dims(a)
    if kind == "solve" and len(tensors) > 1:
        # triangular_solve(B, A) / solve_triangular(A, B): n·n·k with A n×n and B n×k.
        sq = max(tensors[:2], key=lambda t: t.shape[-2] * t.shape[-1] if t.dim() >= 2 and t.shape[-1] == t.shape[-2] else -1)
        rhs = tensors[1] if sq is tensors[0] else tensors[0]
        batch_b, rows, cols = _matrix_dims(rhs)
        amount = max(batch, batch_b) * float(sq.shape[-1]) ** 2 * cols
    else:
        amount = batch * float(m) * n * min(m, n)
    rate = FIXED_QR_PER_SECOND if portable and kind == "qr" else LINALG_PER_SECOND[kind]
    return amount * _complex_factor(a.dtype) / rate


def _sorted_rows(t: torch.Tensor, dim: object) -> float:
    """``n·log2(n)`` summed over the rows sorted along ``dim`` (the last one by default)."""
    numel = _numel(t)
    if numel == 0:
        return 0.0
    if t.dim() == 0:
        return 1.0
    d = dim if type(dim) is int and -t.dim() <= dim < t.dim() else -1
    length = t.shape[d]
    return numel * max(1.0, math.log2(max(length, 2)))


LINALG_FAMILIES = {  # the LINALG_PER_SECOND rate of each linear-algebra cost family
    CostFamily.QR: "qr", CostFamily.SVD: "svd", CostFamily.EIGH: "eigh", CostFamily.CHOLESKY: "cholesky",
    CostFamily.SOLVE: "solve",
}
_PACKETS: dict[str, str] = {}  # operator name -> packet, cached
_VIEWS: dict[str, bool] = {}  # operator name -> whether it only makes views


def _random_rate(packet: str, dtype: torch.dtype) -> float:
    name = packet.rstrip("_")
    for suffix in ("_like",):
        name = name.removesuffix(suffix)
    if dtype == torch.float64 and name in RANDOM_FLOAT64_PER_SECOND:
        return RANDOM_FLOAT64_PER_SECOND[name]
    return RANDOM_PER_SECOND.get(name, min(RANDOM_PER_SECOND.values()))


def call_cost(info: OpInfo, args: list[Any], kwargs: dict[str, Any], outs: list[Any], *, portable_draw: bool,
              substituted: bool) -> Cost:
    """The cost of one CALL from its meta arguments and outputs (``portable_draw``: a keyed draw of
    an ``rng="portable"`` recipe; ``substituted``: an operator with initrecipe's own portable meaning)."""
    packet = _PACKETS.get(info.name)
    if packet is None:
        packet = _PACKETS[info.name] = info.name.split(".")[1]
        _VIEWS[info.name] = (not info.written_args and bool(info.aliased_outputs)
                             and all(a is not None for a in info.aliased_outputs))
    family = COST_FAMILIES.get(packet)
    if _VIEWS[info.name] or family is CostFamily.NO_DATA:
        # A view or an uninitialized allocation: no data, but every returned tensor is an object to build.
        return VIEW_COST if len(outs) <= 1 else (INSTRUCTION_SECONDS * len(outs), 0.0, 0.0, 0.0)
    tensors = iter_leaves((args, kwargs), torch.Tensor)
    aliased = info.aliased_outputs or ()
    fresh = [o for k, o in enumerate(outs) if isinstance(o, torch.Tensor)
             and (k >= len(aliased) or aliased[k] is None)]
    base = INSTRUCTION_SECONDS * max(1, len(outs))
    seconds, nbytes, elements = _memory(tensors, fresh)
    flops = 0.0
    if info.is_random:
        target = (tensors[0] if info.overwrites_self and tensors else max(fresh, key=_numel) if fresh
                  else max(tensors, key=_numel) if tensors else None)
        if portable_draw:
            return (base + seconds, 0.0, nbytes, float(_numel(target) if target is not None else 0))
        seconds += _draw_seconds(packet, target, tensors)
    elif family is CostFamily.MATMUL:
        dtype = max(tensors + fresh, key=_numel).dtype if tensors or fresh else torch.float32
        flops = _matmul_flops(packet, tensors, fresh or tensors[:1]) * _complex_factor(dtype)
        seconds += flops / _flop_rate(dtype)
    elif family is CostFamily.EINSUM:
        dtype = tensors[0].dtype if tensors else torch.float32
        flops = _einsum_flops(args[0] if args else kwargs.get("equation"), tensors, fresh) * _complex_factor(dtype)
        seconds += flops / _flop_rate(dtype)
    elif family in LINALG_FAMILIES:
        seconds += _linalg(LINALG_FAMILIES[family], tensors, fresh, substituted)
    elif family is CostFamily.SORTING:
        seconds += _sort_seconds(packet, args, kwargs, tensors)
    elif family is CostFamily.SEARCHING:
        seconds += _search_seconds(packet, tensors)
    elif family is CostFamily.SCAN:
        seconds += max((_numel(t) for t in tensors + fresh), default=0) / SCAN_PER_SECOND
    elif family is CostFamily.INDEXING:
        indexed = sum(_numel(t) for t in tensors if not t.dtype.is_floating_point) + sum(_numel(t) for t in fresh)
        seconds += max(indexed, elements) / INDEXING_PER_SECOND
    elif family is CostFamily.TRANSCENDENTAL:
        seconds += _transcendental_seconds(packet, tensors + fresh, elements, substituted)
    return (base + seconds, flops, nbytes, 0.0)


def _draw_seconds(packet: str, target: torch.Tensor | None, tensors: list[torch.Tensor]) -> float:
    """Seconds of a random draw with a torch generator into ``target`` (its largest tensor)."""
    count = _numel(target) if target is not None else 0
    if packet == "randperm":
        return count / RANDPERM_PER_SECOND
    if packet == "multinomial":
        categories = tensors[0].shape[-1] if tensors and tensors[0].dim() else 1
        amount = (sum(_numel(t) for t in tensors) + count) * max(1.0, math.log2(max(categories, 2)))
        return amount / MULTINOMIAL_PER_SECOND
    return count / _random_rate(packet, target.dtype if target is not None else torch.float32)


def _sort_seconds(packet: str, args: list[Any], kwargs: dict[str, Any], tensors: list[torch.Tensor]) -> float:
    """Seconds of sorting the rows of the first tensor along the call's ``dim`` argument."""
    dim = args[2] if packet in ("topk", "kthvalue") and len(args) > 2 else args[1] if len(args) > 1 else kwargs.get("dim")
    return _sorted_rows(tensors[0], dim if packet != "_unique2" else None) / SORT_PER_SECOND if tensors else 0.0


def _search_seconds(packet: str, tensors: list[torch.Tensor]) -> float:
    """Seconds of a binary search of every value in its sorted boundaries."""
    boundaries = tensors[0] if packet == "searchsorted" else tensors[-1] if tensors else None
    values = tensors[-1] if packet == "searchsorted" and len(tensors) > 1 else tensors[0] if tensors else None
    if boundaries is None or values is None:
        return 0.0
    return _numel(values) * max(1.0, math.log2(max(boundaries.shape[-1] if boundaries.dim() else 1, 2))) / SORT_PER_SECOND


def _transcendental_seconds(packet: str, tensors: list[torch.Tensor], elements: int, substituted: bool) -> float:
    """Seconds of a transcendental function of ``elements`` elements (``erfinv`` of 16-bit floats is slower)."""
    if substituted:
        return elements / PORTABLE_KERNEL_PER_SECOND
    half = any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors)
    rate = HALF_ERFINV_PER_SECOND if half and packet.startswith("erfinv") else TRANSCENDENTAL_PER_SECOND
    return elements / rate


def portable_rate(device: torch.device) -> float:
    """Elements per second of portable draws on ``device``."""
    if device.type != "cpu":
        return PORTABLE_KERNEL_PER_SECOND
    return PORTABLE_KERNEL_PER_SECOND if KERNEL_AVAILABLE else PORTABLE_TORCH_OPS_PER_SECOND


def cost_seconds(cost: Cost, rate: float) -> float:
    """The reference seconds of one instruction's cost, its portable draws at ``rate``."""
    return cost[0] + cost[3] / rate if cost[3] else cost[0]


# --------------------------------------------------------------------------- estimates and budgets
def format_seconds(seconds: float) -> str:
    """``0.42 s``, ``3.5 min``, ``2.1 h`` style durations for messages."""
    if not math.isfinite(seconds):
        return "unlimited" if seconds > 0 else str(seconds)
    if seconds < 0.001:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.3g} days"
    return f"{seconds / (365 * 86400):.3g} years"


@dataclass(frozen=True)
class WorkEstimate:
    """The estimated work of one replay, and the budget it was held to.

    Attributes:
        seconds: reference seconds of everything the replay would do (checking included).
        flops: floating-point operations of its matrix products.
        bytes: bytes its operators read and write.
        instructions: instructions it would execute (of ``checked``, which it analyses).
        costliest: ``(instruction index, reference seconds)`` of the single costliest instruction.
        output_elements: elements of the tensors it returns (once per storage), which grow the
            default budget.
        budget: the reference seconds it may take.
        explicit: whether ``budget`` is a ``max_work`` the caller gave.
    """

    seconds: float
    flops: float
    bytes: float
    instructions: int
    checked: int
    costliest: tuple[int, float]
    output_elements: int
    budget: float
    explicit: bool

    def describe(self) -> str:
        """One line for ``initrecipe check``: the estimate against the budget."""
        return (f"replay estimated at {format_seconds(self.seconds)} of work ({_amounts(self)}), "
                f"budget {format_seconds(self.budget)}")

    def as_dict(self) -> dict[str, float | int]:
        """The estimate as JSON-friendly numbers."""
        return {"seconds": self.seconds, "flops": self.flops, "bytes": self.bytes,
                "instructions": self.instructions, "checked_instructions": self.checked,
                "output_elements": self.output_elements, "budget_seconds": self.budget}


def _amounts(estimate: WorkEstimate) -> str:
    parts = [f"it runs {estimate.instructions} of its {estimate.checked} instructions"]
    if estimate.flops:
        parts.append(f"{estimate.flops:.3g} FLOP")
    if estimate.bytes:
        parts.append(f"{format_bytes(int(estimate.bytes))} of memory traffic")
    return "; ".join(parts)


def work_budget(max_work: float | None, output_elements: int) -> tuple[float, bool]:
    """``(budget in reference seconds, whether it is explicit)`` for a replay returning
    ``output_elements`` elements; ``max_work`` (reference seconds) replaces the default."""
    if max_work is None:
        return DEFAULT_MAX_WORK + OUTPUT_WORK_PER_ELEMENT * output_elements, False
    if isinstance(max_work, bool) or not isinstance(max_work, (int, float)) or not max_work >= 0:
        raise TypeError(f"max_work must be a non-negative number of seconds (math.inf for no limit), not {max_work!r}")
    return float(max_work), True


def _budget_text(estimate: WorkEstimate) -> str:
    if estimate.explicit:
        return f"the limit of {format_seconds(estimate.budget)} (max_work={estimate.budget:g})"
    allowance = estimate.budget - DEFAULT_MAX_WORK
    n = estimate.output_elements
    return (f"the default budget of {format_seconds(estimate.budget)} ({format_seconds(DEFAULT_MAX_WORK)}, plus "
            f"{format_seconds(allowance)} for the {n} element{'s' if n != 1 else ''} it returns)")


def refuse(estimate: WorkEstimate, program: list[Instruction], what: str = "replaying this recipe") -> WorkLimitError:
    """The error for an estimate over its budget, naming the costliest instruction."""
    index, seconds = estimate.costliest
    where = ""
    if 0 <= index < len(program):
        ins = program[index]
        name = f"`{ins.op}`" if isinstance(ins, Call) else "a LITERAL or RNG instruction"
        where = f"; the costliest instruction is program[{index}], {name} ({format_seconds(seconds)})"
    err = WorkLimitError(
        f"{what} is estimated at {format_seconds(estimate.seconds)} of work on the reference CPU "
        f"({_amounts(estimate)}), more than {_budget_text(estimate)}{where}. Pass a larger `max_work` "
        "(seconds; CLI: --max-work) to replay it anyway"
    )
    err.estimate = estimate
    return err


def estimate(program: list[Instruction], costs: list[Cost], executed: Iterable[int], output_elements: int,
             max_work: float | None, device: torch.device, *, extra: float = 0.0) -> WorkEstimate:
    """Add up the costs of the instructions ``executed`` (indices into ``program``), every
    instruction's check, and ``extra`` reference seconds, against the budget for a replay returning
    ``output_elements`` elements on ``device``."""
    rate = portable_rate(device)
    total = len(program) * CHECK_SECONDS + extra
    flops = nbytes = 0.0
    count = 0
    costliest = (-1, 0.0)
    for i in executed:
        cost = costs[i]
        seconds = cost_seconds(cost, rate)
        total += seconds
        flops += cost[1]
        nbytes += cost[2]
        count += 1
        if seconds > costliest[1]:
            costliest = (i, seconds)
    budget, explicit = work_budget(max_work, output_elements)
    return WorkEstimate(total, flops, nbytes, count, len(program), costliest, output_elements, budget, explicit)

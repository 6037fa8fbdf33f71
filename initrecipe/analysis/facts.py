"""Static facts about a program (every value's shape, dtype and storage) and execution plans.

The interpreter executes a program according to a *plan*: one :class:`Action` per instruction.
Planning is a backward liveness pass over storages: an instruction runs only when a later
instruction, or a requested output, reads what it writes.  Random draws whose results are dead
still run on scratch memory in ``torch`` mode, because they advance the generator that later live
draws read; dead portable draws (keyed streams, ``rng="portable"``) are skipped.
"""

from __future__ import annotations

import contextlib
import enum
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from initrecipe.errors import MemoryLimitError, RecipeError, RecipeFormatError, ResourceLimitError
from initrecipe.program.operators import (POINTWISE_OPERATORS, PRECONDITIONS, RANDOM_OPERATORS, SUBSTITUTED_OPERATORS,
                                          OpInfo, Precondition, op_info)
from initrecipe.rng.portable.semantics import check_draw, check_substitute, draws_from_generator, portable_key_of
from initrecipe.program.generators import generator_of
from initrecipe.support.display import format_bytes
from initrecipe.program.ir import Call, GenRef, Instruction, Literal, PortableKey, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.walk import arg_at, iter_leaves, map_arg
from initrecipe.analysis.cost import RNG_COST, Cost, call_cost, literal_cost

__all__ = ["TensorMeta", "ProgramFacts", "Action", "infer_facts", "plan_execution", "is_rng_instruction"]


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Metadata of one tensor value: which storage it views, and how."""

    storage: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def covers(self, storage_nbytes: int) -> bool:
        """Whether writing every element of this view writes every byte of its storage."""
        return self.numel * self.dtype.itemsize == storage_nbytes and _non_overlapping_dense(
            self.shape, self.stride
        )

    def scratch(self) -> torch.Tensor:
        """An uninitialized CPU tensor with this shape, stride and dtype."""
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype)


def _non_overlapping_dense(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    dims = sorted((st, sz) for sz, st in zip(shape, stride) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


class Action(enum.IntEnum):
    """What the interpreter does with one instruction."""

    SKIP = 0  # not needed
    RUN = 1  # execute for real
    ALLOC = 2  # outputs needed as tensors, contents dead: allocate uninitialized storage
    ADVANCE = 3  # dead random draw: run on scratch memory only to advance the generator


def is_rng_instruction(ins: Instruction) -> bool:
    return isinstance(ins, (RngSeed, RngSetState, RngRestore))


class ProgramFacts:
    """Per-instruction operator info and per-value metadata of a program."""

    def __init__(self) -> None:
        self.infos: list[OpInfo | None] = []
        self.values: dict[int, TensorMeta] = {}
        self.storage_nbytes: dict[int, int] = {}
        self.storage_creator: dict[int, int] = {}  # storage id -> index of the instruction creating it
        self.value_def: dict[int, int] = {}  # value id -> index of the instruction defining it
        self.storage_grown: dict[int, int] = {}  # storage id -> bytes after a resize_ or out= call grew it
        self.costs: list[Cost] = []  # per instruction: what executing it costs (initrecipe.analysis.cost), from infer_facts

    def define(self, index: int, value: int, meta: TensorMeta, storage_nbytes: int | None) -> None:
        """Record that instruction ``index`` binds ``value`` (a new storage when ``storage_nbytes`` is given)."""
        if value in self.values:
            raise RecipeFormatError(f"program[{index}]: value {value} is defined twice")
        self.values[value] = meta
        self.value_def[value] = index
        if storage_nbytes is not None:
            self.storage_nbytes[meta.storage] = storage_nbytes
            self.storage_creator[meta.storage] = index

    def storage(self, value: int) -> int:
        return self.values[value].storage

    def written_storages(self, index: int, ins: Call) -> list[tuple[int, int]]:
        """``(arg position, storage)`` for each argument instruction ``index`` writes to."""
        info = self.infos[index]
        out = []
        for pos in info.written_args:
            ref = arg_at(ins, info.arg_names, pos)
            if isinstance(ref, Ref):
                out.append((pos, self.values[ref.id].storage))
        return out

    @property
    def total_storage_bytes(self) -> int:
        """Bytes of every storage the program creates (at its largest): what a full replay allocates at most."""
        return sum(max(n, self.storage_grown.get(s, 0)) for s, n in self.storage_nbytes.items())


def call_refs(ins: Call) -> list[int]:
    """Value ids a call reads or writes, in argument order."""
    return [ref.id for ref in iter_leaves((ins.args, ins.kwargs), Ref)]


# --------------------------------------------------------------------------- meta inference
_META = torch.device("meta")


def _to_meta_arg(value: Any, env: dict[int, torch.Tensor], where: Any) -> Any:
    """``where``: the location for messages, or a callable returning it (built only on error)."""

    def to_meta(leaf: Ref | GenRef | PortableKey | torch.device) -> torch.Tensor | torch.device | None:
        if isinstance(leaf, torch.device):
            return _META
        if not isinstance(leaf, Ref):
            return None  # a generator: the meta run draws nothing
        try:
            return env[leaf.id]
        except KeyError:
            location = where() if callable(where) else where
            raise RecipeFormatError(f"{location}: reference to undefined tensor {leaf.id}") from None

    return map_arg(value, (Ref, GenRef, PortableKey, torch.device), to_meta)


@contextlib.contextmanager
def recipe_defaults() -> Iterator[None]:
    """torch's default dtype as a recipe's operators mean it: ``float32`` (an operator with no
    ``dtype`` argument, such as ``empty``, makes ``float32`` tensors whatever default the replaying
    process has set, e.g. after recording a constructor that left ``torch.set_default_dtype``)."""
    dtype = torch.get_default_dtype()
    if dtype is torch.float32:
        yield
        return
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


@recipe_defaults()
def infer_facts(
    program: list[Instruction],
    generators: int,
    *,
    max_bytes: int | None = None,
    names: dict[int, str] | None = None,
    rng: str = "torch",
) -> ProgramFacts:
    """Shape-propagate ``program`` on the meta device, checking every reference and argument.

    Nothing real is allocated: every tensor lives on the meta device (a factory call's ``device``
    argument is forced to meta), so a program that promises petabytes is checked in microseconds.

    Args:
        max_bytes: when given, raise :class:`ResourceLimitError` at the first instruction after which
            the storages the program creates add up to more than this many bytes (before any of them
            exists for real).
        names: value id -> tensor name, to name the tensor responsible in that error.
        rng: the recipe's RNG mode; only ``portable`` programs may hold portable stream keys.

    Raises:
        RecipeFormatError: naming the first instruction that is inconsistent.
        ResourceLimitError: the program needs more than ``max_bytes``.

    The facts include each instruction's cost (``facts.costs``, see :mod:`initrecipe.analysis.cost`), from
    which a replay estimates its work before it runs.
    """
    facts = ProgramFacts()
    env: dict[int, torch.Tensor] = {}
    storages: dict[int, int] = {}  # StorageImpl address -> storage id (env keeps every storage alive)
    rng_indices: dict[int, set[int]] = {}
    budget = _Budget(program, facts, max_bytes, names)
    for i, ins in enumerate(program):
        try:
            if isinstance(ins, Call):
                _infer_call(facts, storages, env, rng_indices, budget, generators, i, ins, rng == "portable")
            elif isinstance(ins, Literal):
                facts.infos.append(None)
                tensor = torch.empty(ins.shape, dtype=ins.dtype, device=_META)
                if tensor.numel() * tensor.dtype.itemsize != len(ins.data):
                    raise RecipeFormatError(
                        f"program[{i}].data: {len(ins.data)} bytes for shape {list(ins.shape)} of {ins.dtype}"
                    )
                _bind(facts, storages, env, i, ins.out, tensor)
                budget.created(i, ins.out, tensor.untyped_storage().nbytes(), "a literal")
                facts.costs.append(literal_cost(len(ins.data)))
            elif isinstance(ins, (RngSeed, RngSetState, RngRestore)):
                facts.infos.append(None)
                facts.costs.append(RNG_COST)
                if not 0 <= ins.gen < generators:
                    raise RecipeFormatError(
                        f"program[{i}]: generator {ins.gen} is not declared (the recipe declares {generators})"
                    )
                if isinstance(ins, RngRestore):
                    if ins.after not in rng_indices.get(ins.gen, ()):
                        raise RecipeFormatError(
                            f"program[{i}].after: instruction {ins.after} does not position generator {ins.gen}"
                        )
                rng_indices.setdefault(ins.gen, set()).add(i)
            else:
                raise RecipeFormatError(f"program[{i}]: not an instruction ({type(ins).__name__})")
        except RecipeError:
            raise
        except Exception as exc:  # anything torch or a malformed argument raises: name the instruction
            op = f"`{ins.op}` " if isinstance(ins, Call) else ""
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RecipeFormatError(f"program[{i}]: {op}cannot be checked: {detail}") from None
    return facts


_MAX_SIZE = 2**63 - 1


class _Budget:
    """Adds up the bytes of the storages a program creates, and stops at ``max_bytes``.  (The work
    a replay may do is bounded after planning, from the costs in ``facts.costs``: see
    :mod:`initrecipe.analysis.cost`.)"""

    __slots__ = ("program", "facts", "max_bytes", "names", "total")

    def __init__(self, program: list[Instruction], facts: ProgramFacts, max_bytes: int | None,
                 names: dict[int, str] | None) -> None:
        self.program = program
        self.facts = facts
        self.max_bytes = max_bytes
        self.names = names or {}
        self.total = 0

    def precheck(self, index: int, ins: Call, info: OpInfo, base: Any = None) -> None:
        """Refuse a factory call whose requested size alone is over the limit, before running it on meta."""
        if self.max_bytes is None or any(a is not None for a in info.aliased_outputs):
            return
        if "size" not in info.arg_names:
            return
        size = arg_at(ins, info.arg_names, info.arg_names.index("size"))
        if not isinstance(size, (list, tuple)) or not all(type(d) is int for d in size):
            return
        dtype = arg_at(ins, info.arg_names, info.arg_names.index("dtype")) if "dtype" in info.arg_names else None
        if not isinstance(dtype, torch.dtype) and info.arg_names[0] == "self" and isinstance(base, torch.Tensor):
            dtype = base.dtype  # new_empty and friends
        numel = math.prod(max(d, 0) for d in size)
        nbytes = numel * (dtype.itemsize if isinstance(dtype, torch.dtype) else 1)
        if self.total + nbytes > self.max_bytes:
            value = next((o for o in ins.outs if o is not None), None)
            amount = format_bytes(nbytes) if isinstance(dtype, torch.dtype) else f"at least {format_bytes(nbytes)}"
            raise self._error(index, ins, value, nbytes, self.total + nbytes,
                              f"asks for {numel} elements ({amount})")

    def created(self, index: int, value: int | None, nbytes: int, what: str | None = None) -> None:
        self.total += nbytes
        if self.max_bytes is not None and self.total > self.max_bytes:
            raise self._error(index, self.program[index], value, nbytes, self.total)

    def _error(self, index: int, ins: Instruction, value: int | None, nbytes: int, total: int,
               verb: str | None = None) -> ResourceLimitError:
        what = f"`{ins.op}`" if isinstance(ins, Call) else "a literal"
        owner = ""
        if value is not None:
            tensor_names = _names_of_storage(self.program, self.facts, index, value, self.names)
            if tensor_names:
                more = f" and {len(tensor_names) - 1} more" if len(tensor_names) > 1 else ""
                owner = f" for tensor `{tensor_names[0]}`{more}"
            else:
                owner = f" for intermediate value {value}"
        err = MemoryLimitError(
            f"program[{index}]: {what} {verb or 'would allocate ' + format_bytes(nbytes)}{owner}; replaying this recipe "
            f"needs at least {format_bytes(total)}, more than the limit of {format_bytes(self.max_bytes)}"
        )
        err.index = index  # type: ignore[attr-defined]
        err.needed = total  # type: ignore[attr-defined]
        err.limit = self.max_bytes  # type: ignore[attr-defined]
        return err


def _names_of_storage(
    program: list[Instruction], facts: ProgramFacts, index: int, value: int, names: dict[int, str]
) -> list[str]:
    """Names of the tensor entries that view the storage ``value`` was created with, found statically."""
    if not names:
        return []
    sid = facts.values[value].storage if value in facts.values else value
    aliases = {v for v, meta in facts.values.items() if meta.storage == sid}
    aliases.add(value)
    for ins in program[index + 1:]:
        if not isinstance(ins, Call):
            continue
        try:
            info = op_info(ins.op)
        except RecipeError:
            break
        for k, out in enumerate(ins.outs):
            if out is None or not info.aliased_outputs:
                continue
            pos = info.aliased_outputs[min(k, len(info.aliased_outputs) - 1)]
            if pos is None:
                continue
            if any(ref.id in aliases for ref in iter_leaves(arg_at(ins, info.arg_names, pos), Ref)):
                aliases.add(out)
    return sorted({names[v] for v in aliases if v in names})


def _force_meta_device(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Make a factory call allocate on meta even when the recipe names no device (CPU by default)."""
    if "device" in info.arg_names:
        pos = info.arg_names.index("device")
        if pos < len(args):
            args[pos] = _META
        else:
            kwargs["device"] = _META


def repeat_interleave_output_size(ins: Call, info: OpInfo) -> int | None:
    """For ``repeat_interleave`` with a recorded output shape, the ``output_size`` that bounds its output.

    Without it the operator allocates as much as the sum of its (data) repeats says; with it, torch
    checks the sum against the recorded size before allocating.
    """
    if ins.out_meta is None or "output_size" not in info.arg_names or not ins.out_meta:
        return None
    if arg_at(ins, info.arg_names, info.arg_names.index("output_size")) is not None:
        return None
    shape = ins.out_meta[0][1]
    if not shape:
        return None
    dim = None
    if "dim" in info.arg_names:
        dim = arg_at(ins, info.arg_names, info.arg_names.index("dim"))
    if dim is None:
        return shape[0] if len(shape) == 1 else None
    if type(dim) is not int or not -len(shape) <= dim < len(shape):
        return None
    return shape[dim]


_TENSOR_RETURNS = frozenset({"Tensor", "List[Tensor]", "Optional[Tensor]"})
_ENUM_ARGS: dict[str, tuple[type, ...]] = {
    "ScalarType": (torch.dtype,),
    "Layout": (torch.layout,),
    "MemoryFormat": (torch.memory_format,),
    "Device": (torch.device,),
    "Generator": (GenRef, PortableKey),
}
_UNSAFE_ARG_TYPES = ("t", "List[t]", "AnyEnumType", "Dict[")
_ENUM_KINDS = frozenset(k for name in _ENUM_ARGS for k in (name, f"Optional[{name}]"))
_ENUM_VALUES = (torch.dtype, torch.layout, torch.memory_format, torch.device, GenRef, PortableKey)


_SIGNATURES: dict[str, tuple[str | None, tuple[tuple[str, str], ...]]] = {}
_PACKETS: dict[str, str] = {}


def _packet(op: str) -> str:
    """The operator name of an ``aten.<name>.<overload>`` string (cached)."""
    packet = _PACKETS.get(op)
    if packet is None:
        packet = _PACKETS[op] = op.split(".")[1]
    return packet


def _signature(info: OpInfo) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(why the overload cannot be called, or None; (name, type) of each argument), computed once."""
    cached = _SIGNATURES.get(info.name)
    if cached is None:
        schema = info.schema
        problem = None
        if not schema.returns or any(str(r.real_type) not in _TENSOR_RETURNS for r in schema.returns):
            problem = "does not return tensors; recipes call only tensor operators"
        elif "Dimname" in str(schema) or any(
            str(a.real_type).startswith(_UNSAFE_ARG_TYPES) for a in schema.arguments
        ):
            problem = "is an overload recipes cannot call"
        cached = _SIGNATURES[info.name] = (problem, tuple((a.name, str(a.real_type)) for a in schema.arguments))
    return cached


_CALL_SHAPES: dict[str, tuple[int, dict[str, str]]] = {}


def _check_call_types(i: int, ins: Call, info: OpInfo) -> None:
    """Refuse overloads that are not tensor operators, and arguments of the wrong kind where torch
    would take them on trust (an integer where an enum is expected reaches C++ unchecked)."""
    problem, arguments = _signature(info)
    if problem is not None:
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` {problem}")
    if len(ins.args) > len(arguments):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` takes at most {len(arguments)} arguments, the recipe passes {len(ins.args)}"
        )
    shape = _CALL_SHAPES.get(info.name)
    if shape is None:
        shape = _CALL_SHAPES[info.name] = (sum(1 for a in info.schema.arguments if not a.kwarg_only), dict(arguments))
    positional, by_name = shape
    if len(ins.args) > positional:
        name = arguments[positional][0]
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` takes {positional} positional arguments, the recipe passes "
            f"{len(ins.args)}; `{name}` is keyword-only and belongs in kwargs"
        )
    for name in ins.kwargs:
        if name not in by_name:
            raise RecipeFormatError(f"program[{i}].kwargs.{name}: `{ins.op}` has no argument `{name}`")
    for pos, value in enumerate(ins.args):
        arg_name, kind = arguments[pos]
        _check_argument_kind(i, ins, pos, arg_name, kind, value)
    for name, value in ins.kwargs.items():
        _check_argument_kind(i, ins, name, name, by_name[name], value)


def _check_argument_kind(i: int, ins: Call, where: int | str, arg_name: str, kind: str, value: Any) -> None:
    if kind not in _ENUM_KINDS:
        if isinstance(value, _ENUM_VALUES):
            raise RecipeFormatError(
                f"program[{i}].{_where(where)}: `{ins.op}` expects a {kind} for `{arg_name}`, found "
                f"{type(value).__name__}"
            )
        return
    optional = kind.startswith("Optional[")
    if value is None and optional:
        return
    base = kind[len("Optional["):-1] if optional else kind
    if not isinstance(value, _ENUM_ARGS[base]):
        raise RecipeFormatError(
            f"program[{i}].{_where(where)}: `{ins.op}` expects a {base} for `{arg_name}`, found "
            f"{type(value).__name__} {value!r:.40}"
        )


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


def _exact_integer_bounds(dtype: torch.dtype, bounds: list[Any]) -> str | None:
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


def random_bounds_problem(info: OpInfo, args: Any, kwargs: dict[str, Any]) -> str | None:
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


def _probe_value(value: Any) -> Any:
    """A meta argument as a tiny CPU stand-in: a tensor of ones with one element (none if it is
    empty; ones are valid probabilities, rates and scales), the CPU device."""
    if isinstance(value, torch.Tensor):
        return torch.ones(tuple(min(d, 1) for d in value.shape), dtype=value.dtype)
    if isinstance(value, torch.device):
        return torch.device("cpu")
    return value


def _random_call_problem(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> str | None:
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
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
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


def _list_output_count(packet: str, info: OpInfo, ins: Call, args: list[Any], kwargs: dict[str, Any]) -> int | None:
    """How many tensors a list-returning view operator returns, computed without running it (a
    zero-byte tensor of shape [2**40, 0] unbinds into 2**40 tensors, even on meta)."""
    if packet not in ("unbind", "unbind_copy", "chunk", "split", "split_copy"):
        return None

    def get(name: str, default: Any) -> Any:
        if name not in info.arg_names:
            return default
        pos = info.arg_names.index(name)
        return args[pos] if pos < len(args) else kwargs.get(name, default)

    base, dim = get("self", None), get("dim", 0)
    if not isinstance(base, torch.Tensor) or type(dim) is not int or not -base.dim() <= dim < max(base.dim(), 1):
        return None
    n = base.shape[dim] if base.dim() else 1
    if packet in ("unbind", "unbind_copy"):
        return n
    if packet == "chunk":
        chunks = get("chunks", None)
        if type(chunks) is not int or chunks <= 0:
            return None
        if n == 0:
            return chunks
        step = -(-n // chunks)
        return -(-n // step)
    size = get("split_size", None)
    if type(size) is not int or size <= 0:
        return None
    return -(-n // size) if n else 1


def _where(key: int | str) -> str:
    return f"args[{key}]" if isinstance(key, int) else f"kwargs.{key}"


def _strided_extent(shape: Any, stride: Any, offset: int) -> int | None:
    """Elements of storage a strided view needs (0 for an empty view); None when not computable."""
    if not isinstance(shape, (list, tuple)) or not isinstance(stride, (list, tuple)) or len(shape) != len(stride):
        return None
    if not all(type(v) is int for v in list(shape) + list(stride)) or type(offset) is not int:
        return None
    if any(s == 0 for s in shape):
        return 0
    return offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1


def _infer_call(
    facts: ProgramFacts,
    storages: dict[int, int],
    env: dict[int, torch.Tensor],
    rng_indices: dict[int, set[int]],
    budget: _Budget,
    generators: int,
    i: int,
    ins: Call,
    portable: bool,
) -> None:
    try:
        info = op_info(ins.op)
    except RecipeFormatError as exc:
        raise RecipeFormatError(f"program[{i}]: {exc}") from None
    facts.infos.append(info)
    _check_call_types(i, ins, info)
    _check_generators(ins, generators, f"program[{i}]")
    if not info.is_random and _packet(ins.op) in RANDOM_OPERATORS:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` draws from the process-wide generator; recipes use the overload "
            "that takes a `generator` argument"
        )
    key = portable_key_of(ins, info)
    if key is not None and not portable:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` draws from a portable stream, but the recipe's rng mode is `torch`"
        )
    if info.is_random and key is None:
        if not isinstance(arg_at(ins, info.arg_names, info.arg_names.index(info.generator_arg)), GenRef):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` is a random operator and needs its `{info.generator_arg}` argument "
                "(a {\"g\": id} value naming the generator it draws from)"
            )
        gen = generator_of(ins, info)
        if not 0 <= gen < generators:
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` draws from generator {gen}, which is not declared "
                f"(the recipe declares {generators})"
            )
    args = [_to_meta_arg(a, env, lambda: f"program[{i}].args") for a in ins.args]
    kwargs = {k: _to_meta_arg(v, env, lambda k=k: f"program[{i}].kwargs.{k}") for k, v in ins.kwargs.items()}
    _force_meta_device(info, args, kwargs)
    budget.precheck(i, ins, info, args[0] if args else None)
    if info.data_dependent_shape and ins.out_meta is None:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` has a data-dependent output shape and needs `out_meta`"
        )
    packet = _packet(ins.op)
    if packet.startswith("as_strided") and args and isinstance(args[0], torch.Tensor):
        _check_as_strided(i, ins, info, args, kwargs)
    count = _list_output_count(packet, info, ins, args, kwargs)
    if count is not None and count != len(ins.outs):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` returns {count} values, the program binds {len(ins.outs)}"
        )
    precondition = PRECONDITIONS.get(packet)
    if precondition is not None:
        problem = PRECONDITION_CHECKS[precondition](args, kwargs)
        if problem is not None:
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")
    outs: list[Any] | None = None
    if ins.out_meta is None and info.is_random and info.overwrites_self and args and isinstance(args[0], torch.Tensor):
        # An in-place random fill returns its argument unchanged in shape.  (Running it on meta
        # would go through torch._refs, whose first use imports torch._dynamo: ~0.8 s.)
        _check_scalar_arguments(i, ins, info, args, kwargs)
        outs = [args[0]]
        if key is not None:
            check_draw(f"program[{i}]", ins, info, args, kwargs, args[0].dtype)
    elif ins.out_meta is None and (arange := _arange_on_meta(i, ins, info, args, kwargs)) is not None:
        outs = [arange]
    elif ins.out_meta is None and info.name == "aten.geqrf.default":
        outs = _geqrf_on_meta(i, ins, args, kwargs)
    elif ins.out_meta is None and (pointwise := _pointwise_on_meta(info, args, kwargs)) is not None:
        outs = pointwise
    elif ins.out_meta is None:
        try:
            result = info.op(*args, **kwargs)
        except Exception as exc:  # the op rejected its arguments
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {detail}") from None
        outs = _flatten_outputs(result)
    else:
        if len(ins.out_meta) != len(ins.outs):
            raise RecipeFormatError(
                f"program[{i}]: `out_meta` has {len(ins.out_meta)} entries for {len(ins.outs)} outputs"
            )
        output_size = repeat_interleave_output_size(ins, info)
        if output_size is not None or not info.data_dependent_shape:
            # The shape is computable on meta (given the recorded size): check what the file says.
            call_kwargs = dict(kwargs, output_size=output_size) if output_size is not None else kwargs
            try:
                computed = _flatten_outputs(info.op(*args, **call_kwargs))
            except Exception:
                computed = None
            if computed is not None:
                tensors = [t for t in computed if isinstance(t, torch.Tensor)]
                for j, ((dtype, shape), t) in enumerate(zip(ins.out_meta, tensors)):
                    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                        raise RecipeFormatError(
                            f"program[{i}].out_meta[{j}]: records {list(shape)} {dtype}, but `{ins.op}` "
                            f"gives {list(t.shape)} {t.dtype}"
                        )
                outs = computed
        if outs is None:
            # Shapes that depend on data were recorded; replay checks them.
            outs = [torch.empty(shape, dtype=dtype, device=_META) for dtype, shape in ins.out_meta]
    if info.is_random and key is None:
        problem = _random_call_problem(info, args, kwargs)
        if problem is not None:
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")
    if len(outs) != len(ins.outs):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` returns {len(outs)} values, the program binds {len(ins.outs)}"
        )
    for value, out in zip(ins.outs, outs):
        if value is None:
            continue
        if not isinstance(out, torch.Tensor):
            raise RecipeFormatError(f"program[{i}]: output bound to tensor {value} is not a tensor")
        if out.device.type != "meta":  # pragma: no cover - every input and device is meta
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` produced a tensor outside the meta device")
        known = out.untyped_storage()._cdata in storages
        _bind(facts, storages, env, i, value, out)
        meta = facts.values[value]
        if known:
            _check_view_bounds(i, ins, value, out)
        else:
            budget.created(i, value, facts.storage_nbytes[meta.storage])
    # Storages that an in-place or out= call grew (resize_, out= arguments).
    for pos in info.written_args:
        ref = arg_at(ins, info.arg_names, pos)
        if isinstance(ref, Ref) and ref.id in env:
            sid = facts.values[ref.id].storage
            now = env[ref.id].untyped_storage().nbytes()
            before = max(facts.storage_nbytes.get(sid, 0), facts.storage_grown.get(sid, 0))
            if now > before:
                facts.storage_grown[sid] = now
                budget.created(i, ref.id, now - before)
    facts.costs.append(call_cost(info, args, kwargs, outs, portable_draw=key is not None,
                                 substituted=portable and ins.op in SUBSTITUTED_OPERATORS))
    if key is not None and not info.overwrites_self:
        out = outs[0] if outs else None
        if not isinstance(out, torch.Tensor):  # pragma: no cover - every portable factory returns a tensor
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` returns no tensor")
        check_draw(f"program[{i}]", ins, info, args, kwargs, out.dtype)
    if portable:
        problem = check_substitute(ins, args, kwargs)
        if problem is not None:
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")
    if info.is_random and key is None:
        gen = generator_of(ins, info)
        rng_indices.setdefault(gen, set()).add(i)


_ARANGE_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                            torch.int16, torch.int8, torch.uint8})


def _arange_on_meta(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta output of an ``arange`` with plain number arguments, computed without torch's meta
    kernel (its first use imports torch._dynamo: ~0.8 s); None for anything else."""
    if info.name not in ("aten.arange.default", "aten.arange.start", "aten.arange.start_step"):
        return None
    numbers = [a for a in args if not isinstance(a, torch.device)]
    if len(numbers) != len(args) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return None
    if set(kwargs) - {"dtype", "layout", "device", "pin_memory"} or kwargs.get("layout") not in (None, torch.strided):
        return None
    start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
    dtype = kwargs.get("dtype")
    if dtype is None:
        dtype = torch.int64 if all(isinstance(a, int) for a in args) else torch.get_default_dtype()
    if dtype not in _ARANGE_DTYPES or not all(math.isfinite(x) for x in (start, end, step)):
        return None  # let torch's meta kernel decide
    if not dtype.is_floating_point and not all(isinstance(a, int) for a in args):
        return None  # integer aranges of float bounds truncate them first
    if step == 0 or (step > 0 and end < start) or (step < 0 and end > start):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` rejects its arguments: upper bound and lower bound inconsistent with step sign"
        )
    if isinstance(start + end + step, float):
        span = (end - start) / step
        if not math.isfinite(span) or span > _MAX_SIZE:
            return None
        size = math.ceil(span)
    else:
        size = -((start - end) // step)
    if not 0 <= size <= _MAX_SIZE:
        return None
    return torch.empty(size, dtype=dtype, device=_META)


def _geqrf_on_meta(i: int, ins: Call, args: list[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """``geqrf``'s outputs, which torch has no meta kernel for: ``a`` as LAPACK leaves it (each
    matrix column-major, batches contiguous) and ``tau`` (one scalar per reflector)."""
    a = args[0] if args else kwargs.get("self")
    if len(args) + len(kwargs) != 1 or not isinstance(a, torch.Tensor):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` takes one tensor")
    if a.dim() < 2 or not (a.dtype.is_floating_point or a.dtype.is_complex) or a.dtype in (torch.float16, torch.bfloat16):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` rejects its arguments: it needs a float32/float64/complex tensor of 2 or "
            f"more dimensions, got {list(a.shape)} {a.dtype}"
        )
    *batch, m, n = a.shape
    matrix = m * n
    stride = [1, max(m, 1)]
    for size in reversed(batch):
        stride.insert(0, matrix)
        matrix *= size
    tau_shape = (*batch, min(m, n))
    return [torch.empty_strided(tuple(a.shape), tuple(stride[-len(a.shape):]), dtype=a.dtype, device=_META),
            torch.empty(tau_shape, dtype=a.dtype, device=_META)]


_POINTWISE_PACKETS = POINTWISE_OPERATORS - {"fill", "fill_", "zero", "zero_", "copy_"}


def _pointwise_on_meta(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
    """The meta outputs of a pointwise operator whose tensor arguments all have one contiguous
    shape (or none), computed without torch's Python meta kernels (their first use imports
    torch._dynamo: ~0.8 s).  The dtypes come from running the operator on one-element CPU
    probes of the same dtypes and dimensionality; None when the shortcut does not apply."""
    if info.name.split(".")[1] not in _POINTWISE_PACKETS or info.written_args not in ((), (0,)):
        return None
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if not tensors or any(isinstance(a, (list, tuple)) for a in list(args) + list(kwargs.values())):
        return None
    shapes = {tuple(t.shape) for t in tensors if t.dim()}
    if len(shapes) > 1 or not all(t.dim() == 0 or t.is_contiguous() for t in tensors):
        return None
    shape = shapes.pop() if shapes else ()

    def probe(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return torch.ones((1,) * value.dim(), dtype=value.dtype)
        if isinstance(value, torch.device):
            return torch.device("cpu")
        return value

    try:
        with torch.no_grad():
            result = info.op(*[probe(a) for a in args], **{k: probe(v) for k, v in kwargs.items()})
    except Exception:
        return None  # let the meta kernel give its own verdict
    outs = _flatten_outputs(result)
    if not all(isinstance(o, torch.Tensor) and o.dim() == len(shape) for o in outs):
        return None
    if info.written_args:
        if len(outs) != 1 or tuple(args[0].shape) != shape or outs[0].dtype != args[0].dtype:
            return None
        return [args[0]]
    return [torch.empty(shape, dtype=o.dtype, device=_META) for o in outs]


def _check_view_bounds(i: int, ins: Call, value: int, out: torch.Tensor) -> None:
    """A view must lie inside its storage: torch does not check every view operator on every device."""
    offset = out.storage_offset()
    dense_end = (offset + out.numel()) * out.dtype.itemsize
    if out.is_contiguous() and offset >= 0 and dense_end <= out.untyped_storage().nbytes():
        return  # the common case: a dense view inside its storage
    extent = _strided_extent(tuple(out.shape), tuple(out.stride()), out.storage_offset())
    if extent is None or extent == 0:
        return
    if out.storage_offset() < 0 or any(st < 0 for st in out.stride()):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` makes view {value} with a negative stride or offset")
    need = extent * out.dtype.itemsize
    have = out.untyped_storage().nbytes()
    if need > have:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` makes view {value} (shape {list(out.shape)}, stride {list(out.stride())}, "
            f"offset {out.storage_offset()}) reach byte {need} of a storage of {have} bytes: "
            "views must lie inside their base's storage"
        )


def _check_as_strided(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    base = args[0]
    names = info.arg_names
    values = {}
    for key in ("size", "stride", "storage_offset"):
        if key in names:
            pos = names.index(key)
            values[key] = args[pos] if pos < len(args) else kwargs.get(key)
    offset = values.get("storage_offset")
    if offset is None:
        offset = base.storage_offset()
    extent = _strided_extent(values.get("size"), values.get("stride"), offset)
    if extent is None or extent == 0:
        return
    have = base.untyped_storage().nbytes()
    if type(offset) is int and offset < 0 or any(type(st) is int and st < 0 for st in values.get("stride") or ()):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` asks for a negative stride or storage offset")
    if extent * base.dtype.itemsize > have:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` asks for a view (size {list(values.get('size'))}, stride "
            f"{list(values.get('stride'))}, offset {offset}) reaching byte {extent * base.dtype.itemsize} of a "
            f"storage of {have} bytes: views must lie inside their base's storage"
        )


def _check_scalar_arguments(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check the number arguments of an operator that is not executed on meta."""
    for pos, argument in enumerate(info.schema.arguments[1:], start=1):
        if pos < len(args) and argument.name in kwargs:
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` is given twice"
            )
        if pos < len(args):
            value = args[pos]
        elif argument.name in kwargs:
            value = kwargs[argument.name]
        else:
            continue
        kind = str(argument.type)
        if kind in ("float", "int") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` must be a number, "
                f"found {type(value).__name__}"
            )
        if kind == "int" and not isinstance(value, int):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` must be an integer"
            )


def _check_generators(ins: Call, generators: int, where: str) -> None:
    for gen in iter_leaves((ins.args, ins.kwargs), GenRef):
        if gen.id >= generators:
            raise RecipeFormatError(f"{where}: generator {gen.id} is not declared")


def _flatten_outputs(result: Any) -> list[Any]:
    if isinstance(result, (list, tuple)):
        flat: list[Any] = []
        for r in result:
            if isinstance(r, (list, tuple)):
                flat.extend(r)
            else:
                flat.append(r)
        return flat
    return [result]


def flatten_outputs(result: Any) -> list[Any]:
    """An operator's returns as a flat list (lists of tensors flattened in place)."""
    return _flatten_outputs(result)


def _bind(
    facts: ProgramFacts,
    storages: dict[int, int],
    env: dict[int, torch.Tensor],
    index: int,
    value: int,
    tensor: torch.Tensor,
) -> None:
    storage = tensor.untyped_storage()
    key = storage._cdata
    sid = storages.get(key)
    nbytes = None
    if sid is None:
        sid = storages[key] = value
        nbytes = storage.nbytes()
    meta = TensorMeta(sid, tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype)
    facts.define(index, value, meta, nbytes)
    env[value] = tensor


# --------------------------------------------------------------------------- planning
def plan_execution(
    program: list[Instruction],
    facts: ProgramFacts,
    targets: Iterable[int],
    *,
    end: int | None = None,
    advance_dead_draws: bool = True,
    available: dict[int, int] | None = None,
    draw_in_place: bool = True,
    computed_draws: set[int] | frozenset[int] = frozenset(),
) -> list[Action]:
    """Decide, for each instruction before ``end``, what the interpreter must do.

    Args:
        targets: value ids whose tensors and contents are wanted after instruction ``end - 1``.
        advance_dead_draws: run dead random draws (``torch`` mode), or skip them.
        computed_draws: draws whose effect on their generator the interpreter's generator bank
            computes without running them (:func:`initrecipe.rng.torch.positions.modelled_draws`):
            skipped when their values are dead, even with ``advance_dead_draws``.
        draw_in_place: run a dead in-place draw on its own tensor when the plan builds that
            tensor's storage anyway (fast, like eager); otherwise dead draws use scratch memory.
        available: storage id -> index of the instruction after which the caller holds that storage
            (its base tensor, bound to the value id equal to the storage id) with its contents as of
            that instruction.  Entries whose contents are needed as of an earlier point are removed
            from the dict, so the caller knows which of its tensors the plan relies on.
    """
    targets = list(targets)
    available = available if available is not None else {}
    while True:
        stale: set[int] = set()
        actions = _plan(program, facts, targets, len(program) if end is None else end,
                        advance_dead_draws, available, stale, draw_in_place, computed_draws)
        if not stale:
            return actions
        for storage in stale:
            available.pop(storage, None)


def _plan(
    program: list[Instruction],
    facts: ProgramFacts,
    targets: list[int],
    n: int,
    advance_dead_draws: bool,
    available: dict[int, int],
    stale: set[int],
    draw_in_place: bool,
    computed_draws: set[int] | frozenset[int],
) -> list[Action]:
    actions = [Action.SKIP] * n
    touched: set[int] = set()  # storages that instructions after the current one build or use
    needed_values = set(targets)
    needed_storages = {facts.values[v].storage for v in needed_values}

    def need(storage: int, index: int) -> None:
        if available.get(storage, -1) >= index:
            stale.add(storage)
        needed_storages.add(storage)

    for i in range(n - 1, -1, -1):
        ins = program[i]
        if isinstance(ins, Call):
            info = facts.infos[i]
            outs = [o for o in ins.outs if o is not None]
            fresh = [o for o in outs if facts.storage_creator.get(facts.values[o].storage) == i]
            written = facts.written_storages(i, ins)
            contents = any(
                s in needed_storages and available.get(s, -1) < i for _, s in written
            ) or any(
                facts.values[o].storage in needed_storages and available.get(facts.values[o].storage, -1) < i
                for o in fresh
            )
            wanted = any(o in needed_values for o in outs)
            if contents:
                action = Action.RUN
            elif wanted:
                if fresh and len(fresh) == len(outs) and all(facts.values[o].storage in available for o in fresh):
                    action = Action.SKIP  # the caller provides these tensors
                elif len(fresh) == len(outs) and (not draws_from_generator(ins, info) or i in computed_draws):
                    action = Action.ALLOC
                else:
                    action = Action.RUN
            elif advance_dead_draws and draws_from_generator(ins, info) and i not in computed_draws:
                action = Action.RUN if info.value_dependent_random else Action.ADVANCE
                if action == Action.ADVANCE and draw_in_place and info.overwrites_self:
                    target = arg_at(ins, info.arg_names, 0)
                    if isinstance(target, Ref) and facts.values[target.id].storage in touched:
                        # The storage is built later anyway: draw into it, as eager does, instead
                        # of faulting in scratch pages.  Its old contents are not read.
                        actions[i] = Action.RUN
                        needed_values.update(call_refs(ins))
                        continue
            else:
                action = Action.SKIP
            actions[i] = action
            if action == Action.ALLOC:
                touched.update(facts.values[o].storage for o in outs)
            if action != Action.RUN:
                continue
            touched.update(facts.values[o].storage for o in outs)
            touched.update(facts.values[r].storage for r in call_refs(ins))
            for pos, storage in written:
                if pos == 0 and info.overwrites_self:
                    ref = arg_at(ins, info.arg_names, 0)
                    if facts.values[ref.id].covers(facts.storage_nbytes[storage]):
                        needed_storages.discard(storage)
            for o in fresh:
                needed_storages.discard(facts.values[o].storage)
            needed_values.update(call_refs(ins))
            view_only = not written and not fresh
            if view_only:
                continue
            written_positions = {pos for pos, _ in written}
            for pos, ref in _positional_refs(ins, info):
                if pos == 0 and info.overwrites_self:
                    continue
                if pos in written_positions and pos != 0:
                    continue  # out= arguments are written, not read
                need(facts.values[ref].storage, i)
        elif isinstance(ins, Literal):
            if ins.out in needed_values:
                if facts.values[ins.out].storage in available:
                    continue
                actions[i] = Action.RUN
                needed_storages.discard(facts.values[ins.out].storage)
        else:
            actions[i] = Action.RUN
    return actions


def read_storages(index: int, ins: Call, info: OpInfo, facts: ProgramFacts,
                  written: list[tuple[int, int]]) -> set[int]:
    """The storages whose contents call ``index`` reads (the planner's rule: a view reads nothing;
    an overwriting fill does not read its target; ``out=`` arguments are written, not read).
    ``written`` is ``facts.written_storages(index, ins)``."""
    fresh = any(o is not None and facts.storage_creator.get(facts.values[o].storage) == index for o in ins.outs)
    if not written and not fresh:
        return set()
    written_positions = {pos for pos, _ in written}
    reads: set[int] = set()
    for pos, ref in _positional_refs(ins, info):
        if pos == 0 and info.overwrites_self:
            continue
        if pos in written_positions and pos != 0:
            continue
        reads.add(facts.values[ref].storage)
    return reads


def _positional_refs(ins: Call, info: OpInfo) -> list[tuple[int, int]]:
    """``(schema position, value id)`` for every tensor reference in a call."""
    out: list[tuple[int, int]] = []
    for pos, a in enumerate(ins.args):
        out.extend((pos, ref.id) for ref in iter_leaves(a, Ref))
    for name, a in ins.kwargs.items():
        pos = info.arg_names.index(name) if name in info.arg_names else -1
        out.extend((pos, ref.id) for ref in iter_leaves(a, Ref))
    return out

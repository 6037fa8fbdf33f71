"""The operator registry: the allowlist of ATen operators a recipe may name, and every fact about each.

Each operator is declared once, in :mod:`initrecipe.program.operators.declarations`, as data (see
:mod:`initrecipe.program.operators.kinds` for what a declaration states); the tables the other
layers read (:data:`ALLOWED_OPERATORS`, :data:`DRAW_OPERATORS`, :data:`DEVICE_EXACT`...) are views
of those declarations, computed here.

A recipe names operators as ``aten.<name>.<overload>`` strings.  They are resolved only through
:func:`resolve_op`, which accepts a name only when its operator ``<name>`` is listed here: nothing read
from a file ever reaches ``getattr`` on an arbitrary attribute, ``eval`` or an import.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

from initrecipe.errors import RecipeFormatError, RecordError
from initrecipe.program.operators.declarations import OPERATORS
from initrecipe.program.operators.kinds import (NOT_MODELLED, Constant, CostFamily, DeviceExact, DrawCostRule, DrawRule,
                                                Kind, Operator, Overload, PortableSampler, Precondition,
                                                RecordShortcut, Substitute)

T = TypeVar("T")

__all__ = ["OPERATORS", "REGISTRY", "ALLOWED_OPERATORS", "SHAPE_ONLY_OPERATORS", "UNINITIALIZED_LIKE",
           "RANDOM_OPERATORS", "POINTWISE_OPERATORS", "DEVICE_EXACT", "DEVICE_EXACT_WITH_UNIT_ALPHA", "PRECONDITIONS",
           "DRAW_COST_RULES", "COST_FAMILIES", "CONSTANT_RESULTS", "COPY_OPERATORS", "ELEMENTWISE_OPERATORS",
           "DRAW_OPERATORS", "ELEMENTWISE_DRAWS", "FORMAT_1_2_DRAWS", "REFUSED_DRAWS", "SUBSTITUTED_OPERATORS",
           "CHUNKABLE_FILLS", "RECORD_SHORTCUTS", "OpInfo", "resolve_op", "op_info", "generator_overload",
           # the vocabulary of the declarations (initrecipe.program.operators.kinds)
           "Kind", "Precondition", "DrawRule", "DrawCostRule", "NOT_MODELLED", "CostFamily", "Constant", "DeviceExact",
           "Substitute", "RecordShortcut", "PortableSampler", "Overload", "Operator"]

REGISTRY: dict[str, Operator] = {operator.name: operator for operator in OPERATORS}
"""Every declared operator by name (without overload)."""


def _names(fact: Callable[[Operator], object]) -> frozenset[str]:
    """The operators for which ``fact`` is true."""
    return frozenset(operator.name for operator in OPERATORS if fact(operator))


def _by_name(fact: Callable[[Operator], T | None]) -> dict[str, T]:
    """``fact`` of each operator that has it (not None), by operator name."""
    return {operator.name: value for operator in OPERATORS if (value := fact(operator)) is not None}


def _by_overload(fact: Callable[[Overload], T | None]) -> dict[str, T]:
    """``fact`` of each overload that has it (not None), by ``aten.<name>.<overload>``."""
    return {f"aten.{operator.name}.{overload.name}": value
            for operator in OPERATORS for overload in operator.overloads if (value := fact(overload)) is not None}


ALLOWED_OPERATORS: frozenset[str] = frozenset(REGISTRY)
"""Every ATen operator name (without overload) that a recipe may call."""

SHAPE_ONLY_OPERATORS: frozenset[str] = _names(lambda operator: operator.shape_only)
"""Operators that read only the shape, dtype and device of their tensor arguments, never their
values: the only ones that may take a meta tensor and return a tensor that holds values."""

UNINITIALIZED_LIKE: frozenset[str] = _names(lambda operator: operator.shape_only and operator.uninitialized)
"""Shape-only operators whose result is uninitialized memory (``Module.to_empty`` calls ``empty_like``)."""

RANDOM_OPERATORS: frozenset[str] = _names(lambda operator: operator.kind is Kind.RANDOM)
"""The operators that draw from a generator."""

POINTWISE_OPERATORS: frozenset[str] = _names(lambda operator: operator.kind is Kind.POINTWISE)
"""Elementwise arithmetic, comparisons and fills."""

DEVICE_EXACT: frozenset[str] = _names(lambda operator: operator.device_exact is DeviceExact.YES)
"""Operators (by name, without overload) whose results are bitwise identical on every device."""

DEVICE_EXACT_WITH_UNIT_ALPHA: frozenset[str] = _names(lambda operator: operator.device_exact is DeviceExact.UNIT_ALPHA)
"""Operators (``a + alpha * b``) bitwise identical on every device when ``alpha`` is 1 or -1."""

PRECONDITIONS: dict[str, Precondition] = _by_name(lambda operator: operator.precondition)
"""The argument check replay's kernels make and meta kernels skip, by operator."""

DRAW_COST_RULES: dict[str, DrawCostRule] = _by_name(lambda operator: operator.draws)
"""How many generator outputs each random operator takes (or :data:`NOT_MODELLED`), by operator."""

COST_FAMILIES: dict[str, CostFamily] = _by_name(lambda operator: operator.cost)
"""How the work estimate prices each operator it prices beyond memory traffic."""

CONSTANT_RESULTS: dict[str, Constant] = _by_name(lambda operator: operator.constant)
"""The value an operator's result holds whatever its inputs (uninitialized, zeros, ones, a fill value)."""

COPY_OPERATORS: frozenset[str] = _names(lambda operator: operator.copies)
"""Operators whose result is a copy of their input."""

ELEMENTWISE_OPERATORS: frozenset[str] = _names(lambda operator: operator.elementwise)
"""Operators a slice of whose result needs only the same slice of their inputs."""

DRAW_OPERATORS: dict[str, PortableSampler] = _by_overload(lambda overload: overload.sampler)
"""The random operators a portable recipe may call, each with how to read its sampler and parameters.
Every other random operator is refused in portable recipes (the recorder says so while recording)."""

FORMAT_1_2_DRAWS: frozenset[str] = frozenset(name for name, sampler in DRAW_OPERATORS.items() if sampler.since == (1, 2))
"""The portable draws that format 1.2 added (a recipe that keys one of them is written as 1.2)."""

ELEMENTWISE_DRAWS: frozenset[str] = frozenset(name for name, sampler in DRAW_OPERATORS.items() if sampler.elementwise)
"""Portable draws whose element ``i`` depends on its own index only (a permutation does not)."""

REFUSED_DRAWS: dict[str, str] = _by_overload(lambda overload: overload.refused)
"""Random operators that portable recipes refuse on purpose, with why (docs/PORTABLE.md)."""

SUBSTITUTED_OPERATORS: dict[str, Substitute] = _by_overload(lambda overload: overload.substitute)
"""Deterministic operators whose portable meaning is initrecipe's own implementation."""

CHUNKABLE_FILLS: dict[str, int] = _by_overload(lambda overload: overload.chunk_granule)
"""Fills whose CPU kernels draw from the generator element by element, in memory order, a fixed number
of times per element, so that drawing into a small buffer chunk after chunk moves the generator
exactly as one draw over the whole tensor does; with the granule (in elements) of the chunks
(``normal_``, which redraws the last 16 of at least 16 contiguous elements, needs multiples of 16
with a final chunk of at least 16; ``tests/test_interpreter.py`` checks these facts)."""

RECORD_SHORTCUTS: dict[str, RecordShortcut] = _by_overload(lambda overload: overload.shortcut)
"""Calls the recorder answers without a FakeTensorMode dispatch."""

# Random operators whose default overload draws from the global generator without taking a
# ``generator`` argument, mapped to the overload that takes one.  The recorder always records the
# explicit-generator overload, so replay never touches the process-global generator.
_GENERATOR_OVERLOADS: dict[tuple[str, str], str] = {
    (operator.name, overload.name): overload.generator
    for operator in OPERATORS for overload in operator.overloads if overload.generator is not None
}


@functools.lru_cache(maxsize=None)
def _generator_type() -> object:
    return torch._C._GeneratorType.get()


class OpInfo:
    """What the analysis and the interpreter need to know about one resolved operator overload."""

    __slots__ = (
        "name",
        "op",
        "schema",
        "is_random",
        "generator_arg",
        "overwrites_self",
        "value_dependent_random",
        "data_dependent_shape",
        "written_args",
        "aliased_outputs",
        "arg_names",
        "takes_default_dtype",
        "uninitialized_factory",
        "declared",
    )

    def __init__(self, name: str, op: torch._ops.OpOverload) -> None:
        self.name = name
        self.op = op
        self.schema = op._schema
        packet = name.split(".")[1]
        self.arg_names = [a.name for a in self.schema.arguments]
        gen_args = [
            a.name
            for a in self.schema.arguments
            if isinstance(a.type, torch.OptionalType) and a.type.getElementType() == _generator_type()
        ]
        self.generator_arg: str | None = gen_args[0] if gen_args else None
        # A factory (no tensor arguments) with a `dtype` argument: left out, torch's default dtype
        # decides (for floating-point results), so a recipe means `float32` there.
        self.takes_default_dtype = "dtype" in self.arg_names and not any(
            "Tensor" in str(a.type) for a in self.schema.arguments
        )
        self.is_random = self.generator_arg is not None
        # The operator's registry entry (None for one the recorder met outside the allowlist).
        declared = self.declared = REGISTRY.get(packet)
        self.overwrites_self = (declared is not None and declared.overwrites
                                and self.schema.arguments[0].alias_info is not None)
        self.value_dependent_random = (declared is not None and declared.value_dependent_draw) or (
            self.is_random
            and packet in ("normal", "bernoulli")
            and any(str(a.type) == "Tensor" for a in self.schema.arguments)
        )
        self.data_dependent_shape = declared is not None and declared.data_dependent_shape
        # A factory whose result is fresh memory nothing has written yet (replay advises it to use
        # huge pages: initrecipe.support.hugepages).
        self.uninitialized_factory = declared is not None and declared.uninitialized
        # Positions of arguments the operator writes to (in-place and out= arguments).
        self.written_args = tuple(
            i
            for i, a in enumerate(self.schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        # For each output: index of the argument it aliases (a view or an in-place result), or None.
        aliased: list[int | None] = []
        for ret in self.schema.returns:
            target = None
            if ret.alias_info is not None:
                # A list return such as `Tensor(a)[]` carries its alias set on the element type.
                wanted = set(ret.alias_info.before_set)
                for i, a in enumerate(self.schema.arguments):
                    if a.alias_info is not None and (not wanted or wanted & set(a.alias_info.before_set)):
                        target = i
                        break
            aliased.append(target)
        self.aliased_outputs = tuple(aliased)

    def __repr__(self) -> str:
        return f"OpInfo({self.name})"


def _split(name: str) -> tuple[str, str, str]:
    parts = name.split(".")
    if len(parts) != 3:
        raise ValueError(name)
    return parts[0], parts[1], parts[2]


@functools.lru_cache(maxsize=None)
def op_info(name: str) -> OpInfo:
    """Resolve an ``aten.<name>.<overload>`` string through the allowlist.

    Raises :class:`RecipeFormatError` for a name outside the allowlist or unknown to this torch.
    """
    try:
        namespace, packet, overload = _split(name)
    except ValueError:
        raise RecipeFormatError(
            f"operator name `{name}` is not of the form `aten.<name>.<overload>`"
        ) from None
    if namespace != "aten" or packet not in ALLOWED_OPERATORS:
        raise RecipeFormatError(
            f"unknown operator `{name}`: it is not on initrecipe's allowlist; "
            "the recipe was written by a newer or a modified initrecipe, or is corrupt"
        )
    packet_obj = getattr(torch.ops.aten, packet, None)
    if packet_obj is None or overload not in packet_obj.overloads():
        raise RecipeFormatError(
            f"operator `{name}` does not exist in torch {torch.__version__}; "
            "replay this recipe with the torch version that recorded it"
        )
    return OpInfo(name, getattr(packet_obj, overload))


def resolve_op(name: str) -> torch._ops.OpOverload:
    """Return the ``OpOverload`` for an allowlisted operator name (see :func:`op_info`)."""
    return op_info(name).op


def op_name(op: torch._ops.OpOverload) -> str:
    """The recipe name ``aten.<name>.<overload>`` of an operator overload."""
    return f"{op.namespace}.{op._schema.name.split('::')[1]}.{op._overloadname}"


def generator_overload(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """For a random operator that implicitly uses the global generator, its explicit-generator overload."""
    packet = op._schema.name.split("::")[1]
    target = _GENERATOR_OVERLOADS.get((packet, op._overloadname))
    if target is None:
        return None
    return getattr(getattr(torch.ops.aten, packet), target)


def check_recordable(op: torch._ops.OpOverload, where: Callable[[], str] | None = None) -> str:
    """The recipe name of ``op``, or :class:`RecordError` when replay could not execute it.

    ``where``, called only to build the error, says where the call happened
    (`` (on tensors of shape ..., called from `file:line` in `fn`)``).
    """
    name = op_name(op)
    if op.namespace != "aten" or name.split(".")[1] not in ALLOWED_OPERATORS:
        raise RecordError(
            f"unsupported operator `{name}` called while recording{where() if where else ''}: "
            "initrecipe cannot replay it. "
            "Build this part of the model outside the recorded constructor, or open an issue asking "
            "for the operator to be added to the allowlist"
        )
    return name

"""Shape propagation of a program on the meta device: its :class:`ProgramFacts`, checked.

:func:`infer_facts` runs every instruction on meta tensors, in three steps per call: verify the
call (:mod:`initrecipe.analysis.verify`, :mod:`initrecipe.analysis.preconditions`), compute its
meta outputs (:mod:`initrecipe.analysis.meta_outputs`), and bind them (each value's shape, dtype
and storage, the storages' sizes against the memory budget of :mod:`initrecipe.analysis.budget`,
and the call's cost, :mod:`initrecipe.analysis.cost`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from initrecipe.analysis.budget import MemoryBudget
from initrecipe.analysis.cost import RNG_COST, call_cost, literal_cost
from initrecipe.analysis.facts import ProgramFacts, TensorMeta
from initrecipe.analysis.meta_outputs import META, meta_arguments, meta_outputs
from initrecipe.analysis.preconditions import random_call_problem
from initrecipe.analysis.verify import check_view_bounds, verify_call, verify_meta_arguments
from initrecipe.errors import RecipeError, RecipeFormatError
from initrecipe.program.generators import generator_of
from initrecipe.program.ir import Call, Instruction, Literal, PortableKey, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.operators import SUBSTITUTED_OPERATORS, OpInfo, op_info
from initrecipe.program.walk import arg_at
from initrecipe.rng.portable.semantics import check_draw, check_substitute
from initrecipe.support.display import failure_detail

__all__ = ["infer_facts", "recipe_defaults"]


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
    inference = _Inference(facts, MemoryBudget(program, facts, max_bytes, names), generators, rng == "portable")
    for i, ins in enumerate(program):
        try:
            inference.instruction(i, ins)
        except RecipeError:
            raise
        except Exception as exc:  # anything torch or a malformed argument raises: name the instruction
            op = f"`{ins.op}` " if isinstance(ins, Call) else ""
            raise RecipeFormatError(f"program[{i}]: {op}cannot be checked: {failure_detail(exc)}") from None
    return facts


class _Inference:
    """The state of one :func:`infer_facts` pass: the facts so far, every value's meta tensor, and
    the instructions that position each generator."""

    __slots__ = ("facts", "budget", "generators", "portable", "env", "storages", "rng_indices")

    def __init__(self, facts: ProgramFacts, budget: MemoryBudget, generators: int, portable: bool) -> None:
        self.facts = facts
        self.budget = budget
        self.generators = generators
        self.portable = portable
        self.env: dict[int, torch.Tensor] = {}
        self.storages: dict[int, int] = {}  # StorageImpl address -> storage id (env keeps every storage alive)
        self.rng_indices: dict[int, set[int]] = {}  # generator -> the instructions that draw from or position it

    def instruction(self, i: int, ins: Instruction) -> None:
        """Check instruction ``i`` and add its facts."""
        if isinstance(ins, Call):
            self.call(i, ins)
        elif isinstance(ins, Literal):
            self.literal(i, ins)
        elif isinstance(ins, (RngSeed, RngSetState, RngRestore)):
            self.rng(i, ins)
        else:
            raise RecipeFormatError(f"program[{i}]: not an instruction ({type(ins).__name__})")

    def literal(self, i: int, ins: Literal) -> None:
        self.facts.infos.append(None)
        tensor = torch.empty(ins.shape, dtype=ins.dtype, device=META)
        if tensor.numel() * tensor.dtype.itemsize != len(ins.data):
            raise RecipeFormatError(
                f"program[{i}].data: {len(ins.data)} bytes for shape {list(ins.shape)} of {ins.dtype}"
            )
        self.bind(i, ins.out, tensor)
        self.budget.created(i, ins.out, tensor.untyped_storage().nbytes())
        self.facts.costs.append(literal_cost(len(ins.data)))

    def rng(self, i: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        self.facts.infos.append(None)
        self.facts.costs.append(RNG_COST)
        if not 0 <= ins.gen < self.generators:
            raise RecipeFormatError(
                f"program[{i}]: generator {ins.gen} is not declared (the recipe declares {self.generators})"
            )
        if isinstance(ins, RngRestore):
            if ins.after not in self.rng_indices.get(ins.gen, ()):
                raise RecipeFormatError(
                    f"program[{i}].after: instruction {ins.after} does not position generator {ins.gen}"
                )
        self.rng_indices.setdefault(ins.gen, set()).add(i)

    def call(self, i: int, ins: Call) -> None:
        """Verify call ``i``, compute its meta outputs, and bind them."""
        try:
            info = op_info(ins.op)
        except RecipeFormatError as exc:
            raise RecipeFormatError(f"program[{i}]: {exc}") from None
        self.facts.infos.append(info)
        key = verify_call(i, ins, info, self.generators, self.portable)
        args, kwargs = meta_arguments(i, ins, info, self.env)
        self.budget.precheck(i, ins, info, args[0] if args else None)
        verify_meta_arguments(i, ins, info, args, kwargs)
        outs = meta_outputs(i, ins, info, args, kwargs, key)
        if info.is_random and key is None:
            problem = random_call_problem(info, args, kwargs)
            if problem is not None:
                raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")
        self.bind_outputs(i, ins, outs)
        self.record_growth(i, ins, info)
        self.facts.costs.append(call_cost(info, args, kwargs, outs, portable_draw=key is not None,
                                          substituted=self.portable and ins.op in SUBSTITUTED_OPERATORS))
        self.verify_draw(i, ins, info, args, kwargs, outs, key)
        if info.is_random and key is None:
            self.rng_indices.setdefault(generator_of(ins, info), set()).add(i)

    def bind_outputs(self, i: int, ins: Call, outs: list[Any]) -> None:
        """Bind call ``i``'s output values to its meta outputs: a view must lie inside its storage,
        a new storage counts against the budget."""
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
            known = out.untyped_storage()._cdata in self.storages
            self.bind(i, value, out)
            if known:
                check_view_bounds(i, ins, value, out)
            else:
                self.budget.created(i, value, self.facts.storage_nbytes[self.facts.values[value].storage])

    def record_growth(self, i: int, ins: Call, info: OpInfo) -> None:
        """Storages that an in-place or out= call grew (resize_, out= arguments)."""
        facts = self.facts
        for pos in info.written_args:
            ref = arg_at(ins, info.arg_names, pos)
            if isinstance(ref, Ref) and ref.id in self.env:
                sid = facts.values[ref.id].storage
                now = self.env[ref.id].untyped_storage().nbytes()
                before = max(facts.storage_nbytes.get(sid, 0), facts.storage_grown.get(sid, 0))
                if now > before:
                    facts.storage_grown[sid] = now
                    self.budget.created(i, ref.id, now - before)

    def verify_draw(self, i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any],
                    outs: list[Any], key: PortableKey | None) -> None:
        """The portable checks that need the outputs: a portable factory draw's parameters for its
        output dtype, and an operator with initrecipe's own portable meaning."""
        if key is not None and not info.overwrites_self:  # a portable factory: its one output is a meta tensor
            check_draw(f"program[{i}]", ins, info, args, kwargs, outs[0].dtype)
        if self.portable:
            problem = check_substitute(ins, args, kwargs)
            if problem is not None:
                raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")

    def bind(self, index: int, value: int, tensor: torch.Tensor) -> None:
        """Define ``value`` as ``tensor``'s view of its storage (a new storage id on first sight)."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        sid = self.storages.get(key)
        nbytes = None
        if sid is None:
            sid = self.storages[key] = value
            nbytes = storage.nbytes()
        meta = TensorMeta(sid, tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype)
        self.facts.define(index, value, meta, nbytes)
        self.env[value] = tensor

"""Running a slice plan (:mod:`initrecipe.runtime.sharding`): an elementwise program computed for
the selected elements of its tensor only."""

from __future__ import annotations

from typing import Any, Callable

import torch

from initrecipe.analysis.facts import ProgramFacts, TensorMeta
from initrecipe.errors import RecipeError, ReplayError
from initrecipe.program.ir import Call, Instruction, Literal, Ref
from initrecipe.program.operators import SUBSTITUTED_OPERATORS, OpInfo
from initrecipe.program.walk import map_arg
from initrecipe.rng.portable.samplers import sample_
from initrecipe.rng.portable.semantics import describe_draw, portable_key_of, run_substitute, stream_key
from initrecipe.runtime.calls import literal_tensor
from initrecipe.runtime.placement import on_device, run_on_host, runs_on_device
from initrecipe.runtime.sharding import SlicePlan, factory_constant, is_view_op
from initrecipe.support.display import failure_detail

__all__ = ["run_slice"]


def run_slice(
    plan: SlicePlan, program: list[Instruction], facts: ProgramFacts, segments: list[tuple[int, int]], seed: int,
    device: torch.device = torch.device("cpu"), split_devices: bool = False,
) -> torch.Tensor:
    """Run an elementwise program for the elements ``segments`` select; returns them, 1-D, in order.

    Every value laid out like the output is represented by one 1-D tensor per storage holding
    just the selected elements; views of it are that same tensor, so in-place writes through any
    of them land in it.  Tensors are built on ``device``; off the CPU (or with ``split_devices``)
    operators that are not bitwise identical on every device run on CPU copies
    (:mod:`initrecipe.runtime.placement`).
    """
    run = _SliceRun(plan, facts, segments, seed, device, split_devices or device.type != "cpu")
    for i in plan.indices:
        ins = program[i]
        if isinstance(ins, Literal):
            run.literal(ins)
            continue
        assert isinstance(ins, Call)
        try:
            run.call(i, ins)
        except RecipeError:
            raise
        except Exception as exc:
            raise ReplayError(f"program[{i}]: `{ins.op}` failed on a shard: {failure_detail(exc)}") from None
    return run.selection[facts.values[plan.value].storage]


def _resolve_refs(a: object, env: dict[int, torch.Tensor]) -> Any:
    """``a`` with every :class:`Ref` replaced by its tensor (generators are left as they are).  A
    module-level function on purpose: a recursive closure is a reference cycle that would keep ``env``
    (every slice) alive until the cyclic collector runs, which :func:`initrecipe.replay` pauses."""
    return map_arg(a, Ref, lambda ref: env[ref.id])


class _SliceRun:
    """One run of a slice plan: the selected elements of each full storage and the values bound so far."""

    def __init__(self, plan: SlicePlan, facts: ProgramFacts, segments: list[tuple[int, int]], seed: int,
                 device: torch.device, split: bool) -> None:
        self.plan = plan
        self.facts = facts
        self.segments = segments
        self.seed = seed
        self.device = device
        self.split = split  # operators that are not bitwise identical on `device` run on CPU copies
        self.count = sum(length for _, length in segments)
        self.selection: dict[int, torch.Tensor] = {}  # storage -> its selected elements
        self.env: dict[int, torch.Tensor] = {}
        self._indices: torch.Tensor | None = None

    def indices(self) -> torch.Tensor:
        """The row-major indices of the selected elements in the whole tensor (ascending)."""
        if self._indices is None:
            parts = [torch.arange(start, start + length, dtype=torch.int64) for start, length in self.segments]
            self._indices = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
        return self._indices

    def bind(self, v: int, tensor: torch.Tensor | None) -> None:
        """Bind value ``v``: a full storage's value to its selected elements (the first tensor bound
        to that storage), a view never materialized to None."""
        storage = self.facts.values[v].storage
        if v in self.plan.views:
            self.env[v] = None  # type: ignore[assignment]  # never materialized: only its geometry is used
        elif storage in self.plan.full_storages:
            self.env[v] = self.selection.setdefault(storage, tensor)  # type: ignore[arg-type]
        else:
            self.env[v] = tensor  # type: ignore[assignment]

    def literal(self, ins: Literal) -> None:
        """Bind a literal: only its selected elements when it is a full storage."""
        data = literal_tensor(ins)
        full = self.facts.values[ins.out].storage in self.plan.full_storages
        self.bind(ins.out, (data.reshape(-1)[self.indices()] if full else data).to(self.device))

    def call(self, i: int, ins: Call) -> None:
        """Run call ``i`` on the selected elements and bind its outputs."""
        facts, plan = self.facts, self.plan
        info = facts.infos[i]
        packet = ins.op.split(".")[1]
        outs = [o for o in ins.outs if o is not None]
        args = [_resolve_refs(a, self.env) for a in ins.args]
        kwargs = {k: _resolve_refs(v, self.env) for k, v in ins.kwargs.items()}
        if i in plan.fills:
            view = facts.values[ins.args[0].id]
            _fill_through_view(view, args[1] if packet == "fill_" else 0, self.indices(), self.selection[view.storage])
            return
        if is_view_op(info) and outs and all(facts.values[o].storage in plan.full_storages for o in outs):
            for o in outs:
                self.bind(o, None if o in plan.views else self.selection[facts.values[o].storage])
            return
        creates = factory_constant(packet) is not None or packet == "arange" or (info.is_random and not info.overwrites_self)
        if creates and facts.values[outs[0]].storage in plan.full_storages:
            tensor = _factory(ins, info, packet, facts.values[outs[0]].dtype, self.count, self.indices, args, kwargs)
            tensor = tensor.to(self.device)
            if info.is_random:
                _draw(ins, info, args, kwargs, tensor, self.seed, self.segments)
            self.bind(outs[0], tensor)
            return
        result = self._compute(ins, info, args, kwargs)
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        for o, t in zip(ins.outs, results):
            if o is not None:
                self.bind(o, t)

    def _compute(self, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run an in-place draw, a substituted operator, or an elementwise operator (placed)."""
        if info.is_random:
            _draw(ins, info, args, kwargs, args[0], self.seed, self.segments)
            return args[0]
        if ins.op in SUBSTITUTED_OPERATORS:
            return run_substitute(ins, args, kwargs)
        if self.split and not runs_on_device(ins):
            return run_on_host(lambda a, k: info.op(*a, **k), args, kwargs, info.written_args, self.device)
        return info.op(*[on_device(a, self.device) for a in args],
                       **{k: on_device(v, self.device) for k, v in kwargs.items()})


def _fill_through_view(view: TensorMeta, value: torch.Tensor | float | int | bool, selected: torch.Tensor,
                       storage: torch.Tensor) -> None:
    """Write ``value`` into the selected elements of ``storage`` that ``view`` covers.

    ``selected`` holds the (ascending) row-major indices of the whole tensor that ``storage``'s
    elements stand for; ``view``'s shape, stride and offset locate its elements in the whole."""
    where = torch.full((), view.offset, dtype=torch.int64)
    for size, stride in zip(view.shape, view.stride):
        where = (where.unsqueeze(-1) + torch.arange(size, dtype=torch.int64) * stride)
    where = where.reshape(-1)
    if where.numel() == 0 or selected.numel() == 0:
        return
    position = torch.searchsorted(selected, where).clamp_(max=selected.numel() - 1)
    hit = position[selected[position] == where]
    storage[hit.to(storage.device)] = value.to(storage.device) if isinstance(value, torch.Tensor) else value


def _draw(ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any], out: torch.Tensor, seed: int,
          segments: list[tuple[int, int]]) -> None:
    """Fill ``out`` with the selected elements of a keyed portable draw."""
    draw = describe_draw(ins, info, args, kwargs)
    key = portable_key_of(ins, info)
    assert key is not None
    sample_(out, draw.kind, stream_key(seed, key.stream, key.position), draw.params, segments)


def _factory(ins: Call, info: OpInfo, packet: str, dtype: torch.dtype, count: int,
             indices: Callable[[], torch.Tensor], args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    """The selected elements of a factory's (or an integer ``arange``'s) output, 1-D."""
    if packet == "arange":
        values = {info.arg_names[p]: a for p, a in enumerate(args)}
        values.update(kwargs)
        if ins.op == "aten.arange.default":
            start, step = 0, 1
        else:
            start, step = values.get("start", 0), values.get("step", 1)
        return (indices() * int(step) + int(start)).to(dtype)
    how = factory_constant(packet) or "empty"
    if how == "zeros":
        return torch.zeros(count, dtype=dtype)
    if how == "ones":
        return torch.ones(count, dtype=dtype)
    if how == "full":
        fill = kwargs.get("fill_value")
        if fill is None:
            fill = args[info.arg_names.index("fill_value")]
        return torch.full((count,), fill, dtype=dtype)
    return torch.empty(count, dtype=dtype)

"""Shard requests: one slice of a tensor, generated without the rest when its program allows.

A :class:`Shard` asks for ``tensor.narrow(dim, start, stop - start)``.  In a ``portable`` recipe a
tensor whose program is *elementwise* is generated slice-only: each element of such a tensor is a
function of its own index, so the replayer computes exactly the requested elements.  A program is
elementwise when every value it builds has the tensor's element order (a contiguous tensor of the
same number of elements, or a single-element tensor) and every operator is

* a factory (``empty``, ``zeros``, ``ones``, ``full``, their ``_like``/``new_`` forms) or an
  integer ``arange``;
* a portable random draw (``normal_``, ``uniform_``, ``randn``, ... — see
  :data:`initrecipe.program.operators.DRAW_OPERATORS`);
* an elementwise operator (arithmetic, ``clamp``, ``erfinv``, ``copy_``, dtype conversion, ...);
* a view that keeps the element order (``view``, ``reshape``, ``unsqueeze``, ``detach``, ...);
* a constant written through any other view (``weight[padding_idx].zero_()``).

Anything else — ``orthogonal_``'s QR, ``sparse_``'s random permutations, reductions, computing
through transposes or slices, draws from a pinned ``torch.Generator``, and every ``torch``-mode
recipe — generates the whole tensor and slices it.  :func:`sliceable` tells which case a tensor is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import torch

from initrecipe.analysis.facts import ProgramFacts, TensorMeta, call_refs
from initrecipe.analysis.plan import read_storages
from initrecipe.errors import RecipeError, ReplayError
from initrecipe.runtime.interpreter import literal_tensor
from initrecipe.program.operators import (CONSTANT_RESULTS, ELEMENTWISE_DRAWS, ELEMENTWISE_OPERATORS, REGISTRY,
                                          SUBSTITUTED_OPERATORS, Kind)
from initrecipe.rng.portable.semantics import describe_draw, portable_key_of, run_substitute, stream_key
from initrecipe.runtime.placement import on_device, run_on_host, runs_on_device
from initrecipe.program.ir import Call, Instruction, Literal, Ref
from initrecipe.program.walk import map_arg

__all__ = ["Shard", "Box", "ShardRequest", "segments_of", "SlicePlan", "Dependencies", "plan_slice", "run_slice"]


@dataclass(frozen=True, slots=True)
class Shard:
    """The slice ``start:stop`` of dimension ``dim`` of a tensor."""

    dim: int
    start: int
    stop: int

    @classmethod
    def of(cls, size: int, rank: int, world_size: int, dim: int = 0) -> "Shard":
        """Rank ``rank``'s part of a dimension of ``size`` split ``world_size`` ways as
        ``torch.chunk`` (and FSDP2) split it: chunks of ``ceil(size / world_size)``, the last ones
        shorter or empty."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0 … world_size-1 and world_size >= 1, found rank={rank}, world_size={world_size}")
        chunk = -(-size // world_size) if size else 0
        start = min(rank * chunk, size)
        return cls(dim, start, min(start + chunk, size))

    def checked(self, name: str, shape: tuple[int, ...]) -> "Shard":
        """This shard with a negative ``dim`` resolved; :class:`ReplayError` if it does not fit ``shape``."""
        ndim = len(shape)
        dim = self.dim + ndim if self.dim < 0 else self.dim
        if not 0 <= dim < ndim:
            raise ReplayError(f"shard of `{name}`: dim {self.dim} is out of range for a tensor of shape {list(shape)}")
        if not 0 <= self.start <= self.stop <= shape[dim]:
            raise ReplayError(
                f"shard of `{name}`: [{self.start}:{self.stop}] is not a slice of dimension {dim} "
                f"(size {shape[dim]}); need 0 <= start <= stop <= size"
            )
        return Shard(dim, self.start, self.stop)

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of this slice of a tensor of ``shape``."""
        return shape[: self.dim] + (self.stop - self.start,) + shape[self.dim + 1 :]


@dataclass(frozen=True, slots=True)
class Box:
    """The block ``starts[d]:stops[d]`` of every dimension ``d`` of a tensor: what one rank holds
    of a tensor sharded over several dimensions of a device mesh (rows from one, columns from
    another).  A :class:`Shard` is the box that spans every other dimension.

    Example:
        >>> import torch
        >>> from initrecipe import Box
        >>> Box((1, 2), (3, 5)).take(torch.arange(24).reshape(4, 6))
        tensor([[ 8,  9, 10],
                [14, 15, 16]])
    """

    starts: tuple[int, ...]
    stops: tuple[int, ...]

    @classmethod
    def of(cls, region: "Shard | Box", shape: tuple[int, ...]) -> "Box":
        """``region`` as a box of a tensor of ``shape`` (a :class:`Shard` spans the other dimensions)."""
        if isinstance(region, Box):
            return region
        starts, stops = [0] * len(shape), list(shape)
        starts[region.dim], stops[region.dim] = region.start, region.stop
        return cls(tuple(starts), tuple(stops))

    def checked(self, name: str, shape: tuple[int, ...]) -> "Box":
        """This box, or :class:`ReplayError` if it does not fit ``shape``."""
        starts, stops = tuple(int(s) for s in self.starts), tuple(int(s) for s in self.stops)
        if len(starts) != len(shape) or len(stops) != len(shape):
            raise ReplayError(
                f"box of `{name}`: {len(starts)} starts and {len(stops)} stops for a tensor of shape {list(shape)}"
            )
        for d, (a, b, size) in enumerate(zip(starts, stops, shape)):
            if not 0 <= a <= b <= size:
                raise ReplayError(
                    f"box of `{name}`: [{a}:{b}] is not a slice of dimension {d} (size {size}); need 0 <= start <= stop <= size"
                )
        return Box(starts, stops)

    def shape(self, shape: tuple[int, ...] = ()) -> tuple[int, ...]:
        """The shape of the block."""
        return tuple(b - a for a, b in zip(self.starts, self.stops))

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """The block of ``tensor`` (a view)."""
        return tensor[tuple(slice(a, b) for a, b in zip(self.starts, self.stops))]

    def is_whole(self, shape: tuple[int, ...]) -> bool:
        return all(a == 0 and b == size for a, b, size in zip(self.starts, self.stops, shape))


ShardRequest = Union[Mapping[str, Union[Shard, Box]], Callable[[str, tuple[int, ...]], Union[Shard, Box, None]], None]
"""Which part of which tensor: a mapping name -> :class:`Shard` or :class:`Box`, or a callable
``(name, shape) -> Shard | Box | None`` (None: the whole tensor)."""


def segments_of(shape: tuple[int, ...], region: Shard | Box) -> list[tuple[int, int]]:
    """The region's elements as ``(first row-major index, length)`` runs of the whole tensor, in
    row-major order of the region."""
    box = Box.of(region, shape)
    ndim = len(shape)
    if ndim == 0:
        return [(0, 1)]
    if any(b <= a for a, b in zip(box.starts, box.stops)):
        return []
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    # The innermost dimensions the box spans whole merge into one run with the first partial one.
    inner = ndim - 1
    while inner > 0 and box.starts[inner] == 0 and box.stops[inner] == shape[inner]:
        inner -= 1
    length = (box.stops[inner] - box.starts[inner]) * strides[inner]
    outer_ranges = [range(box.starts[d], box.stops[d]) for d in range(inner)]
    base = box.starts[inner] * strides[inner]
    runs = [(base, length)]
    for d in range(inner - 1, -1, -1):
        runs = [(start + i * strides[d], n) for i in outer_ranges[d] for start, n in runs]
    if len(runs) > 1 and all(runs[k][0] + runs[k][1] == runs[k + 1][0] for k in range(len(runs) - 1)):
        return [(runs[0][0], sum(n for _, n in runs))]
    return runs


# ------------------------------------------------------------------------------------ analysis
_FACTORIES = {  # factory -> the constant it fills its result with (`empty`, `zeros`, `ones`, `full`)
    name: constant.value for name, constant in CONSTANT_RESULTS.items() if REGISTRY[name].kind is Kind.FACTORY
}


@dataclass
class SlicePlan:
    """The instructions that build one tensor, when they are elementwise (see the module doc)."""

    value: int
    shape: tuple[int, ...]
    numel: int
    indices: list[int]  # the instructions to run, in order
    full_storages: set[int]  # storages holding the tensor's element order: generated slice-only
    views: set[int] = field(default_factory=set)  # values viewing those storages otherwise (never materialized)
    fills: set[int] = field(default_factory=set)  # instructions writing a constant through such a view


def _full(meta: TensorMeta, numel: int, facts: ProgramFacts) -> bool:
    """Whether a value is a whole storage of ``numel`` elements laid out in row-major order."""
    if meta.numel != numel or meta.offset != 0:
        return False
    expected = 1
    for size, stride in zip(reversed(meta.shape), reversed(meta.stride)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return facts.storage_nbytes.get(meta.storage) == numel * meta.dtype.itemsize


class Dependencies:
    """Which instructions one output's contents depend on, for every output of one program.

    An index of each storage's writers is built once; each query then walks back from the output
    through the writers of what it reads, stopping at writes that replace a whole storage, so it
    costs the size of that output's own program rather than the whole program's.
    """

    def __init__(self, program: list[Instruction], facts: ProgramFacts) -> None:
        self.program = program
        self.facts = facts
        self.writers: dict[int, list[int]] = {}  # storage -> instructions creating or writing it, ascending
        for i, ins in enumerate(program):
            touched: list[int] = []
            if isinstance(ins, Literal):
                touched.append(facts.values[ins.out].storage)
            elif isinstance(ins, Call):
                for o in ins.outs:
                    if o is not None and facts.storage_creator.get(facts.values[o].storage) == i:
                        touched.append(facts.values[o].storage)
                touched.extend(s for _, s in facts.written_storages(i, ins))
            for storage in dict.fromkeys(touched):
                self.writers.setdefault(storage, []).append(i)

    def of(self, value: int) -> list[int]:
        """The instructions (ascending) that build ``value``'s contents."""
        facts = self.facts
        included: set[int] = set()
        pending: list[tuple[int, int]] = [(facts.values[value].storage, len(self.program))]  # (storage, before)
        defining = [facts.value_def[value]]
        while pending or defining:
            if defining:
                i = defining.pop()
                if i in included:
                    continue
                included.add(i)
                self._expand(i, pending, defining)
                continue
            storage, before = pending.pop()
            for i in reversed(self.writers.get(storage, ())):
                if i >= before:
                    continue
                if i not in included:
                    included.add(i)
                    self._expand(i, pending, defining)
                if self._replaces(i, storage):
                    break
        return sorted(included)

    def _expand(self, i: int, pending: list[tuple[int, int]], defining: list[int]) -> None:
        ins = self.program[i]
        if not isinstance(ins, Call):
            return
        facts = self.facts
        for ref in call_refs(ins):
            defining.append(facts.value_def[ref])
        written = facts.written_storages(i, ins)
        for storage in read_storages(i, ins, facts.infos[i], facts, written):
            pending.append((storage, i))

    def _replaces(self, i: int, storage: int) -> bool:
        """Whether instruction ``i`` creates ``storage`` or overwrites all of it without reading it."""
        facts = self.facts
        if facts.storage_creator.get(storage) == i:
            return True
        ins = self.program[i]
        if not isinstance(ins, Call):
            return False
        info = facts.infos[i]
        target = ins.args[0] if ins.args else None
        return (
            info.overwrites_self and isinstance(target, Ref) and facts.values[target.id].storage == storage
            and facts.values[target.id].covers(facts.storage_nbytes[storage])
        )


def plan_slice(program: list[Instruction], facts: ProgramFacts, value: int,
               dependencies: Dependencies | None = None) -> SlicePlan | None:
    """The elementwise program of one output value of a portable recipe, or None if it is not one.

    Pass one :class:`Dependencies` for many values of the same program to share its index."""
    target = facts.values[value]
    numel = target.numel
    if not _full(target, numel, facts):
        return None
    dependencies = dependencies if dependencies is not None else Dependencies(program, facts)
    indices = dependencies.of(value)
    full: set[int] = set()
    small: set[int] = set()  # single-element values, computed whole
    views: set[int] = set()  # other views into full storages: only filled with constants
    fills: set[int] = set()  # instructions filling such a view

    def kind(v: int) -> str | None:
        meta = facts.values[v]
        if meta.storage in full:
            if _full(meta, numel, facts):
                return "full"
            base = facts.values.get(meta.storage)
            return "view" if base is not None and base.dtype == meta.dtype else None
        if v in small:
            return "small"
        return None

    for i in indices:
        ins = program[i]
        if isinstance(ins, Literal):
            meta = facts.values[ins.out]
            if _full(meta, numel, facts):
                full.add(meta.storage)
            elif meta.numel == 1:
                small.add(ins.out)
            else:
                return None
            continue
        if not isinstance(ins, Call):
            return None
        info = facts.infos[i]
        packet = ins.op.split(".")[1]
        refs = call_refs(ins)
        kinds = [kind(r) for r in refs]
        if any(k is None for k in kinds):
            return None
        outs = [o for o in ins.outs if o is not None]
        if _is_view_op(info) and kinds and kinds[0] in ("full", "view"):
            for o in outs:
                out_kind = kind(o)
                if out_kind not in ("full", "view"):
                    return None
                if out_kind == "view":
                    views.add(o)
            continue
        if "view" in kinds:
            if packet in ("fill_", "zero_") and kinds[0] == "view" and all(k == "small" for k in kinds[1:]):
                fills.add(i)  # a constant written through a view (`weight[padding_idx].zero_()`)
                continue
            return None
        if packet in _FACTORIES or (packet == "arange" and _integer_arange(facts, outs)):
            pass
        elif info.is_random:
            if portable_key_of(ins, info) is None or ins.op not in ELEMENTWISE_DRAWS:
                return None
        elif packet in ELEMENTWISE_OPERATORS:
            if packet in ("erfinv", "erfinv_") and ins.op not in SUBSTITUTED_OPERATORS:
                return None
        else:
            return None
        for o in outs:
            meta = facts.values[o]
            if _full(meta, numel, facts) and (facts.storage_creator.get(meta.storage) == i or meta.storage in full):
                full.add(meta.storage)
            elif meta.numel == 1 and all(k == "small" for k in kinds) and not info.is_random:
                small.add(o)
            else:
                return None
    return SlicePlan(value, target.shape, numel, indices, full, views, fills)


def _is_view_op(info: Any) -> bool:
    """Whether an operator only makes views of its first argument (no data written or read)."""
    return (not info.written_args and not info.is_random and bool(info.aliased_outputs)
            and all(a == 0 for a in info.aliased_outputs))


def _integer_arange(facts: ProgramFacts, outs: list[int]) -> bool:
    return len(outs) == 1 and not facts.values[outs[0]].dtype.is_floating_point and not facts.values[outs[0]].dtype.is_complex


# ------------------------------------------------------------------------------------ execution
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
    place = _Placement(device, split_devices or device.type != "cpu")
    count = sum(length for _, length in segments)
    selection: dict[int, torch.Tensor] = {}  # storage -> its selected elements
    env: dict[int, torch.Tensor] = {}
    index_cache: list[torch.Tensor] = []

    def indices() -> torch.Tensor:
        if not index_cache:
            parts = [torch.arange(start, start + length, dtype=torch.int64) for start, length in segments]
            index_cache.append(torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64))
        return index_cache[0]

    def bind(v: int, tensor: torch.Tensor | None) -> None:
        storage = facts.values[v].storage
        if v in plan.views:
            env[v] = None  # type: ignore[assignment]  # never materialized: only its geometry is used
        elif storage in plan.full_storages:
            env[v] = selection.setdefault(storage, tensor)  # type: ignore[arg-type]
        else:
            env[v] = tensor  # type: ignore[assignment]

    def resolve(a: Any) -> Any:
        return _resolve_refs(a, env)

    for i in plan.indices:
        ins = program[i]
        if isinstance(ins, Literal):
            data = literal_tensor(ins)
            full = facts.values[ins.out].storage in plan.full_storages
            bind(ins.out, (data.reshape(-1)[indices()] if full else data).to(device))
            continue
        assert isinstance(ins, Call)
        try:
            _run_sliced_call(i, ins, facts, plan, seed, segments, count, indices, resolve, bind, place, selection)
        except RecipeError:
            raise
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ReplayError(f"program[{i}]: `{ins.op}` failed on a shard: {detail}") from None
    return selection[facts.values[plan.value].storage]


def _resolve_refs(a: Any, env: dict[int, torch.Tensor]) -> Any:
    """``a`` with every :class:`Ref` replaced by its tensor (generators are left as they are).  A
    module-level function on purpose: a recursive closure is a reference cycle that would keep ``env``
    (every slice) alive until the cyclic collector runs, which :func:`initrecipe.replay` pauses."""
    return map_arg(a, Ref, lambda ref: env[ref.id])


@dataclass(frozen=True, slots=True)
class _Placement:
    device: torch.device
    split: bool


def _run_sliced_call(i: int, ins: Call, facts: ProgramFacts, plan: SlicePlan, seed: int,
                     segments: list[tuple[int, int]], count: int, indices: Callable[[], torch.Tensor],
                     resolve: Callable[[Any], Any], bind: Callable[[int, torch.Tensor | None], None],
                     place: _Placement, selection: dict[int, torch.Tensor]) -> None:
    info = facts.infos[i]
    packet = ins.op.split(".")[1]
    outs = [o for o in ins.outs if o is not None]
    args = [resolve(a) for a in ins.args]
    kwargs = {k: resolve(v) for k, v in ins.kwargs.items()}
    if i in plan.fills:
        view = facts.values[ins.args[0].id]
        _fill_through_view(view, args[1] if packet == "fill_" else 0, indices(), selection[view.storage])
        return
    if _is_view_op(info) and outs and all(facts.values[o].storage in plan.full_storages for o in outs):
        for o in outs:
            bind(o, None if o in plan.views else selection[facts.values[o].storage])
        return
    creates = packet in _FACTORIES or packet == "arange" or (info.is_random and not info.overwrites_self)
    if creates and facts.values[outs[0]].storage in plan.full_storages:
        tensor = _factory(ins, info, packet, facts.values[outs[0]].dtype, count, indices, args, kwargs)
        tensor = tensor.to(place.device)
        if info.is_random:
            _draw(ins, info, args, kwargs, tensor, seed, segments)
        bind(outs[0], tensor)
        return
    if info.is_random:
        _draw(ins, info, args, kwargs, args[0], seed, segments)
        result: Any = args[0]
    elif ins.op in SUBSTITUTED_OPERATORS:
        result = run_substitute(ins, args, kwargs)
    elif place.split and not runs_on_device(ins):
        result = run_on_host(lambda a, k: info.op(*a, **k), args, kwargs, info.written_args, place.device)
    else:
        result = info.op(*[on_device(a, place.device) for a in args],
                         **{k: on_device(v, place.device) for k, v in kwargs.items()})
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    for o, t in zip(ins.outs, results):
        if o is not None:
            bind(o, t)


def _fill_through_view(view: TensorMeta, value: Any, selected: torch.Tensor, storage: torch.Tensor) -> None:
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


def _draw(ins: Call, info: Any, args: list[Any], kwargs: dict[str, Any], out: torch.Tensor, seed: int,
          segments: list[tuple[int, int]]) -> None:
    from initrecipe.rng.portable.samplers import sample_

    draw = describe_draw(ins, info, args, kwargs)
    key = portable_key_of(ins, info)
    assert key is not None
    sample_(out, draw.kind, stream_key(seed, key.stream, key.position), draw.params, segments)


def _factory(ins: Call, info: Any, packet: str, dtype: torch.dtype, count: int,
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
    how = _FACTORIES.get(packet, "empty")
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


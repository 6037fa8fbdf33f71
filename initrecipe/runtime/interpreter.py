"""Executes a planned program on real CPU tensors."""

from __future__ import annotations


from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch

from initrecipe.analysis.facts import Action, ProgramFacts, call_refs
from initrecipe.analysis.infer import recipe_defaults
from initrecipe.analysis.meta_outputs import flatten_outputs
from initrecipe.program.generators import generator_of
from initrecipe.rng.torch.positions import GeneratorPositions, Position
from initrecipe.rng.torch.generator_state import set_generator_state
from initrecipe.rng.torch.parallel_draws import ParallelDraws
from initrecipe.rng.torch.draw_costs import is_contiguous
from initrecipe.errors import RecipeError, ReplayError
from initrecipe.support import hugepages
from initrecipe.runtime.placement import on_device, run_on_host, runs_on_device
from initrecipe.rng.portable.semantics import portable_key_of, run_draw, run_substitute
from initrecipe.program.ir import Call, GenRef, Instruction, Literal, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.operators import CHUNKABLE_FILLS, SUBSTITUTED_OPERATORS
from initrecipe.program.walk import map_arg

__all__ = [
    "GeneratorBank",
    "PortableContext",
    "SequentialGenerators",
    "PositionedGenerators",
    "ParallelDraws",
    "execute",
    "call_op",
    "draw_on_scratch",
    "ScratchPool",
    "literal_tensor",
]


class GeneratorBank(Protocol):
    """Supplies the generator each random instruction draws from, positioned as the program says."""

    def for_draw(self, index: int, gen: int) -> torch.Generator:
        """The generator random instruction ``index`` draws from, in the state it must see."""

    def after_draw(self, index: int, gen: int) -> None:
        """Called once instruction ``index`` has drawn."""

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """Apply an RNG positioning instruction."""


@dataclass(frozen=True, slots=True)
class PortableContext:
    """How a ``portable`` recipe's own semantics apply: its ``seed`` keys every portable stream.

    ``device``: where the tensors are built.  Off the CPU, operators that are not bitwise
    identical on every device run on the CPU (:mod:`initrecipe.runtime.placement`); ``split_devices``
    applies that split on the CPU too (to test it where no accelerator is present).
    """

    seed: int
    device: torch.device = torch.device("cpu")
    split_devices: bool = False

    @property
    def off_host(self) -> bool:
        return self.split_devices or self.device.type != "cpu"


class SequentialGenerators:
    """Generators for a replay that runs every RNG instruction in program order."""

    def __init__(self, program: list[Instruction], count: int) -> None:
        self.generators = [torch.Generator(device="cpu") for _ in range(count)]
        self._save_points = {(ins.gen, ins.after) for ins in program if isinstance(ins, RngRestore)}
        self._saved: dict[tuple[int, int], torch.Tensor] = {}

    def for_draw(self, index: int, gen: int) -> torch.Generator:
        return self.generators[gen]

    def after_draw(self, index: int, gen: int) -> None:
        self._save(index, gen)

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        g = self.generators[ins.gen]
        if isinstance(ins, RngSeed):
            g.manual_seed(ins.seed)
        elif isinstance(ins, RngSetState):
            set_generator_state(g, ins.state, f"program[{index}]")
        else:
            g.set_state(self._saved[(ins.gen, ins.after)])
        self._save(index, ins.gen)

    def _save(self, index: int, gen: int) -> None:
        if (gen, index) in self._save_points:
            self._saved[(gen, index)] = self.generators[gen].get_state()


class PositionedGenerators:
    """Generators for a replay that skips the dead draws it can: every draw gets a generator
    standing where eager's stream stands at that draw, computed by a jump-ahead
    (:class:`~initrecipe.rng.torch.positions.GeneratorPositions`) when the draws before it did not
    run; a draw that follows the previous draw of its generator reuses that generator."""

    def __init__(self, program: list[Instruction], facts: ProgramFacts, count: int) -> None:
        self.positions = GeneratorPositions(program, facts, count)
        self._live: dict[int, tuple[torch.Generator, Position]] = {}  # gen -> a generator and where it stands
        self._handed_out: dict[int, torch.Generator] = {}

    def for_draw(self, index: int, gen: int) -> torch.Generator:
        start = self.positions.before(index)
        live = self._live.pop(gen, None)
        generator = live[0] if live is not None and live[1] == start else self.positions.generator(start)
        self._handed_out[index] = generator
        return generator

    def after_draw(self, index: int, gen: int) -> None:
        generator = self._handed_out.pop(index)
        if not self.positions.modelled(index):
            self.positions.settle(index, generator.get_state())
        self._live[gen] = (generator, self.positions.after(index))

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        self.positions.walk(index + 1)

    def drawn_elsewhere(self, index: int, gen: int) -> Position:
        """Where draw ``index`` starts, for a caller that runs it on generators of its own (its
        effect must be modelled); the bank moves past it."""
        start = self.positions.before(index)
        if not self.positions.modelled(index):  # pragma: no cover - callers check `modelled`
            raise AssertionError(f"program[{index}] is not modelled")
        self._live.pop(gen, None)
        return start


def literal_tensor(ins: Literal) -> torch.Tensor:
    """The constant tensor a :class:`Literal` instruction holds."""
    if not ins.data:
        return torch.empty(ins.shape, dtype=ins.dtype)
    flat = torch.frombuffer(bytearray(ins.data), dtype=ins.dtype)
    return flat.reshape(ins.shape)


def _resolve(value: Any, env: dict[int, torch.Tensor], generator: torch.Generator | None) -> Any:
    """An argument with its tensor references replaced by their tensors and generators by ``generator``."""
    return map_arg(value, (Ref, GenRef), lambda leaf: env[leaf.id] if isinstance(leaf, Ref) else generator)


class ScratchPool:
    """One reusable buffer for dead draws, so their pages are faulted in once, not per draw."""

    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def tensor(self, meta: Any) -> torch.Tensor:
        span = 1 + sum((size - 1) * stride for size, stride in zip(meta.shape, meta.stride)) if meta.numel else 0
        nbytes = span * meta.dtype.itemsize
        if nbytes > self._buffer.numel():
            self._buffer = torch.empty(0, dtype=torch.uint8)  # free the old one first
            self._buffer = hugepages.empty_strided((nbytes,), (1,), torch.uint8)
        return self._buffer[:nbytes].view(meta.dtype).as_strided(meta.shape, meta.stride)

    def release(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)


def _scratch(value: Any, facts: ProgramFacts, generator: torch.Generator | None, pool: ScratchPool) -> Any:
    """An argument with its tensor references replaced by uninitialized tensors of their geometry
    (from ``pool``) and generators by ``generator``."""
    return map_arg(
        value, (Ref, GenRef), lambda leaf: pool.tensor(facts.values[leaf.id]) if isinstance(leaf, Ref) else generator
    )


def call_op(ins: Call, info: Any, args: list[Any], kwargs: dict[str, Any], generator: torch.Generator | None, where: str) -> Any:
    """Invoke a call's operator, passing ``generator`` to a random operator."""
    if info.is_random and info.generator_arg not in kwargs:
        if info.arg_names.index(info.generator_arg) >= len(args):
            kwargs[info.generator_arg] = generator
    try:
        if torch.get_default_dtype() is not torch.float32:
            with recipe_defaults():
                return info.op(*args, **kwargs)
        return info.op(*args, **kwargs)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReplayError(f"{where}: `{ins.op}` failed: {detail}") from None


_CHUNK_ELEMENTS = 1 << 22


def _advance_in_chunks(ins: Call, info: Any, facts: ProgramFacts, generator: torch.Generator, where: str, pool: ScratchPool) -> bool:
    """Advance ``generator`` as a large dead fill would, using a bounded buffer; False if not applicable."""
    granule = CHUNKABLE_FILLS.get(ins.op)
    target = ins.args[0] if ins.args else None
    if granule is None or not isinstance(target, Ref):
        return False
    meta = facts.values[target.id]
    numel = meta.numel
    if (
        meta.dtype not in (torch.float32, torch.float64)
        or numel <= 2 * _CHUNK_ELEMENTS
        or not is_contiguous(meta.shape, meta.stride)
    ):
        return False
    rest = [_scratch(a, facts, generator, pool) for a in ins.args[1:]]
    kwargs = {k: _scratch(v, facts, generator, pool) for k, v in ins.kwargs.items()}
    buffer = torch.empty(_CHUNK_ELEMENTS + granule * 2, dtype=meta.dtype)
    done = 0
    while done < numel:
        count = min(_CHUNK_ELEMENTS, numel - done)
        if numel - done - count < max(granule, 1) * 2 and numel - done - count > 0:
            count = numel - done  # fold a short tail into this chunk (the buffer has room)
        call_op(ins, info, [buffer[:count], *rest], dict(kwargs), generator, where)
        done += count
    return True


def draw_on_scratch(
    ins: Call, info: Any, facts: ProgramFacts, generator: torch.Generator, where: str, pool: ScratchPool
) -> None:
    """Run a random call on uninitialized memory of the same shapes, only to advance ``generator``."""
    if _advance_in_chunks(ins, info, facts, generator, where, pool):
        return
    args = [_scratch(a, facts, generator, pool) for a in ins.args]
    kwargs = {k: _scratch(v, facts, generator, pool) for k, v in ins.kwargs.items()}
    call_op(ins, info, args, kwargs, generator, where)


def execute(
    program: list[Instruction],
    facts: ProgramFacts,
    actions: list[Action],
    env: dict[int, torch.Tensor],
    generators: GeneratorBank,
    *,
    release: dict[int, list[int]] | None = None,
    pool: ScratchPool | None = None,
    portable: PortableContext | None = None,
    parallel: ParallelDraws | None = None,
) -> Iterator[int]:
    """Run ``program`` as ``actions`` say, binding tensor values in ``env`` (see :func:`_execute`).

    Each step runs under torch's defaults, whatever the caller set: no default device
    (``torch.set_default_device``, ``with torch.device(...)``) and the ``float32`` default dtype a
    recipe is written for; the caller's settings are back in force while it holds a yielded step.
    """
    steps = _execute(program, facts, actions, env, generators, release=release, pool=pool, portable=portable,
                     parallel=parallel)
    try:
        while True:
            with torch._C.DisableTorchFunction():
                if torch.get_default_dtype() is torch.float32:
                    index = next(steps, None)
                else:
                    with recipe_defaults():
                        index = next(steps, None)
            if index is None:
                return
            yield index
    finally:
        steps.close()


def _execute(
    program: list[Instruction],
    facts: ProgramFacts,
    actions: list[Action],
    env: dict[int, torch.Tensor],
    generators: GeneratorBank,
    *,
    release: dict[int, list[int]] | None = None,
    pool: ScratchPool | None = None,
    portable: PortableContext | None = None,
    parallel: ParallelDraws | None = None,
) -> Iterator[int]:
    """Run ``program`` as ``actions`` say, binding tensor values in ``env``.

    A generator: it yields each instruction's index after running it, so a caller can stream out
    finished tensors.

    Args:
        release: instruction index -> value ids to drop from ``env`` after it (frees memory early).
        portable: for ``rng="portable"`` recipes: keyed draws and substituted operators get their
            portable meaning (:mod:`initrecipe.rng.portable.semantics`).
        parallel: split large random fills whose generator effect ``generators`` (a
            :class:`PositionedGenerators`) computes, and run the pieces on its worker threads
            (:mod:`initrecipe.rng.torch.parallel_draws`); the caller waits for a tensor's storage with
            ``parallel.wait`` before it uses the tensor.
    """
    pool = pool if pool is not None else ScratchPool()
    for i, action in enumerate(actions):
        if action == Action.SKIP:
            continue
        ins = program[i]
        if isinstance(ins, Call):
            info = facts.infos[i]
            if parallel is not None and parallel.enabled:
                parallel.wait(_storages_touched(ins, info, facts))
                if action == Action.RUN and _draw_in_pieces(i, ins, info, facts, env, generators, parallel, portable):
                    yield i
                    continue
            if action == Action.ALLOC:
                for o in ins.outs:
                    if o is not None:
                        meta = facts.values[o]
                        env[o] = hugepages.empty_strided(meta.shape, meta.stride, meta.dtype,
                                                         "cpu" if portable is None else portable.device)
            else:
                key = portable_key_of(ins, info) if portable is not None else None
                drawing = info.is_random and key is None
                gen_id = generator_of(ins, info) if drawing else -1
                generator = generators.for_draw(i, gen_id) if drawing else None
                if key is not None or (portable is not None and ins.op in SUBSTITUTED_OPERATORS):
                    assert portable is not None and action == Action.RUN
                    result = _run_portable(ins, info, env, facts, portable, i)
                elif action == Action.ADVANCE:
                    draw_on_scratch(ins, info, facts, generator, f"program[{i}]", pool)
                    result = None
                elif portable is not None and portable.off_host:
                    result = _run_placed(ins, info, env, generator, portable.device, drawing, f"program[{i}]")
                else:
                    args = [_resolve(a, env, generator) for a in ins.args]
                    kwargs = {k: _resolve(v, env, generator) for k, v in ins.kwargs.items()}
                    result = call_op(ins, info, args, kwargs, generator, f"program[{i}]")
                    if info.uninitialized_factory:
                        hugepages.advise(result)  # before anything writes to it
                if drawing:
                    generators.after_draw(i, gen_id)
                if action == Action.RUN:
                    outs = flatten_outputs(result)
                    for o, t in zip(ins.outs, outs):
                        if o is not None:
                            env[o] = t
                    if ins.out_meta is not None:
                        for (dtype, shape), t in zip(ins.out_meta, outs):
                            if tuple(t.shape) != shape or t.dtype != dtype:
                                raise ReplayError(
                                    f"program[{i}]: `{ins.op}` produced shape {list(t.shape)}, the recipe "
                                    f"recorded {list(shape)}: replay diverged from the recording"
                                )
        elif isinstance(ins, Literal):
            env[ins.out] = literal_tensor(ins) if portable is None else literal_tensor(ins).to(portable.device)
        else:
            generators.position(i, ins)
        if release is not None:
            for v in release.get(i, ()):
                env.pop(v, None)
        yield i


def _storages_touched(ins: Call, info: Any, facts: ProgramFacts) -> list[int]:
    """The storages whose contents a call may read or write (none for a view)."""
    if not info.written_args and info.aliased_outputs and all(a is not None for a in info.aliased_outputs):
        return []
    refs = call_refs(ins)
    refs.extend(o for o in ins.outs if o is not None)
    return [facts.values[r].storage for r in refs]


def _draw_in_pieces(i: int, ins: Call, info: Any, facts: ProgramFacts, env: dict[int, torch.Tensor],
                    generators: GeneratorBank, parallel: ParallelDraws, portable: PortableContext | None) -> bool:
    """Hand a large in-place fill from a torch generator to ``parallel``, piece by piece; False
    when it must run here (not splittable, not modelled, or off the CPU)."""
    if not (info.is_random and info.overwrites_self and isinstance(generators, PositionedGenerators)):
        return False
    if portable is not None and (portable.off_host or portable_key_of(ins, info) is not None):
        return False
    target = ins.args[0] if ins.args else None
    if not isinstance(target, Ref) or call_refs(ins) != [target.id]:
        return False
    tensor = env[target.id]
    pieces = parallel.pieces(ins.op, tensor)
    if pieces is None or not generators.positions.modelled(i):
        return False
    gen = generator_of(ins, info)
    start = generators.drawn_elsewhere(i, gen)
    per_element = 2 if tensor.dtype == torch.float64 else 1
    flat = tensor.view(-1)
    positions = generators.positions
    where = f"program[{i}]"

    def piece(lo: int, hi: int) -> None:
        generator = positions.generator(Position(start.segment, start.outputs + lo * per_element, start.cached))
        args = [flat[lo:hi], *(_resolve(a, env, generator) for a in ins.args[1:])]
        kwargs = {k: _resolve(v, env, generator) for k, v in ins.kwargs.items()}
        call_op(ins, info, args, kwargs, generator, where)

    parallel.submit(facts.values[target.id].storage, [lambda lo=lo, hi=hi: piece(lo, hi) for lo, hi in pieces])
    return True


def _run_portable(ins: Call, info: Any, env: dict[int, torch.Tensor], facts: ProgramFacts,
                  portable: PortableContext, i: int) -> Any:
    """Run a portable draw or a substituted operator of a portable recipe."""
    args = [_resolve(a, env, None) for a in ins.args]
    kwargs = {k: _resolve(v, env, None) for k, v in ins.kwargs.items()}
    try:
        if ins.op in SUBSTITUTED_OPERATORS:
            return run_substitute(ins, args, kwargs)
        out = next((o for o in ins.outs if o is not None), None)
        meta = facts.values[out] if out is not None else None
        out_meta = (meta.shape, meta.stride, meta.dtype) if meta is not None else ((), (), torch.float32)
        return run_draw(ins, info, args, kwargs, portable.seed, out_meta, portable.device)
    except RecipeError:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReplayError(f"program[{i}]: `{ins.op}` failed: {detail}") from None


def _run_placed(ins: Call, info: Any, env: dict[int, torch.Tensor], generator: torch.Generator | None,
                device: torch.device, drawing: bool, where: str) -> Any:
    """Run a call of a portable replay off the CPU: on ``device`` when that gives the CPU's bits,
    else on CPU copies (pinned draws, transcendental functions, reductions ...)."""
    args = [_resolve(a, env, generator) for a in ins.args]
    kwargs = {k: _resolve(v, env, generator) for k, v in ins.kwargs.items()}
    if not drawing and runs_on_device(ins):
        return call_op(ins, info, [on_device(a, device) for a in args],
                       {k: on_device(v, device) for k, v in kwargs.items()}, generator, where)
    return run_on_host(lambda a, k: call_op(ins, info, a, k, generator, where), args, kwargs, info.written_args, device)

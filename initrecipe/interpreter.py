"""Executes a planned program on real CPU tensors."""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch

from .analysis import Action, ProgramFacts, flatten_outputs, generator_of
from .errors import ReplayError
from .program import Call, GenRef, Instruction, Literal, Ref, RngRestore, RngSeed, RngSetState

__all__ = [
    "GeneratorBank",
    "SequentialGenerators",
    "execute",
    "call_op",
    "draw_on_scratch",
    "ScratchPool",
    "literal_tensor",
    "state_tensor",
]


class GeneratorBank(Protocol):
    """Supplies the generator each random instruction draws from, positioned as the program says."""

    def for_draw(self, index: int, gen: int) -> torch.Generator:
        """The generator random instruction ``index`` draws from, in the state it must see."""

    def after_draw(self, index: int, gen: int) -> None:
        """Called once instruction ``index`` has drawn."""

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """Apply an RNG positioning instruction."""


def state_tensor(state: bytes) -> torch.Tensor:
    """A generator state as the uint8 tensor ``torch.Generator.set_state`` takes."""
    return torch.frombuffer(bytearray(state), dtype=torch.uint8)


def set_generator_state(gen: torch.Generator, state: bytes | torch.Tensor, where: str) -> None:
    try:
        gen.set_state(state if isinstance(state, torch.Tensor) else state_tensor(state))
    except RuntimeError as exc:
        raise ReplayError(f"{where}: invalid generator state ({str(exc).splitlines()[0]})") from None


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


def literal_tensor(ins: Literal) -> torch.Tensor:
    """The constant tensor a :class:`Literal` instruction holds."""
    if not ins.data:
        return torch.empty(ins.shape, dtype=ins.dtype)
    flat = torch.frombuffer(bytearray(ins.data), dtype=ins.dtype)
    return flat.reshape(ins.shape)


def _resolve(value: Any, env: dict[int, torch.Tensor], generator: torch.Generator | None) -> Any:
    if isinstance(value, Ref):
        return env[value.id]
    if isinstance(value, GenRef):
        return generator
    if isinstance(value, (list, tuple)):
        return [_resolve(v, env, generator) for v in value]
    return value


class ScratchPool:
    """One reusable buffer for dead draws, so their pages are faulted in once, not per draw."""

    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def tensor(self, meta: Any) -> torch.Tensor:
        span = 1 + sum((size - 1) * stride for size, stride in zip(meta.shape, meta.stride)) if meta.numel else 0
        nbytes = span * meta.dtype.itemsize
        if nbytes > self._buffer.numel():
            self._buffer = torch.empty(0, dtype=torch.uint8)  # free the old one first
            self._buffer = torch.empty(nbytes, dtype=torch.uint8)
        return self._buffer[:nbytes].view(meta.dtype).as_strided(meta.shape, meta.stride)

    def release(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)


def _scratch(value: Any, facts: ProgramFacts, generator: torch.Generator | None, pool: ScratchPool) -> Any:
    if isinstance(value, Ref):
        return pool.tensor(facts.values[value.id])
    if isinstance(value, GenRef):
        return generator
    if isinstance(value, (list, tuple)):
        return [_scratch(v, facts, generator, pool) for v in value]
    return value


def call_op(ins: Call, info: Any, args: list[Any], kwargs: dict[str, Any], generator: torch.Generator | None, where: str) -> Any:
    """Invoke a call's operator, passing ``generator`` to a random operator."""
    if info.is_random and info.generator_arg not in kwargs:
        if info.arg_names.index(info.generator_arg) >= len(args):
            kwargs[info.generator_arg] = generator
    try:
        return info.op(*args, **kwargs)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReplayError(f"{where}: `{ins.op}` failed: {detail}") from None


def draw_on_scratch(
    ins: Call, info: Any, facts: ProgramFacts, generator: torch.Generator, where: str, pool: ScratchPool
) -> None:
    """Run a random call on uninitialized memory of the same shapes, only to advance ``generator``."""
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
) -> Iterator[int]:
    """Run ``program`` as ``actions`` say, binding tensor values in ``env``.

    A generator: it yields each instruction's index after running it, so a caller can stream out
    finished tensors.

    Args:
        release: instruction index -> value ids to drop from ``env`` after it (frees memory early).
    """
    pool = pool if pool is not None else ScratchPool()
    for i, action in enumerate(actions):
        if action == Action.SKIP:
            continue
        ins = program[i]
        if isinstance(ins, Call):
            info = facts.infos[i]
            if action == Action.ALLOC:
                for o in ins.outs:
                    if o is not None:
                        env[o] = facts.values[o].scratch()
            else:
                gen_id = generator_of(ins, info) if info.is_random else -1
                generator = generators.for_draw(i, gen_id) if info.is_random else None
                if action == Action.ADVANCE:
                    draw_on_scratch(ins, info, facts, generator, f"program[{i}]", pool)
                    result = None
                else:
                    args = [_resolve(a, env, generator) for a in ins.args]
                    kwargs = {k: _resolve(v, env, generator) for k, v in ins.kwargs.items()}
                    result = call_op(ins, info, args, kwargs, generator, f"program[{i}]")
                if info.is_random:
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
            env[ins.out] = literal_tensor(ins)
        else:
            generators.position(i, ins)
        if release is not None:
            for v in release.get(i, ()):
                env.pop(v, None)
        yield i

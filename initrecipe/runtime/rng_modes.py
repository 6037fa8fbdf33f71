"""One draw strategy per RNG mode: how the interpreter runs the calls whose meaning depends on it.

As ``jax``'s ``PRNGImpl`` lets a sampler ignore which generator runs, a :class:`DrawStrategy` lets
the interpreter's loop ignore which RNG mode a recipe replays in:

* :class:`TorchDraws` (``rng="torch"``): every random call draws from the ``torch.Generator`` a
  :class:`~initrecipe.runtime.generator_banks.GeneratorBank` hands out, positioned where eager's
  stream stands; dead draws run on scratch memory; large fills may be drawn in parallel pieces.
* :class:`PortableDraws` (``rng="portable"``): keyed draws are the recipe's Philox streams and
  substituted operators get their portable meaning (:mod:`initrecipe.rng.portable.semantics`);
  draws from a pinned ``torch.Generator`` run as in torch mode; tensors are built on the context's
  device, with the operators that are not bitwise identical there run on the CPU
  (:mod:`initrecipe.runtime.placement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from initrecipe.analysis.facts import Action, ProgramFacts, TensorMeta, call_refs
from initrecipe.errors import RecipeError, ReplayError
from initrecipe.program.generators import generator_of
from initrecipe.program.ir import Call, Literal, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.operators import SUBSTITUTED_OPERATORS, OpInfo
from initrecipe.rng.portable.semantics import portable_key_of, run_draw, run_substitute
from initrecipe.rng.torch.parallel_draws import ParallelDraws
from initrecipe.rng.torch.positions import Position
from initrecipe.runtime.calls import call_op, literal_tensor, resolve_arg
from initrecipe.runtime.generator_banks import GeneratorBank, PositionedGenerators
from initrecipe.runtime.placement import on_device, run_on_host, runs_on_device
from initrecipe.runtime.scratch import ScratchPool, draw_on_scratch
from initrecipe.support import hugepages
from initrecipe.support.display import failure_detail

__all__ = ["DrawStrategy", "PortableContext", "TorchDraws", "PortableDraws", "draw_strategy"]

_CPU = torch.device("cpu")


class DrawStrategy(Protocol):
    """What an RNG mode decides for the interpreter: where tensors are built, how a call runs, and
    how the generators move."""

    def literal(self, ins: Literal) -> torch.Tensor:
        """The tensor of a :class:`Literal`, where the replay builds its tensors."""

    def allocate(self, meta: TensorMeta) -> torch.Tensor:
        """Uninitialized memory for an output whose contents the plan does not need."""

    def run_call(self, i: int, ins: Call, info: OpInfo, action: Action, env: dict[int, torch.Tensor]) -> Any:
        """Run call ``i`` (``action`` is ``RUN`` or ``ADVANCE``) on the tensors of ``env``; its result."""

    def draw_in_pieces(self, i: int, ins: Call, info: OpInfo, env: dict[int, torch.Tensor],
                       parallel: ParallelDraws) -> bool:
        """Hand call ``i``, a large random fill, to ``parallel``; False when it must run here."""

    def position(self, i: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """Apply an RNG positioning instruction."""


@dataclass(frozen=True, slots=True)
class PortableContext:
    """How a ``portable`` recipe's own semantics apply: its ``seed`` keys every portable stream.

    ``device``: where the tensors are built.  Off the CPU, operators that are not bitwise
    identical on every device run on the CPU (:mod:`initrecipe.runtime.placement`); ``split_devices``
    applies that split on the CPU too (to test it where no accelerator is present).
    """

    seed: int
    device: torch.device = _CPU
    split_devices: bool = False

    @property
    def off_host(self) -> bool:
        """Whether operators are placed (some run on the device, the others on CPU copies)."""
        return self.split_devices or self.device.type != "cpu"


class TorchDraws:
    """``rng="torch"``: random calls draw from the generators of a bank, on the CPU."""

    def __init__(self, facts: ProgramFacts, generators: GeneratorBank) -> None:
        self.facts = facts
        self.generators = generators
        self.pool = ScratchPool()

    def literal(self, ins: Literal) -> torch.Tensor:
        return literal_tensor(ins)

    def allocate(self, meta: TensorMeta) -> torch.Tensor:
        return hugepages.empty_strided(meta.shape, meta.stride, meta.dtype, "cpu")

    def position(self, i: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        self.generators.position(i, ins)

    def run_call(self, i: int, ins: Call, info: OpInfo, action: Action, env: dict[int, torch.Tensor]) -> Any:
        where = f"program[{i}]"
        drawing = info.is_random
        gen_id = generator_of(ins, info) if drawing else -1
        generator = self.generators.for_draw(i, gen_id) if drawing else None
        if action == Action.ADVANCE:
            draw_on_scratch(ins, info, self.facts, generator, where, self.pool)
            result = None
        else:
            result = self._run_here(ins, info, env, generator, where)
        if drawing:
            self.generators.after_draw(i, gen_id)
        return result

    def _run_here(self, ins: Call, info: OpInfo, env: dict[int, torch.Tensor], generator: torch.Generator | None,
                  where: str) -> Any:
        """Run a call on the CPU tensors of ``env``."""
        args = [resolve_arg(a, env, generator) for a in ins.args]
        kwargs = {k: resolve_arg(v, env, generator) for k, v in ins.kwargs.items()}
        result = call_op(ins, info, args, kwargs, generator, where)
        if info.uninitialized_factory:
            hugepages.advise(result)  # before anything writes to it
        return result

    def draw_in_pieces(self, i: int, ins: Call, info: OpInfo, env: dict[int, torch.Tensor],
                       parallel: ParallelDraws) -> bool:
        """Hand a large in-place fill from a torch generator to ``parallel``, piece by piece; False
        when it must run here (not splittable, or its effect on the generator not modelled)."""
        generators = self.generators
        if not (info.is_random and info.overwrites_self and isinstance(generators, PositionedGenerators)):
            return False
        target = ins.args[0] if ins.args else None
        if not isinstance(target, Ref) or call_refs(ins) != [target.id]:
            return False
        tensor = env[target.id]
        pieces = parallel.pieces(ins.op, tensor)
        start = generators.drawn_elsewhere(i, generator_of(ins, info)) if pieces is not None else None
        if pieces is None or start is None:
            return False
        per_element = 2 if tensor.dtype == torch.float64 else 1
        flat = tensor.view(-1)
        positions = generators.positions
        where = f"program[{i}]"

        def piece(lo: int, hi: int) -> None:
            generator = positions.generator(Position(start.segment, start.outputs + lo * per_element, start.cached))
            args = [flat[lo:hi], *(resolve_arg(a, env, generator) for a in ins.args[1:])]
            kwargs = {k: resolve_arg(v, env, generator) for k, v in ins.kwargs.items()}
            call_op(ins, info, args, kwargs, generator, where)

        parallel.submit(self.facts.values[target.id].storage, [lambda lo=lo, hi=hi: piece(lo, hi) for lo, hi in pieces])
        return True


class PortableDraws(TorchDraws):
    """``rng="portable"``: keyed draws and substituted operators get their portable meaning; draws
    from a pinned ``torch.Generator`` run as :class:`TorchDraws` runs them; tensors are built on the
    context's device."""

    def __init__(self, facts: ProgramFacts, generators: GeneratorBank, context: PortableContext) -> None:
        super().__init__(facts, generators)
        self.context = context

    def literal(self, ins: Literal) -> torch.Tensor:
        return literal_tensor(ins).to(self.context.device)

    def allocate(self, meta: TensorMeta) -> torch.Tensor:
        return hugepages.empty_strided(meta.shape, meta.stride, meta.dtype, self.context.device)

    def run_call(self, i: int, ins: Call, info: OpInfo, action: Action, env: dict[int, torch.Tensor]) -> Any:
        if portable_key_of(ins, info) is not None or ins.op in SUBSTITUTED_OPERATORS:
            assert action == Action.RUN
            return self._run_portable(i, ins, info, env)
        return super().run_call(i, ins, info, action, env)

    def _run_portable(self, i: int, ins: Call, info: OpInfo, env: dict[int, torch.Tensor]) -> Any:
        """Run a portable draw or a substituted operator."""
        args = [resolve_arg(a, env, None) for a in ins.args]
        kwargs = {k: resolve_arg(v, env, None) for k, v in ins.kwargs.items()}
        try:
            if ins.op in SUBSTITUTED_OPERATORS:
                return run_substitute(ins, args, kwargs)
            out = next((o for o in ins.outs if o is not None), None)
            meta = self.facts.values[out] if out is not None else None
            out_meta = (meta.shape, meta.stride, meta.dtype) if meta is not None else ((), (), torch.float32)
            return run_draw(ins, info, args, kwargs, self.context.seed, out_meta, self.context.device)
        except RecipeError:
            raise
        except Exception as exc:
            raise ReplayError(f"program[{i}]: `{ins.op}` failed: {failure_detail(exc)}") from None

    def _run_here(self, ins: Call, info: OpInfo, env: dict[int, torch.Tensor], generator: torch.Generator | None,
                  where: str) -> Any:
        """Run a call on the CPU, or off it: on the device when that gives the CPU's bits, else on
        CPU copies (pinned draws, transcendental functions, reductions ...)."""
        if not self.context.off_host:
            return super()._run_here(ins, info, env, generator, where)
        device = self.context.device
        args = [resolve_arg(a, env, generator) for a in ins.args]
        kwargs = {k: resolve_arg(v, env, generator) for k, v in ins.kwargs.items()}
        if not info.is_random and runs_on_device(ins):
            return call_op(ins, info, [on_device(a, device) for a in args],
                           {k: on_device(v, device) for k, v in kwargs.items()}, generator, where)
        return run_on_host(lambda a, k: call_op(ins, info, a, k, generator, where), args, kwargs, info.written_args,
                           device)

    def draw_in_pieces(self, i: int, ins: Call, info: OpInfo, env: dict[int, torch.Tensor],
                       parallel: ParallelDraws) -> bool:
        """As in torch mode, for a draw from a pinned generator on the CPU."""
        if self.context.off_host or portable_key_of(ins, info) is not None:
            return False
        return super().draw_in_pieces(i, ins, info, env, parallel)


def draw_strategy(facts: ProgramFacts, generators: GeneratorBank, portable: PortableContext | None) -> DrawStrategy:
    """The draw strategy of a replay: portable when ``portable`` is given, else torch."""
    if portable is None:
        return TorchDraws(facts, generators)
    return PortableDraws(facts, generators, portable)

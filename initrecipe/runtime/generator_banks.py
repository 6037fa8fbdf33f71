"""Generator banks: the torch generators a replay's random calls draw from, each positioned where
eager's stream stands at that call (:class:`GeneratorBank` and its two replay implementations)."""

from __future__ import annotations

from typing import Protocol

import torch

from initrecipe.analysis.facts import ProgramFacts
from initrecipe.program.ir import Instruction, RngRestore, RngSeed, RngSetState
from initrecipe.rng.torch.generator_state import set_generator_state
from initrecipe.rng.torch.positions import GeneratorPositions, Position

__all__ = ["GeneratorBank", "SequentialGenerators", "PositionedGenerators"]


class GeneratorBank(Protocol):
    """Supplies the generator each random instruction draws from, positioned as the program says."""

    def for_draw(self, index: int, gen: int) -> torch.Generator:
        """The generator random instruction ``index`` draws from, in the state it must see."""

    def after_draw(self, index: int, gen: int) -> None:
        """Called once instruction ``index`` has drawn."""

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """Apply an RNG positioning instruction."""


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

    def drawn_elsewhere(self, index: int, gen: int) -> Position | None:
        """Where draw ``index`` starts, for a caller that runs it on generators of its own, and the
        bank moves past it; None when its effect is not modelled (it must run through :meth:`for_draw`)."""
        if not self.positions.modelled(index):
            return None
        start = self.positions.before(index)
        self._live.pop(gen, None)
        return start

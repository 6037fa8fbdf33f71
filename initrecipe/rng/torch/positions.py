"""Where each generator of a program stands before and after each random call, by arithmetic.

A program positions torch generators (:class:`~initrecipe.program.ir.RngSeed`, ``RngSetState``,
``RngRestore``) and draws from them.  :class:`GeneratorPositions` walks those instructions in
program order and gives every draw a :class:`Position`: a *segment* (a stretch of one generator's
stream that starts at a known state) and how many 32-bit outputs into the segment the draw
starts.  Draws the consumption model covers (:mod:`initrecipe.rng.torch.draw_costs`) only move the position;
a draw outside it ends its segment, and the next one starts at whatever state the draw leaves,
which the caller reports with :meth:`GeneratorPositions.settle` after running it.  Any position
can be turned into a real generator state (:meth:`GeneratorPositions.state`), by a jump-ahead
(:mod:`initrecipe.rng.torch.generator_state`) rather than by drawing.

Replay uses this to skip dead draws and to start each live draw (or each piece of one) on its own
generator; recording uses it to leave torch's generators where eager would.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field


import torch

from initrecipe.rng.torch.generator_state import GeneratorState, advance, set_generator_state
from initrecipe.rng.torch.draw_costs import DrawCost, ProgramShapes, cost_of, gaussian_pairs, pair_sample
from initrecipe.rng.portable.semantics import draws_from_generator
from initrecipe.errors import RecipeError
from initrecipe.program.generators import generator_of
from initrecipe.program.ir import Call, Instruction, RngRestore, RngSeed, RngSetState

__all__ = ["Position", "GeneratorPositions", "modelled_draws"]

_BASE = -1  # Position.cached: the segment's starting state's own cached sample (if it has one)


@dataclass(frozen=True, slots=True)
class Position:
    """``outputs`` 32-bit outputs into segment ``segment``; ``cached``: None when no Box–Muller
    sample is cached, -1 for the segment start's own cached sample (if any), else the offset (in
    outputs, within the segment) of the pair whose second sample is cached."""

    segment: int
    outputs: int
    cached: int | None


@dataclass(slots=True)
class _Segment:
    base: GeneratorState | None  # None until `settle` reports it (or for an opaque segment)
    opaque: bool = False  # starts at a state outside the model: only its start is reachable
    raw: torch.Tensor | None = None  # an opaque segment's starting state, as torch holds it
    anchors: list[tuple[int, GeneratorState]] = field(default_factory=list)  # materialized states, by offset
    pairs: dict[int, float] = field(default_factory=dict)  # pair offset -> its cached second sample


def _canonical(state: bytes | torch.Tensor, where: str = "a generator state") -> tuple[GeneratorState | None, torch.Tensor]:
    """A state as torch normalizes it on ``set_state``, decoded (None when outside the model).
    :class:`~initrecipe.errors.ReplayError` when torch refuses the state."""
    generator = torch.Generator(device="cpu")
    set_generator_state(generator, state, where)
    normalized = generator.get_state()
    return GeneratorState.decode(normalized), normalized


class GeneratorPositions:
    """Positions of every generator of ``program`` at each of its RNG instructions.

    Args:
        program: the instructions (may grow while recording; :meth:`walk` goes as far as asked).
        facts: the program's :class:`~initrecipe.analysis.facts.ProgramFacts` (shapes of drawn tensors).
        count: number of generators.
        model: False turns the consumption model off: every draw ends its segment (to be settled).
    """

    def __init__(self, program: list[Instruction], facts: ProgramShapes, count: int, *, model: bool = True) -> None:
        self._program = program
        self._facts = facts
        self._model = model
        self._segments: list[_Segment] = []
        self._current: list[Position] = []
        self._before: dict[int, Position] = {}
        self._after: dict[int, Position] = {}
        self._costs: dict[int, DrawCost | None] = {}
        self._awaiting: dict[int, int] = {}  # unmodelled draw index -> the segment it starts
        self._walked = 0
        self._lock = threading.Lock()
        for _ in range(count):
            self._add_generator()

    # ------------------------------------------------------------------ walking
    def _add_generator(self) -> None:
        default, _ = _canonical(torch.Generator(device="cpu").get_state())
        self._current.append(self._start_segment(_Segment(default)))

    def _start_segment(self, segment: _Segment) -> Position:
        self._segments.append(segment)
        return Position(len(self._segments) - 1, 0, _BASE)

    def cost(self, index: int) -> DrawCost | None:
        """The modelled cost of draw ``index`` (None: outside the model, or its segment is opaque)."""
        if index not in self._costs:
            ins = self._program[index]
            info = self._facts.infos[index]
            self._costs[index] = cost_of(ins, info, self._facts) if self._model else None
        return self._costs[index]

    def walk(self, upto: int) -> None:
        """Account for every RNG instruction before ``upto``."""
        while self._walked < min(upto, len(self._program)):
            i = self._walked
            ins = self._program[i]
            if isinstance(ins, RngSeed):
                self._grow(ins.gen)
                base = GeneratorState.of(torch.Generator(device="cpu").manual_seed(ins.seed))
                self._after[i] = self._current[ins.gen] = self._start_segment(_Segment(base))
            elif isinstance(ins, RngSetState):
                self._grow(ins.gen)
                decoded, normalized = _canonical(ins.state, f"program[{i}]")
                segment = _Segment(decoded, opaque=decoded is None, raw=normalized)
                self._after[i] = self._current[ins.gen] = self._start_segment(segment)
            elif isinstance(ins, RngRestore):
                self._grow(ins.gen)
                self._after[i] = self._current[ins.gen] = self._after[ins.after]
            elif isinstance(ins, Call) and self._draws_from_generator(i):
                gen = self._generator(i)
                self._grow(gen)
                before = self._current[gen]
                self._before[i] = before
                opaque = self._segments[before.segment].opaque
                cost = None if opaque else self.cost(i)
                if cost is None:
                    # Its successor segment starts wherever running the draw leaves the generator
                    # (outside the model too when this one is).
                    after = self._start_segment(_Segment(None, opaque=opaque))
                    self._awaiting[i] = after.segment
                else:
                    after = self._moved(before, cost)
                self._after[i] = self._current[gen] = after
            self._walked += 1

    def _grow(self, gen: int) -> None:
        while len(self._current) <= gen:
            self._add_generator()

    def _draws_from_generator(self, index: int) -> bool:
        return draws_from_generator(self._program[index], self._facts.infos[index])

    def _generator(self, index: int) -> int:
        return generator_of(self._program[index], self._facts.infos[index])

    def _moved(self, position: Position, cost: DrawCost) -> Position:
        if not cost.gaussians:
            return Position(position.segment, position.outputs + cost.outputs, position.cached)
        cached = self._is_cached(position)
        pairs, leaves_cached = gaussian_pairs(cost.gaussians, cached)
        outputs = position.outputs + 4 * pairs
        if leaves_cached is None:
            return Position(position.segment, outputs, position.cached)
        return Position(position.segment, outputs, outputs - 4 if leaves_cached else None)

    def _is_cached(self, position: Position) -> bool:
        if position.cached is None:
            return False
        if position.cached >= 0:
            return True
        base = self._segments[position.segment].base
        if base is None:
            raise RuntimeError("internal error: a draw's position depends on a state not yet settled")
        return base.double_normal is not None

    # ------------------------------------------------------------------ queries
    def before(self, index: int) -> Position:
        """The position draw ``index`` starts at."""
        self.walk(index + 1)
        return self._before[index]

    def after(self, index: int) -> Position:
        """The position right after RNG instruction ``index``."""
        self.walk(index + 1)
        return self._after[index]

    def modelled(self, index: int) -> bool:
        """Whether draw ``index``'s effect on its generator is computed rather than run."""
        self.walk(index + 1)
        return index not in self._awaiting

    def settle(self, index: int, state: torch.Tensor) -> None:
        """Report the state an unmodelled draw left its generator in (its segment starts there)."""
        number = self._awaiting.pop(index, None)
        if number is None:
            return
        segment = self._segments[number]
        decoded, normalized = _canonical(state)
        if segment.opaque:
            segment.raw = normalized
        elif decoded is None:  # pragma: no cover - torch's kernels leave states torch writes
            raise RuntimeError("internal error: a random draw left the generator in a state initrecipe cannot read")
        else:
            segment.base = decoded

    def state(self, position: Position) -> torch.Tensor:
        """The generator state at ``position`` (a uint8 tensor for ``torch.Generator.set_state``)."""
        segment = self._segments[position.segment]
        if segment.opaque:
            if position.outputs != 0 or segment.raw is None:  # pragma: no cover - opaque segments end at their first draw
                raise RuntimeError("internal error: a position inside an unmodelled generator state")
            return segment.raw.clone()
        return self.generator_state(position).tensor()

    def generator_state(self, position: Position) -> GeneratorState:
        """:meth:`state` as a :class:`~initrecipe.rng.torch.generator_state.GeneratorState`."""
        segment = self._segments[position.segment]
        if segment.base is None:
            raise RuntimeError("internal error: a position in a segment whose start is not settled yet")
        with self._lock:
            anchors = list(segment.anchors)
        k = bisect.bisect_right(anchors, position.outputs, key=lambda a: a[0]) - 1
        start_offset, start = anchors[k] if k >= 0 else (0, segment.base)
        state = advance(start, position.outputs - start_offset)
        with self._lock:
            offsets = [a[0] for a in segment.anchors]
            j = bisect.bisect_left(offsets, position.outputs)
            if j == len(offsets) or offsets[j] != position.outputs:
                segment.anchors.insert(j, (position.outputs, state.with_double_normal(segment.base.double_normal)))
                if len(segment.anchors) > 64:
                    segment.anchors.pop(0)
        return state.with_double_normal(self._cached_value(position))

    def generator(self, position: Position) -> torch.Generator:
        """A new CPU generator at ``position``."""
        generator = torch.Generator(device="cpu")
        generator.set_state(self.state(position))
        return generator

    def _cached_value(self, position: Position) -> float | None:
        segment = self._segments[position.segment]
        if position.cached is None:
            return None
        if position.cached == _BASE:
            assert segment.base is not None
            return segment.base.double_normal
        value = segment.pairs.get(position.cached)
        if value is None:
            start = self.generator_state(Position(position.segment, position.cached, None))
            value = pair_sample(start)
            segment.pairs[position.cached] = value
        return value


def modelled_draws(program: list[Instruction], facts: ProgramShapes) -> set[int]:
    """The draws of ``program`` whose effect on their generator replay computes instead of running
    them: their consumption is modelled and their generator holds a state the model describes.

    Decided statically, with the rules :class:`GeneratorPositions` applies while it walks: a
    generator set to a state outside the model (a crafted ``RngSetState``) stays outside it, draw
    after draw, until it is reseeded or set again.
    """
    opaque_now: dict[int, bool] = {}  # generator -> its current segment is opaque
    opaque_after: dict[int, bool] = {}  # RNG instruction -> the segment after it is opaque
    out: set[int] = set()
    for i, ins in enumerate(program):
        if isinstance(ins, RngSeed):
            gen, opaque = ins.gen, False
        elif isinstance(ins, RngSetState):
            try:
                gen, opaque = ins.gen, _canonical(ins.state)[0] is None
            except RecipeError:  # torch refuses the state: replay reports it when it gets there
                gen, opaque = ins.gen, True
        elif isinstance(ins, RngRestore):
            gen, opaque = ins.gen, opaque_after.get(ins.after, False)
        elif isinstance(ins, Call) and draws_from_generator(ins, facts.infos[i]):
            gen = generator_of(ins, facts.infos[i])
            opaque = opaque_now.get(gen, False)
            if not opaque and cost_of(ins, facts.infos[i], facts) is not None:
                out.add(i)
        else:
            continue
        opaque_now[gen] = opaque_after[i] = opaque
    return out

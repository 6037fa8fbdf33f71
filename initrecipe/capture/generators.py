"""Tracking torch generators while recording, and replaying their draws lazily for the recorder.

While a constructor is recorded no random number is drawn: random operators run on fake tensors.
The real generators must nonetheless tell the recorder when user code repositions them
(``torch.manual_seed``, ``Generator.manual_seed``, ``set_rng_state``, ``fork_rng``).  After every
draw the recorder therefore reseeds the real generator with a unique *marker* seed; at the next
draw, ``initial_seed()`` says whether the generator still holds that marker (the stream goes on),
holds an older marker (``fork_rng`` or ``set_rng_state`` restored a saved state), or holds
anything else (user code reseeded it).
"""

from __future__ import annotations

import secrets
from typing import Callable

import torch

from initrecipe.analysis.facts import ProgramFacts
from initrecipe.errors import RecordError
from initrecipe.rng.portable.semantics import draws_from_generator
from initrecipe.rng.torch.positions import GeneratorPositions
from initrecipe.runtime.scratch import ScratchPool, draw_on_scratch
from initrecipe.program.ir import Call, Instruction, RngRestore, RngSeed, RngSetState, tensor_bytes

__all__ = ["GeneratorTracker", "ShadowGenerators", "seeded_state_matches"]


def seeded_state_matches(generator: torch.Generator) -> bool:
    """Whether ``generator`` is exactly in the state ``manual_seed(generator.initial_seed())`` gives."""
    probe = torch.Generator(device="cpu")
    probe.manual_seed(generator.initial_seed())
    return torch.equal(probe.get_state(), generator.get_state())


class GeneratorTracker:
    """Assigns generator ids, emits positioning instructions, and manages marker seeds."""

    def __init__(
        self,
        emit: Callable[[Instruction], int],
        state_after: Callable[[int, int], torch.Tensor],
    ) -> None:
        """``state_after(gen id, instruction index)``: the true state of a generator right after an
        instruction; needed when user code copies one tracked generator's state into another
        (which then holds the first one's placeholder)."""
        self._emit = emit
        self._state_after = state_after
        self._objects: list[torch.Generator] = []
        self._ids: dict[int, int] = {}
        self._marker_of: list[int] = []  # gen id -> marker seed currently expected
        self._markers: dict[int, tuple[int, int]] = {}  # marker seed -> (gen id, instruction index)
        self._original_states: list[torch.Tensor] = []
        self._next_marker = (1 << 62) | (secrets.randbits(40) << 20)

    @property
    def count(self) -> int:
        return len(self._objects)

    @property
    def objects(self) -> list[torch.Generator]:
        return list(self._objects)

    def start(self, generator: torch.Generator, seed: int | None) -> int:
        """Register ``generator`` and emit its initial position (``seed``, or its current state)."""
        gid = len(self._objects)
        self._objects.append(generator)
        self._ids[id(generator)] = gid
        self._original_states.append(generator.get_state())
        self._marker_of.append(-1)
        if seed is not None:
            probe = torch.Generator(device="cpu")
            probe.manual_seed(seed)  # validates the seed's range the way torch.manual_seed does
            index = self._emit(RngSeed(gid, probe.initial_seed()))
        else:
            index = self._emit(self._capture(gid, generator))
        self._set_marker(gid, index)
        return gid

    def before_draw(self, generator: torch.Generator | None) -> int:
        """The id of the generator a draw uses, emitting an instruction if user code moved it."""
        if generator is None:
            generator = torch.default_generator
        if generator.device.type != "cpu":
            raise RecordError(
                f"a random draw uses a `{generator.device}` generator; recorded constructors must draw "
                "from CPU generators (eager CPU init is what rng='torch' reproduces)"
            )
        gid = self._ids.get(id(generator))
        if gid is None:
            return self.start(generator, None)
        current = generator.initial_seed()
        if current == self._marker_of[gid]:
            return gid
        known = self._markers.get(current)
        if known is not None and known[0] == gid:
            index = self._emit(RngRestore(gid, known[1]))
        else:
            index = self._emit(self._capture(gid, generator))
        self._set_marker(gid, index)
        return gid

    def peek(self, generator: torch.Generator) -> int | None:
        """The id of ``generator`` if it is tracked, without emitting anything."""
        return self._ids.get(id(generator))

    def moved(self, gid: int) -> bool:
        """Whether user code repositioned generator ``gid`` since the tracker last saw it."""
        return self._objects[gid].initial_seed() != self._marker_of[gid]

    def after_draw(self, gid: int, index: int) -> None:
        """Record that instruction ``index`` drew from generator ``gid``."""
        self._set_marker(gid, index)

    def position_of(self, gid: int) -> int | None:
        """The instruction whose resulting state generator ``gid`` holds now, or None if user code set it."""
        known = self._markers.get(self._objects[gid].initial_seed())
        if known is not None and known[0] == gid:
            return known[1]
        return None

    def restore_originals(self) -> None:
        """Put every tracked generator back into the state it had when first seen."""
        for generator, state in zip(self._objects, self._original_states):
            generator.set_state(state)

    def _capture(self, gid: int, generator: torch.Generator) -> Instruction:
        known = self._markers.get(generator.initial_seed())
        if known is not None and seeded_state_matches(generator):
            # A copy of another tracked generator's state (`torch.set_rng_state(g.get_state())`):
            # it holds that generator's placeholder, so store the state eager would have copied.
            return RngSetState(gid, tensor_bytes(self._state_after(*known)))
        if seeded_state_matches(generator):
            return RngSeed(gid, generator.initial_seed())
        return RngSetState(gid, tensor_bytes(generator.get_state()))

    def _set_marker(self, gid: int, index: int) -> None:
        marker = self._next_marker
        self._next_marker += 1
        self._objects[gid].manual_seed(marker)
        self._marker_of[gid] = marker
        self._markers[marker] = (gid, index)


class ShadowGenerators:
    """Generator states of a program under construction, computed when asked and remembered.

    Draws the consumption model covers (:mod:`initrecipe.rng.torch.draw_costs`) only move a generator's
    position, and a state is computed from a position by a jump-ahead
    (:class:`~initrecipe.rng.torch.positions.GeneratorPositions`), so leaving the generators where
    eager would after a 7-billion-parameter constructor costs milliseconds.  Draws outside the
    model run for real, once, when a later state is first asked for: on scratch memory, or, for a
    draw whose consumption depends on the values of its inputs (``poisson``), by computing those
    inputs with ``materialize_inputs(index)``.
    """

    def __init__(
        self,
        program: list[Instruction],
        facts: ProgramFacts,
        materialize_inputs: Callable[[int], None],
    ) -> None:
        self._program = program
        self._facts = facts
        self._positions = GeneratorPositions(program, facts, 0)
        self._run_value_dependent = materialize_inputs
        self._pool = ScratchPool()
        self._settled = 0  # every unmodelled draw before this instruction has run
        self._handed_out: dict[int, torch.Generator] = {}  # draw index -> generator from for_draw

    def _settle(self, upto: int) -> None:
        """Run the unmodelled draws before ``upto``, so that every position before it is known."""
        while self._settled < min(upto, len(self._program)):
            i = self._settled
            self._settled += 1
            ins = self._program[i]
            info = self._facts.infos[i]
            if not (isinstance(ins, Call) and draws_from_generator(ins, info)) or self._positions.modelled(i):
                continue
            if info.value_dependent_random:
                self._run_value_dependent(i)  # runs the draw through for_draw/after_draw
                if not self._positions.modelled(i):  # pragma: no cover - materialization ran it
                    raise AssertionError(f"program[{i}] was not run by its materialization")
                continue
            generator = self._positions.generator(self._positions.before(i))
            draw_on_scratch(ins, info, self._facts, generator, f"program[{i}]", self._pool)
            self._positions.settle(i, generator.get_state())

    def state_after(self, gid: int, index: int) -> torch.Tensor:
        """Generator ``gid``'s state right after instruction ``index`` (an RNG instruction)."""
        self._settle(index + 1)
        return self._positions.state(self._positions.after(index))

    # GeneratorBank protocol -------------------------------------------------------------
    def for_draw(self, index: int, gen: int) -> torch.Generator:
        self._settle(index)
        generator = self._positions.generator(self._positions.before(index))
        self._handed_out[index] = generator
        return generator

    def after_draw(self, index: int, gen: int) -> None:
        generator = self._handed_out.pop(index)
        if not self._positions.modelled(index):
            self._positions.settle(index, generator.get_state())

    def position(self, index: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """Nothing to do: positions are computed as draws ask for them."""

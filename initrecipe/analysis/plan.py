"""Execution plans: what the interpreter does with each instruction (one :class:`Action` each).

Planning is a backward liveness pass over storages: an instruction runs only when a later
instruction, or a requested output, reads what it writes.  Random draws whose results are dead
still run on scratch memory in ``torch`` mode, because they advance the generator that later live
draws read; dead portable draws (keyed streams, ``rng="portable"``) are skipped.
"""

from __future__ import annotations

from typing import Iterable

from initrecipe.analysis.facts import Action, ProgramFacts, call_refs, ref_positions
from initrecipe.program.ir import Call, Instruction, Literal, Ref
from initrecipe.program.operators import OpInfo
from initrecipe.program.walk import arg_at
from initrecipe.rng.portable.semantics import draws_from_generator

__all__ = ["plan_execution", "read_storages"]


def plan_execution(
    program: list[Instruction],
    facts: ProgramFacts,
    targets: Iterable[int],
    *,
    end: int | None = None,
    advance_dead_draws: bool = True,
    available: dict[int, int] | None = None,
    draw_in_place: bool = True,
    computed_draws: set[int] | frozenset[int] = frozenset(),
) -> list[Action]:
    """Decide, for each instruction before ``end``, what the interpreter must do.

    Args:
        targets: value ids whose tensors and contents are wanted after instruction ``end - 1``.
        advance_dead_draws: run dead random draws (``torch`` mode), or skip them.
        computed_draws: draws whose effect on their generator the interpreter's generator bank
            computes without running them (:func:`initrecipe.rng.torch.positions.modelled_draws`):
            skipped when their values are dead, even with ``advance_dead_draws``.
        draw_in_place: run a dead in-place draw on its own tensor when the plan builds that
            tensor's storage anyway (fast, like eager); otherwise dead draws use scratch memory.
        available: storage id -> index of the instruction after which the caller holds that storage
            (its base tensor, bound to the value id equal to the storage id) with its contents as of
            that instruction.  Entries whose contents are needed as of an earlier point are removed
            from the dict, so the caller knows which of its tensors the plan relies on.
    """
    targets = list(targets)
    available = available if available is not None else {}
    while True:
        planner = _Planner(facts, targets, available, advance_dead_draws, draw_in_place, computed_draws)
        actions = planner.plan(program, len(program) if end is None else end)
        if not planner.stale:
            return actions
        for storage in planner.stale:
            available.pop(storage, None)


class _Planner:
    """One backward pass of :func:`plan_execution`; ``stale``: the ``available`` storages whose
    contents it needs as of an earlier point than the caller holds them."""

    __slots__ = ("facts", "available", "advance_dead_draws", "draw_in_place", "computed_draws", "stale",
                 "actions", "touched", "needed_values", "needed_storages")

    def __init__(self, facts: ProgramFacts, targets: list[int], available: dict[int, int],
                 advance_dead_draws: bool, draw_in_place: bool, computed_draws: set[int] | frozenset[int]) -> None:
        self.facts = facts
        self.available = available
        self.advance_dead_draws = advance_dead_draws
        self.draw_in_place = draw_in_place
        self.computed_draws = computed_draws
        self.stale: set[int] = set()
        self.actions: list[Action] = []
        self.touched: set[int] = set()  # storages that instructions after the current one build or use
        self.needed_values = set(targets)
        self.needed_storages = {facts.values[v].storage for v in self.needed_values}

    def plan(self, program: list[Instruction], n: int) -> list[Action]:
        """The actions of ``program[:n]``, decided from the last instruction to the first."""
        self.actions = [Action.SKIP] * n
        for i in range(n - 1, -1, -1):
            ins = program[i]
            if isinstance(ins, Call):
                self.call(i, ins)
            elif isinstance(ins, Literal):
                self.literal(i, ins)
            else:
                self.actions[i] = Action.RUN
        return self.actions

    def literal(self, i: int, ins: Literal) -> None:
        storage = self.facts.values[ins.out].storage
        if ins.out in self.needed_values and storage not in self.available:
            self.actions[i] = Action.RUN
            self.needed_storages.discard(storage)

    def call(self, i: int, ins: Call) -> None:
        facts = self.facts
        info = facts.infos[i]
        outs = [o for o in ins.outs if o is not None]
        fresh = [o for o in outs if facts.storage_creator.get(facts.values[o].storage) == i]
        written = facts.written_storages(i, ins)
        action = self._action(i, ins, info, outs, fresh, written)
        if action == Action.ADVANCE and self._draws_into_built_storage(ins, info):
            # The storage is built later anyway: draw into it, as eager does, instead of faulting
            # in scratch pages.  Its old contents are not read.
            self.actions[i] = Action.RUN
            self.needed_values.update(call_refs(ins))
            return
        self.actions[i] = action
        if action == Action.ALLOC:
            self.touched.update(facts.values[o].storage for o in outs)
        if action == Action.RUN:
            self._run(i, ins, info, outs, fresh, written)

    def _action(self, i: int, ins: Call, info: OpInfo, outs: list[int], fresh: list[int],
                written: list[tuple[int, int]]) -> Action:
        """What call ``i`` needs: RUN when later instructions read what it writes, ALLOC when only
        its fresh outputs' tensors are wanted, ADVANCE (or RUN) for a dead draw that positions its
        generator, SKIP otherwise (or when the caller provides its outputs)."""
        facts, available, needed_storages = self.facts, self.available, self.needed_storages
        contents = any(
            s in needed_storages and available.get(s, -1) < i for _, s in written
        ) or any(
            facts.values[o].storage in needed_storages and available.get(facts.values[o].storage, -1) < i
            for o in fresh
        )
        if contents:
            return Action.RUN
        if any(o in self.needed_values for o in outs):
            if fresh and len(fresh) == len(outs) and all(facts.values[o].storage in available for o in fresh):
                return Action.SKIP  # the caller provides these tensors
            if len(fresh) == len(outs) and (not draws_from_generator(ins, info) or i in self.computed_draws):
                return Action.ALLOC
            return Action.RUN
        if self.advance_dead_draws and draws_from_generator(ins, info) and i not in self.computed_draws:
            return Action.RUN if info.value_dependent_random else Action.ADVANCE
        return Action.SKIP

    def _draws_into_built_storage(self, ins: Call, info: OpInfo) -> bool:
        """Whether a dead in-place draw may run on its own tensor: a later instruction builds its storage."""
        if not (self.draw_in_place and info.overwrites_self):
            return False
        target = arg_at(ins, info.arg_names, 0)
        return isinstance(target, Ref) and self.facts.values[target.id].storage in self.touched

    def _run(self, i: int, ins: Call, info: OpInfo, outs: list[int], fresh: list[int],
             written: list[tuple[int, int]]) -> None:
        """Call ``i`` runs: the storages it overwrites whole or creates are not needed before it,
        the values it uses are, and so are the storages it reads."""
        facts = self.facts
        self.touched.update(facts.values[o].storage for o in outs)
        self.touched.update(facts.values[r].storage for r in call_refs(ins))
        for pos, storage in written:
            if pos == 0 and info.overwrites_self:
                ref = arg_at(ins, info.arg_names, 0)
                if facts.values[ref.id].covers(facts.storage_nbytes[storage]):
                    self.needed_storages.discard(storage)
        for o in fresh:
            self.needed_storages.discard(facts.values[o].storage)
        self.needed_values.update(call_refs(ins))
        if not written and not fresh:
            return  # a view reads nothing
        for ref in _read_refs(ins, info, written):
            storage = facts.values[ref].storage
            if self.available.get(storage, -1) >= i:
                self.stale.add(storage)
            self.needed_storages.add(storage)


def read_storages(index: int, ins: Call, info: OpInfo, facts: ProgramFacts,
                  written: list[tuple[int, int]]) -> set[int]:
    """The storages whose contents call ``index`` reads (the planner's rule: a view reads nothing;
    an overwriting fill does not read its target; ``out=`` arguments are written, not read).
    ``written`` is ``facts.written_storages(index, ins)``."""
    fresh = any(o is not None and facts.storage_creator.get(facts.values[o].storage) == index for o in ins.outs)
    if not written and not fresh:
        return set()
    return {facts.values[ref].storage for ref in _read_refs(ins, info, written)}


def _read_refs(ins: Call, info: OpInfo, written: list[tuple[int, int]]) -> list[int]:
    """The value ids whose contents a call that writes or creates storage reads: every tensor
    argument but an overwriting fill's target and the ``out=`` arguments."""
    written_positions = {pos for pos, _ in written}
    reads = []
    for pos, ref in ref_positions(ins, info.arg_names):
        if pos == 0 and info.overwrites_self:
            continue
        if pos in written_positions and pos != 0:
            continue  # out= arguments are written, not read
        reads.append(ref)
    return reads

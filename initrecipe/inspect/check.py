"""Check a recipe completely without replaying it: :func:`check`.

A recipe is checked in the order a replay would meet its problems, and every check runs before
anything real is allocated:

1. the bytes: not empty, msgpack, not another kind of file, within the size limits of
   :mod:`initrecipe.format.spec` (``MAX_*``);
2. the envelope: format name, version (older ones are read, newer ones refused with the release
   that reads them), the set of top-level fields;
3. integrity: the content hash, so a damaged file is reported as corrupt;
4. structure: every field, instruction and tensor entry, with values defined once and referenced
   only after their definition (SSA in program order), declared generators, consistent ties;
5. the program: operators resolved through the allowlist and shape-propagated on the meta device
   (arguments each operator accepts, views inside their storage, tensor entries matching what the
   program builds), generator states torch accepts;
6. resources: the memory a replay would allocate, against ``max_bytes`` (default: what is available),
   and the work it would do, estimated from the shapes, against ``max_work`` (default: a minute
   plus an allowance for the tensors it returns; :mod:`initrecipe.analysis.cost`): no hours of work in a
   few bytes.  :func:`check_report` also gives the estimate;
7. warnings (:func:`check_report` only; they do not make a recipe invalid): each tensor replay
   would leave fully or partly uninitialized (:func:`initrecipe.analysis.uninitialized.uninitialized_tensors`),
   which ``initrecipe check`` prints and ``initrecipe check --strict`` fails on.

Example:
    >>> import initrecipe, torch
    >>> from initrecipe.inspect.check import check
    >>> check(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0).to_bytes())
    []
    >>> check(b"")
    ['the recipe is empty (0 bytes): the download or copy did not complete']
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from initrecipe.analysis.uninitialized import Uninitialized, uninitialized_tensors
from initrecipe.errors import RecipeError, WorkLimitError
from initrecipe.support.gcpause import pausing_gc
from initrecipe.rng.torch.generator_state import state_tensor
from initrecipe.analysis.lineage import analyse
from initrecipe.program.ir import RngSetState
from initrecipe.format.decode import Source, load
from initrecipe.format.recipe import Recipe
from initrecipe.runtime.replay_plan import prepare_replay
from initrecipe.analysis.cost import WorkEstimate

__all__ = ["check", "check_report", "CheckReport"]


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_report` found: the problems, the estimated work of a full replay, and
    the warnings (tensors replay leaves uninitialized; only looked for in a valid recipe)."""

    findings: list[str]
    work: WorkEstimate | None  # None when the recipe could not be planned (see ``findings``)
    warnings: list[Uninitialized] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings


def check(source: Source | Recipe, *, max_bytes: int | None = None, verify_hash: bool = True,
          max_work: float | None = None) -> list[str]:
    """Every problem found in a recipe, without replaying it; an empty list when it is valid.

    Each finding is one message naming the location of the problem (``program[12].args[0]:
    reference to undefined tensor 99``).  Checking stops at the first problem of a stage when the
    later stages depend on it (a file that is not msgpack has no program to check).

    Args:
        source: a path, the file's bytes, a binary file object, or a :class:`Recipe`.
        max_bytes: the memory a replay may allocate (default: the memory available now, as
            :func:`initrecipe.replay` uses).
        verify_hash: check the stored content hash.
        max_work: the work a replay may take, in seconds on the reference CPU (default: as
            :func:`initrecipe.replay`, a minute plus an allowance for the tensors it returns).
    """
    return check_report(source, max_bytes=max_bytes, verify_hash=verify_hash, max_work=max_work).findings


@pausing_gc
def check_report(source: Source | Recipe, *, max_bytes: int | None = None, verify_hash: bool = True,
                 max_work: float | None = None) -> CheckReport:
    """:func:`check`, with the estimated work of a full replay (``report.work``, see
    :mod:`initrecipe.analysis.cost`): what ``initrecipe check`` prints.

    Example:
        >>> import initrecipe, torch
        >>> report = check_report(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0))
        >>> report.findings, report.work.seconds < report.work.budget
        ([], True)
    """
    if isinstance(source, Recipe):
        recipe = source
    else:
        try:
            recipe = load(source, verify_hash=verify_hash)
        except RecipeError as exc:
            return CheckReport([str(exc)], None)
    findings: list[str] = []
    probe = torch.Generator(device="cpu")
    for i, ins in enumerate(recipe.program):
        if isinstance(ins, RngSetState):
            try:
                probe.set_state(state_tensor(ins.state))
            except (RuntimeError, ValueError) as exc:
                findings.append(f"program[{i}].state: torch rejects this generator state ({str(exc).splitlines()[0]})")
                break
    work = None
    facts = None
    try:
        plan = prepare_replay(recipe, max_bytes=max_bytes, max_work=max_work)
        work, facts = plan.work, plan.facts
    except RecipeError as exc:
        findings.append(str(exc))
        if isinstance(exc, WorkLimitError):
            work = exc.estimate
    found: list[Uninitialized] = []
    if not findings and facts is not None:
        found = uninitialized_tensors(analyse(recipe, facts=facts))
    return CheckReport(findings, work, found)

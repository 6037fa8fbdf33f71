"""Executes a planned program on real tensors.

The loop runs each instruction the plan keeps; what depends on the recipe's RNG mode (which
generator a draw uses, what a keyed draw means, where tensors live) is the
:class:`~initrecipe.runtime.rng_modes.DrawStrategy`'s business, chosen once per replay.
"""

from __future__ import annotations

from typing import Iterator

import torch

from initrecipe.analysis.facts import Action, ProgramFacts, call_refs
from initrecipe.analysis.infer import recipe_defaults
from initrecipe.analysis.meta_outputs import flatten_outputs
from initrecipe.errors import ReplayError
from initrecipe.program.ir import Call, Instruction, Literal
from initrecipe.program.operators import OpInfo
from initrecipe.rng.torch.parallel_draws import ParallelDraws
from initrecipe.runtime.generator_banks import GeneratorBank
from initrecipe.runtime.rng_modes import DrawStrategy, PortableContext, draw_strategy

__all__ = ["execute"]


def execute(
    program: list[Instruction],
    facts: ProgramFacts,
    actions: list[Action],
    env: dict[int, torch.Tensor],
    generators: GeneratorBank,
    *,
    portable: PortableContext | None = None,
    parallel: ParallelDraws | None = None,
) -> Iterator[int]:
    """Run ``program`` as ``actions`` say, binding tensor values in ``env``.

    A generator: it yields each instruction's index after running it, so a caller can stream out
    finished tensors.  Each step runs under torch's defaults, whatever the caller set: no default
    device (``torch.set_default_device``, ``with torch.device(...)``) and the ``float32`` default
    dtype a recipe is written for; the caller's settings are back in force while it holds a
    yielded step.

    Args:
        generators: the torch generators random calls draw from.
        portable: for ``rng="portable"`` recipes: keyed draws and substituted operators get their
            portable meaning (:class:`~initrecipe.runtime.rng_modes.PortableDraws`).
        parallel: split large random fills whose generator effect ``generators`` (a
            :class:`~initrecipe.runtime.generator_banks.PositionedGenerators`) computes, and run the
            pieces on its worker threads (:mod:`initrecipe.rng.torch.parallel_draws`); the caller
            waits for a tensor's storage with ``parallel.wait`` before it uses the tensor.
    """
    steps = _execute(program, facts, actions, env, draw_strategy(facts, generators, portable), parallel)
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


def _execute(program: list[Instruction], facts: ProgramFacts, actions: list[Action], env: dict[int, torch.Tensor],
             draws: DrawStrategy, parallel: ParallelDraws | None) -> Iterator[int]:
    """The loop of :func:`execute`: run each instruction the plan keeps, yield its index."""
    for i, action in enumerate(actions):
        if action == Action.SKIP:
            continue
        ins = program[i]
        if isinstance(ins, Call):
            _run_call(i, ins, facts, action, env, draws, parallel)
        elif isinstance(ins, Literal):
            env[ins.out] = draws.literal(ins)
        else:
            draws.position(i, ins)
        yield i


def _run_call(i: int, ins: Call, facts: ProgramFacts, action: Action, env: dict[int, torch.Tensor],
              draws: DrawStrategy, parallel: ParallelDraws | None) -> None:
    """Run call ``i`` as ``action`` says: allocate its outputs, advance its generator, or run it
    (here, or in pieces on ``parallel``) and bind its outputs."""
    info = facts.infos[i]
    if parallel is not None and parallel.enabled:
        parallel.wait(_storages_touched(ins, info, facts))
        if action == Action.RUN and draws.draw_in_pieces(i, ins, info, env, parallel):
            return
    if action == Action.ALLOC:
        for o in ins.outs:
            if o is not None:
                env[o] = draws.allocate(facts.values[o])
        return
    result = draws.run_call(i, ins, info, action, env)
    if action == Action.RUN:
        _bind_outputs(i, ins, result, env)


def _bind_outputs(i: int, ins: Call, result: object, env: dict[int, torch.Tensor]) -> None:
    """Bind call ``i``'s results to its output values; :class:`ReplayError` where one differs from the
    shape or dtype the recipe recorded."""
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


def _storages_touched(ins: Call, info: OpInfo, facts: ProgramFacts) -> list[int]:
    """The storages whose contents a call may read or write (none for a view)."""
    if not info.written_args and info.aliased_outputs and all(a is not None for a in info.aliased_outputs):
        return []
    refs = call_refs(ins)
    refs.extend(o for o in ins.outs if o is not None)
    return [facts.values[r].storage for r in refs]

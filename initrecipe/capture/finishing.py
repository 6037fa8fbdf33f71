"""The passes that turn a finished recording into a recipe's program: the model's tensors as
entries, the refusals deferred until the outputs are known, the portable draws' stream keys (the
names their values flow into), and compaction (dead instructions dropped, values renumbered)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import _disable_current_modes

from initrecipe.analysis.facts import Action, call_refs, ProgramFacts
from initrecipe.analysis.plan import plan_execution, read_storages
from initrecipe.capture.program_builder import ProgramBuilder, with_key
from initrecipe.errors import RecipeFormatError, RecordError
from initrecipe.format.recipe import TensorEntry
from initrecipe.program.ir import Call, Instruction, Literal, PortableKey, Ref
from initrecipe.program.operators import DRAW_OPERATORS, REFUSED_DRAWS
from initrecipe.program.walk import map_arg
from initrecipe.rng.portable.semantics import check_draw

__all__ = ["collect_entries", "final_states", "finish"]


def collect_entries(builder: ProgramBuilder, model: torch.nn.Module) -> list[TensorEntry]:
    """The entries of ``model``'s parameters and buffers (every name of a tied tensor), as recorded."""
    entries: list[TensorEntry] = []
    non_persistent: set[str] = set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        for local in module._non_persistent_buffers_set:
            non_persistent.add(f"{prefix}.{local}" if prefix else local)
    for kind, items in (
        ("parameter", model.named_parameters(remove_duplicate=False)),
        ("buffer", model.named_buffers(remove_duplicate=False)),
    ):
        for name, tensor in items:
            vid = builder.ref(tensor).id
            meta = builder.facts.values[vid]
            entries.append(
                TensorEntry(
                    name=name,
                    value=vid,
                    kind=kind,
                    shape=meta.shape,
                    dtype=meta.dtype,
                    requires_grad=bool(tensor.requires_grad) if kind == "parameter" else False,
                    persistent=name not in non_persistent,
                )
            )
    ties: dict[int, tuple[str, str]] = {}
    for entry in entries:
        first = ties.setdefault(entry.value, (entry.name, entry.kind))
        if first[1] != entry.kind:
            raise RecordError(
                f"`{entry.name}` and `{first[0]}` are one tensor, but one is a parameter and the other a buffer"
            )
    return entries


def final_states(builder: ProgramBuilder) -> list[tuple[torch.Generator, torch.Tensor]]:
    """The state eager execution would have left each tracked generator in."""
    out = []
    for gid, generator in enumerate(builder.tracker.objects):
        position = builder.tracker.position_of(gid)
        if position is None:
            # User code set this generator after its last draw: that state is eager's too.
            out.append((generator, generator.get_state()))
            continue
        with _disable_current_modes():
            out.append((generator, builder.shadow.state_after(gid, position)))
    return out

def finish(builder: ProgramBuilder, entries: list[TensorEntry]) -> tuple[list[Instruction], list[TensorEntry],
                                                                          list[PortableKey | None]]:
    """The recipe's program and entries for a finished recording of ``entries``, and the keys of
    its unpinned draws by ordinal (rng="portable"; None for a dead draw).  Raises the refusals
    deferred until the outputs were known: accelerator draws, unreplayable calls the outputs need,
    draws portable recipes cannot express."""
    program = list(builder.program)
    portable = [i for i in range(len(program)) if builder.is_portable_draw(i)]
    for i in portable:  # planned as draws that advance no generator; their keys come below
        program[i] = with_key(program[i], PortableKey("", 0))
    actions = plan_execution(program, builder.facts, {e.value for e in entries}, advance_dead_draws=True)
    if builder.accelerator_draws:
        _refuse_accelerator_draws(builder, program, entries, actions)
    if builder.unreplayable:
        builder.refuse_if_unreplayable((i for i in builder.unreplayable if actions[i] != Action.SKIP),
                                       "its result reaches the model's parameters or buffers")
        needed = _needed_instructions(program, actions, set())
        builder.refuse_if_unreplayable((i for i in builder.unreplayable if needed[i]),
                                       "a discarded random draw on its result moves the generator for the draws after it")
    drop = _key_portable_draws(builder, program, entries, portable, actions) if builder.rng == "portable" else set()
    keys = [_key_of(program[i]) if actions[i] == Action.RUN else None for i in portable]
    program, entries = _compact(program, builder.facts, entries, actions, drop)
    return program, entries, keys


def _refuse_accelerator_draws(builder: ProgramBuilder, program: list[Instruction], entries: list[TensorEntry],
                              actions: list[Action]) -> None:
    """rng="torch": refuse the first random draw made on an accelerator, naming the tensor it fills.

    Eager draws on an accelerator come from that device's generator, whose values depend on the
    device model and the kernel's launch configuration; a torch-mode recipe reproduces torch's CPU
    generator only, so it cannot promise eager's bits for them.
    """
    index = min(builder.accelerator_draws)
    device, site = builder.accelerator_draws[index]
    names = _draw_sinks(program, builder.facts, actions, {index}, entries).get(index)
    what = f"`{sorted(names)[0]}`" if names else "a tensor that reaches no parameter or buffer"
    raise RecordError(
        f"random draw `{program[index].op}` on a `{device}` tensor, filling {what}"
        f"{' (' + site + ')' if site else ''}: rng='torch' reproduces torch's CPU generator, and an "
        "accelerator's random stream cannot be recorded (its values depend on the device model). Either "
        "draw on the CPU (create and initialize the tensor on \"cpu\", then move the model with `.to(device)`), "
        "or record with rng='portable', whose draws are identical on every device"
    )


def _key_of(ins: Call) -> PortableKey | None:
    return next((a for a in [*ins.args, *ins.kwargs.values()] if isinstance(a, PortableKey)), None)


def _key_portable_draws(builder: ProgramBuilder, program: list[Instruction], entries: list[TensorEntry],
                        portable: list[int], actions: list[Action]) -> set[int]:
    """Give every live unpinned draw (``portable``) its stream key, in ``program`` (a copy of the
    recording, planned as ``actions``).

    A draw's stream is the name of the tensor its values flow into (the first such name in sorted
    order when they flow into several) and its position the draw's ordinal among that stream's
    draws, in program order.  Returns the RNG positioning instructions that only position the
    unpinned stream, which a portable recipe does not need.
    """
    facts = builder.facts
    sinks = _draw_sinks(program, facts, actions, set(portable), entries)
    positions: dict[str, int] = {}
    for i in portable:
        if actions[i] != Action.RUN:
            continue
        names = sinks.get(i)
        if not names:  # pragma: no cover - a live draw always reaches some output
            raise RecordError(f"internal error: random draw `{program[i].op}` reaches no tensor of the model")
        stream = min(names)
        _check_portable_draw(program[i], facts, i, stream)
        position = positions.get(stream, 0)
        positions[stream] = position + 1
        program[i] = with_key(program[i], PortableKey(stream, position))
    return {
        i for i, pinned in builder.pinned_at.items() if not pinned and not isinstance(program[i], Call)
    }


def _check_portable_draw(ins: Call, facts: ProgramFacts, index: int, stream: str) -> None:
    """Refuse, while recording, a draw that portable recipes cannot express (``stream``: the tensor
    its values flow into): an operator of :data:`REFUSED_DRAWS`, or parameters the samplers do not take."""
    why = REFUSED_DRAWS.get(ins.op)
    if why is not None:
        packet = ins.op.split(".")[1]
        raise RecordError(
            f"`{ins.op}` (torch.{packet}) draws the values of `{stream}`, and rng='portable' has no sampler for it: "
            f"{why}. Record with rng='torch', or draw `{stream}` with a portable sampler ("
            + ", ".join(f"`{name}`" for name in sorted({n.split('.')[1] for n in DRAW_OPERATORS})) + ")"
        )
    info = facts.infos[index]
    target = ins.args[0] if info.overwrites_self else next((o for o in ins.outs if o is not None), None)
    value = target.id if isinstance(target, Ref) else target
    if value is None:  # pragma: no cover - every draw fills or creates a tensor
        return
    try:
        check_draw("while recording", ins, info, list(ins.args), dict(ins.kwargs), facts.values[value].dtype)
    except RecipeFormatError as exc:
        raise RecordError(
            f"{exc}; portable recipes cannot draw it. Record with rng='torch', or draw it from a seeded "
            "`torch.Generator`"
        ) from None


def _draw_sinks(
    program: list[Instruction], facts: ProgramFacts, actions: list[Action], draws: set[int], entries: list[TensorEntry]
) -> dict[int, set[str]]:
    """For each draw in ``draws``: the names of the outputs whose contents its values may reach.

    A forward pass over storages: each storage carries the set of draws whose values it may hold;
    a call that reads storages passes their sets to what it writes (replacing the set of a storage
    it overwrites completely).
    """
    holds: dict[int, frozenset[int]] = {}
    empty: frozenset[int] = frozenset()
    for i, ins in enumerate(program):
        if actions[i] != Action.RUN:
            continue
        if isinstance(ins, Literal):
            holds[facts.values[ins.out].storage] = empty
            continue
        if not isinstance(ins, Call):
            continue
        info = facts.infos[i]
        written = facts.written_storages(i, ins)
        reads = read_storages(i, ins, info, facts, written)
        incoming = frozenset().union(*(holds.get(s, empty) for s in reads))
        if i in draws:
            incoming = incoming | {i}
        for o in ins.outs:
            if o is not None and facts.storage_creator.get(facts.values[o].storage) == i:
                holds[facts.values[o].storage] = incoming
        for pos, storage in written:
            covers = pos == 0 and info.overwrites_self and facts.values[ins.args[0].id].covers(facts.storage_nbytes[storage])
            holds[storage] = incoming if covers else holds.get(storage, empty) | incoming
    sinks: dict[int, set[str]] = {}
    for entry in entries:
        for draw in holds.get(facts.values[entry.value].storage, empty):
            sinks.setdefault(draw, set()).add(entry.name)
    return sinks


def _compact(
    program: list[Instruction], facts: ProgramFacts, entries: list[TensorEntry], actions: list[Action], drop: set[int]
) -> tuple[list[Instruction], list[TensorEntry]]:
    """Drop instructions the outputs do not need (SKIP in ``actions``, a plan for all outputs, and
    those in ``drop``) and renumber values densely in definition order."""
    keep = _needed_instructions(program, actions, drop)
    new_index: dict[int, int] = {}
    renumber: dict[int, int] = {}
    compacted: list[Instruction] = []
    for i, ins in enumerate(program):
        if not keep[i]:
            continue
        new_index[i] = len(compacted)
        if isinstance(ins, Call):
            outs = []
            for o in ins.outs:
                if o is None:
                    outs.append(None)
                else:
                    renumber[o] = len(renumber)
                    outs.append(renumber[o])
            compacted.append(
                Call(
                    ins.op,
                    tuple(outs),
                    tuple(_renumber(a, renumber) for a in ins.args),
                    {k: _renumber(v, renumber) for k, v in ins.kwargs.items()},
                    ins.out_meta,
                )
            )
        elif isinstance(ins, Literal):
            renumber[ins.out] = len(renumber)
            compacted.append(Literal(renumber[ins.out], ins.dtype, ins.shape, ins.data))
        elif hasattr(ins, "after"):
            compacted.append(type(ins)(ins.gen, new_index[ins.after]))
        else:
            compacted.append(ins)
    new_entries = [
        TensorEntry(e.name, renumber[e.value], e.kind, e.shape, e.dtype, e.requires_grad, e.persistent)
        for e in entries
    ]
    return compacted, new_entries


def _needed_instructions(program: list[Instruction], actions: list[Action], drop: set[int]) -> list[bool]:
    """Which instructions a recipe keeps: those ``actions`` runs or advances (less ``drop``), and
    what defines the values they use (dead draws run on scratch copies of their arguments' shapes)."""
    keep = [a != Action.SKIP and i not in drop for i, a in enumerate(actions)]
    wanted: set[int] = set()
    for i in range(len(program) - 1, -1, -1):
        ins = program[i]
        defines = [ins.out] if isinstance(ins, Literal) else list(getattr(ins, "outs", ()))
        if not keep[i] and any(v in wanted for v in defines if v is not None):
            keep[i] = True
        if keep[i] and isinstance(ins, Call):
            wanted.update(call_refs(ins))
    return keep


def _renumber(value: object, renumber: dict[int, int]) -> object:
    """An argument with its tensor references renumbered."""
    return map_arg(value, Ref, lambda ref: Ref(renumber[ref.id]))

"""The program a recording builds: its instructions and facts, which value each tensor object
holds, and which generator each draw takes its numbers from."""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes

from initrecipe.analysis.facts import ProgramFacts, TensorMeta
from initrecipe.analysis.meta_outputs import flatten_outputs
from initrecipe.capture.call_site import call_site
from initrecipe.capture.generators import GeneratorTracker, ShadowGenerators
from initrecipe.errors import RecordError
from initrecipe.program.ir import Call, GenRef, Instruction, Literal, PortableKey, Ref, RngRestore, dtype_name, tensor_bytes
from initrecipe.program.operators import OpInfo, op_info
from initrecipe.program.walk import iter_leaves

__all__ = ["PendingCall", "ProgramBuilder", "with_key"]

_LITERAL_LIMIT = 16 << 20  # bytes of constant data one recorded tensor may carry
_CPU = torch.device("cpu")


class PendingCall(NamedTuple):
    """A call about to run, resolved and encoded as its arguments are before it runs."""

    info: OpInfo
    args: list[Any]
    kwargs: dict[str, Any]
    gid: int | None  # the generator it draws from, for a random call


class ProgramBuilder:
    """The program a recording builds while the constructor runs under fake tensors.

    It gives every tensor object a value id (``ref``: the value an argument refers to, emitting the
    view, literal or placeholder that makes it available), appends prepared calls and binds their
    outputs (``append_call``), and follows the generators: which one each draw uses, whether user
    code pinned its stream, and (through ``shadow``) the true state each would hold.
    """

    def __init__(self, rng: str, run_value_dependent: Callable[[int], None]) -> None:
        """``run_value_dependent(index)``: run random call ``index``, whose draw count depends on its
        inputs' values, for real (the materializer's), so that later generator states are known."""
        self.rng = rng
        self.draw_ordinal: dict[int, int] = {}  # unpinned draw index -> its ordinal among them
        self.program: list[Instruction] = []
        self.facts = ProgramFacts()
        self.tracker = GeneratorTracker(self._emit_rng, self._true_state_after)
        self.ids: dict[int, int] = {}  # id(tensor object) -> value id
        self.keep: list[torch.Tensor] = []  # keeps recorded tensor objects alive, so ids stay unique
        self.storage_ids: dict[int, int] = {}  # fake storage address -> storage id
        self.value_storage: dict[int, int] = {}  # value id -> fake storage address
        self.literal_ids: dict[tuple[int, int], int] = {}  # (id, version) of a real tensor -> value id
        self.writers: dict[int, list[int]] = {}  # storage id -> instructions that create or write it
        self.next_value = 0
        self.shadow = ShadowGenerators(self.program, self.facts, run_value_dependent)
        # Which draws user code pinned to torch's stream (rng="portable" keys only the others):
        # private generators always; the default generator after user code seeds or sets it.
        self.pinned: list[bool] = []  # gen id -> its current stream is pinned
        self.pinned_at: dict[int, bool] = {}  # RNG instruction index -> pinned when it ran
        self.origin: int | None = None  # the instruction that positions the default generator first
        # Calls replay cannot execute (outside the allowlist), by index -> the refusal to raise if
        # their result is ever needed: its values read while recording, or reaching a model tensor.
        self.unreplayable: dict[int, str] = {}
        # rng="torch": random draws made on an accelerator device, by index -> (device, call site).
        self.accelerator_draws: dict[int, tuple[torch.device, str]] = {}

    # ------------------------------------------------------------------ emitting
    def _emit_rng(self, ins: Instruction) -> int:
        index = len(self.program)
        self.program.append(ins)
        self.facts.infos.append(None)
        while len(self.pinned) <= ins.gen:
            self.pinned.append(True)
        if self.origin is None:
            self.origin = index  # `record` positions the default generator before anything else
            self.pinned[ins.gen] = False
        elif isinstance(ins, RngRestore):
            self.pinned[ins.gen] = self.pinned_at[ins.after]
        else:
            self.pinned[ins.gen] = True
        self.pinned_at[index] = self.pinned[ins.gen]
        return index

    def pinned_now(self, generator: torch.Generator) -> bool:
        """Whether a draw from ``generator`` now would be pinned to torch's stream."""
        with _disable_current_modes():
            gid = self.tracker.peek(generator)
        return True if gid is None else self.pinned[gid] or self.tracker.moved(gid)

    def _true_state_after(self, gid: int, index: int) -> torch.Tensor:
        with _disable_current_modes():
            return self.shadow.state_after(gid, index)

    def is_portable_draw(self, index: int) -> bool:
        """Whether instruction ``index`` is a random draw that ``rng="portable"`` keys by name."""
        return self.rng == "portable" and self.pinned_at.get(index) is False and isinstance(self.program[index], Call)

    def _new_value(self) -> int:
        v = self.next_value
        self.next_value += 1
        return v

    def _bind(self, index: int, tensor: torch.Tensor) -> int:
        """Give ``tensor`` (an output of instruction ``index``) a new value id."""
        vid = self._new_value()
        address = tensor.untyped_storage()._cdata
        sid = self.storage_ids.get(address)
        nbytes = None
        if sid is None:
            sid = self.storage_ids[address] = vid
            nbytes = tensor.untyped_storage().nbytes()
            self.writers[sid] = [index]
        meta = TensorMeta(sid, tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype)
        self.facts.define(index, vid, meta, nbytes)
        self.ids[id(tensor)] = vid
        self.value_storage[vid] = address
        self.keep.append(tensor)
        return vid

    def _matches(self, vid: int, tensor: torch.Tensor) -> bool:
        meta = self.facts.values[vid]
        return (
            self.value_storage[vid] == tensor.untyped_storage()._cdata
            and meta.shape == tuple(tensor.shape)
            and meta.stride == tuple(tensor.stride())
            and meta.offset == tensor.storage_offset()
            and meta.dtype == tensor.dtype
        )

    def ref(self, tensor: torch.Tensor) -> Ref:
        """The value a tensor argument refers to, emitting whatever makes it available."""
        vid = self.ids.get(id(tensor))
        if vid is not None and self._matches(vid, tensor):
            return Ref(vid)
        if isinstance(tensor, FakeTensor):
            if tensor.fake_device.type == "meta" and tensor.untyped_storage()._cdata not in self.storage_ids:
                self._meta_placeholder(tensor)
            return Ref(self._alias(tensor))
        return Ref(self._literal(tensor))

    def _meta_placeholder(self, tensor: FakeTensor) -> None:
        """Give a meta tensor's storage a value: uninitialized memory of its size (``empty``).

        Meta tensors hold no values and nothing done to them is recorded; a meta tensor is
        recorded only where something else needs it as a tensor — a parameter or buffer left on
        the meta device, or an argument whose shape an operator reads — and then as storage whose
        contents are unspecified, as a ``to_empty`` allocation's are.
        """
        size = tensor.untyped_storage().nbytes() // tensor.element_size()
        name = "aten.empty.memory_format"
        index = len(self.program)
        self.program.append(Call(name, (None,), ([size],), {"dtype": tensor.dtype, "device": _CPU}))
        self.facts.infos.append(op_info(name))
        base = torch.ops.aten.as_strided.default(tensor, [size], [1], 0)
        self.program[index].outs = (self._bind(index, base),)

    def _alias(self, tensor: FakeTensor) -> int:
        """A tensor whose storage is known but whose view is not (``param.data = ...``): re-view it."""
        sid = self.storage_ids.get(tensor.untyped_storage()._cdata)
        if sid is None:
            raise RecordError(
                "a fake tensor appeared that the recorder never saw created; it was probably made by a "
                "different FakeTensorMode or carried over from another `record` call"
            )
        base = self.facts.values[sid]
        if base.dtype != tensor.dtype:
            raise RecordError(
                f"a tensor of dtype {tensor.dtype} now views storage created as {base.dtype} "
                "(through `.data =` or `set_`); initrecipe cannot record this re-interpretation"
            )
        name = "aten.as_strided.default"
        args = (Ref(sid), list(tensor.shape), list(tensor.stride()), tensor.storage_offset())
        index = len(self.program)
        self.program.append(Call(name, (None,), args, {}))
        self.facts.infos.append(op_info(name))
        vid = self._bind(index, tensor)
        self.program[index].outs = (vid,)
        return vid

    def _literal(self, tensor: torch.Tensor) -> int:
        key = (id(tensor), tensor._version)
        vid = self.literal_ids.get(key)
        if vid is not None:
            return vid
        if tensor.device.type != "cpu":
            raise RecordError(f"a constant tensor on `{tensor.device}` was used; constants must be CPU tensors")
        if tensor.is_sparse or tensor.layout != torch.strided:
            raise RecordError("sparse constant tensors are not supported; make them dense with `.to_dense()`")
        try:
            dtype_name(tensor.dtype)
        except ValueError:
            raise RecordError(f"constant tensors of dtype {tensor.dtype} are not supported") from None
        with _disable_current_modes():
            data = tensor.detach().contiguous()
        nbytes = data.numel() * data.element_size()
        if nbytes > _LITERAL_LIMIT:
            raise RecordError(
                f"the constructor uses a constant tensor of {nbytes} bytes created outside the recorded "
                "code; a recipe stores constants inline, up to 16 MiB. Create it inside the constructor "
                "from a seed or a formula instead"
            )
        with _disable_current_modes():
            raw = tensor_bytes(data)
        index = len(self.program)
        self.program.append(Literal(-1, data.dtype, tuple(data.shape), raw))
        self.facts.infos.append(None)
        vid = self._new_value()
        meta = TensorMeta(vid, tuple(data.shape), tuple(data.stride()), 0, data.dtype)
        self.facts.define(index, vid, meta, nbytes)
        self.writers[vid] = [index]
        self.program[index].out = vid
        self.literal_ids[key] = vid
        self.keep.append(tensor)
        return vid

    def encode(self, value: object) -> object:
        """An argument as the program holds it: tensors as references, devices as the CPU label."""
        if isinstance(value, torch.Tensor):
            return self.ref(value)
        if isinstance(value, (list, tuple)):
            return [self.encode(v) for v in value]
        if isinstance(value, torch.Generator):
            raise AssertionError("generators are encoded by the caller")
        if isinstance(value, torch.device):
            return _CPU  # a label while recording: a recipe is device-neutral, replay places every tensor
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            raise RecordError("symbolic sizes are not supported while recording")
        return value

    def refuse_if_unreplayable(self, needed: Iterator[int], why: str) -> None:
        """Raise the deferred refusal of the first unreplayable call among ``needed``."""
        for index in needed:
            if index in self.unreplayable:
                raise RecordError(f"{self.unreplayable[index]} ({why})")

    # ------------------------------------------------------------------ calls
    def plain_call(self, info: OpInfo, args: tuple, kwargs: dict) -> PendingCall:
        """A call that draws from no generator, its arguments encoded as they are now."""
        return PendingCall(info, [self.encode(a) for a in args], {k: self.encode(v) for k, v in kwargs.items()}, None)

    def append_call(
        self,
        pending: PendingCall,
        args: tuple,
        kwargs: dict,
        out: object,
        out_meta: tuple | None = None,
    ) -> int:
        """Append a prepared call (``args``/``kwargs``: its arguments as called, ``out``: its result)
        and bind its outputs; its index."""
        info, enc_args, enc_kwargs, gid = pending
        if torch.get_default_dtype() is not torch.float32:
            enc_kwargs = _explicit_dtype(info, enc_args, enc_kwargs, out)
        index = len(self.program)
        call = Call(info.name, (), tuple(enc_args), enc_kwargs, out_meta)
        self.program.append(call)
        self.facts.infos.append(info)
        inputs = {id(t) for t in iter_leaves((args, kwargs), torch.Tensor)}
        outs: list[int | None] = []
        for o in flatten_outputs(out):
            if not isinstance(o, torch.Tensor):
                outs.append(None)
            elif id(o) in inputs and id(o) in self.ids and self._matches(self.ids[id(o)], o):
                outs.append(None)  # an in-place result: the same tensor, unchanged view
            else:
                outs.append(self._bind(index, o))
        call.outs = tuple(outs)
        for _, storage in self.facts.written_storages(index, call):
            self.writers[storage].append(index)
        if gid is not None:
            if self.rng == "torch":
                device = _draw_device(args, kwargs, out)
                if device.type not in ("cpu", "meta"):
                    self.accelerator_draws[index] = (device, call_site())
            self.pinned_at[index] = self.pinned[gid]
            if self.rng == "portable" and not self.pinned[gid]:
                self.draw_ordinal[index] = len(self.draw_ordinal)
            with _disable_current_modes():
                self.tracker.after_draw(gid, index)
        return index


def _explicit_dtype(info: OpInfo, args: list[Any], kwargs: dict[str, Any], out: object) -> dict[str, Any]:
    """``kwargs`` with the dtype an operator's omitted ``dtype`` argument resolved to.

    Recipes mean torch's default dtype ``float32`` where an operator takes its default; a
    constructor that calls ``torch.set_default_dtype`` made its factories build another dtype,
    which the recipe then names (the output's dtype, which ``dtype=None`` would have produced).
    """
    if not info.takes_default_dtype or info.arg_names.index("dtype") < len(args) or kwargs.get("dtype") is not None:
        return kwargs
    first = next((o for o in flatten_outputs(out) if isinstance(o, torch.Tensor)), None)
    return kwargs if first is None else dict(kwargs, dtype=first.dtype)


def _draw_device(args: tuple, kwargs: dict, out: object) -> torch.device:
    """The device a random call draws on: its target's (in-place fills) or its result's."""
    for t in [*args[:1], *flatten_outputs(out)]:
        if isinstance(t, FakeTensor):
            return t.fake_device
    return _CPU


def with_key(ins: Call, key: PortableKey) -> Call:
    """``ins`` drawing from portable stream ``key`` instead of its generator."""
    args = tuple(key if isinstance(a, (GenRef, PortableKey)) else a for a in ins.args)
    kwargs = {k: key if isinstance(v, (GenRef, PortableKey)) else v for k, v in ins.kwargs.items()}
    return Call(ins.op, ins.outs, args, kwargs, ins.out_meta)

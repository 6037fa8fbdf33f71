"""Record what a model constructor does to its tensors, without allocating them: :func:`record`."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    in_kernel_invocation_manager,
)
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from initrecipe.analysis.facts import Action, ProgramFacts, TensorMeta, call_refs
from initrecipe.analysis.meta_outputs import flatten_outputs
from initrecipe.analysis.plan import plan_execution, read_storages
from initrecipe.analysis.preconditions import random_bounds_problem
from initrecipe.errors import RecordError, UninitializedWarning
from initrecipe.capture.findings import uninitialized_message
from initrecipe.runtime.interpreter import PortableContext, execute
from initrecipe.program.operators import (ALLOWED_OPERATORS, DRAW_OPERATORS, RECORD_SHORTCUTS, REFUSED_DRAWS,
                                          SHAPE_ONLY_OPERATORS, UNINITIALIZED_LIKE, OpInfo, RecordShortcut,
                                          check_recordable, generator_overload, op_info, resolve_op)
from initrecipe.errors import RecipeFormatError
from initrecipe.rng.portable.semantics import check_draw
from initrecipe.program.ir import Call, GenRef, Instruction, Literal, PortableKey, Ref, RngRestore, dtype_name, tensor_bytes
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.format.spec import RNG_MODES
from initrecipe.program.walk import iter_leaves, map_arg
from initrecipe.capture.generators import GeneratorTracker, ShadowGenerators

__all__ = ["record"]

_ACTIVE = threading.local()
_LITERAL_LIMIT = 16 << 20  # bytes of constant data one recorded tensor may carry
_CACHE_BUDGET = 1 << 30  # bytes of materialized values the recorder keeps for data-dependent code
_NO_RECORD = frozenset({"prim.device.default"})


_DETACH = torch.ops.aten.detach.default
_SET_SOURCE_TENSOR = torch.ops.aten.set_.source_Tensor
_CPU = torch.device("cpu")
_META_DEVICE = torch.device("meta")
_FACTORIES = frozenset(resolve_op(n) for n, how in RECORD_SHORTCUTS.items() if how is RecordShortcut.META_FACTORY)
_METADATA_INPLACE = frozenset("t_ transpose_ squeeze_ unsqueeze_ as_strided_ swapdims_ swapaxes_".split())
_FILLS = frozenset(resolve_op(n) for n, how in RECORD_SHORTCUTS.items() if how is RecordShortcut.SCALAR_FILL)


def _has_tensor(args: Any, kwargs: dict) -> bool:
    return any(isinstance(a, torch.Tensor) for a in args) or any(isinstance(v, torch.Tensor) for v in kwargs.values())


def _returns_tensor(func: torch._ops.OpOverload) -> bool:
    for ret in func._schema.returns:
        text = str(ret.type)
        if "Tensor" in text:
            return True
    return False


class _Recorder:
    """Builds the program while the constructor runs under fake tensors."""

    def __init__(self, rng: str, seed: int | None = None, known_keys: list[PortableKey | None] | None = None) -> None:
        self.rng = rng
        self.seed = seed
        # rng="portable": the keys of the unpinned draws by ordinal, from an earlier recording of
        # the same constructor, so that values the constructor reads can be computed as replay
        # will compute them (see `record`); None in a first recording.
        self.known_keys = known_keys
        self.read_portable_values = False  # a first recording gave user code provisional values
        self.draw_ordinal: dict[int, int] = {}  # unpinned draw index -> its ordinal among them
        self.program: list[Instruction] = []
        self.facts = ProgramFacts()
        self.rng_instructions: list[list[int]] = []
        self.tracker = GeneratorTracker(self._emit_rng, self._true_state_after)
        self.ids: dict[int, int] = {}  # id(tensor object) -> value id
        self.keep: list[Any] = []  # keeps recorded tensor objects alive, so ids stay unique
        self.storage_ids: dict[int, int] = {}  # fake storage address -> storage id
        self.value_storage: dict[int, int] = {}  # value id -> fake storage address
        self.literal_ids: dict[tuple[int, int], int] = {}  # (id, version) of a real tensor -> value id
        self.writers: dict[int, list[int]] = {}  # storage id -> instructions that create or write it
        self.cache: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()
        self.cache_bytes = 0
        self.next_value = 0
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.shadow = ShadowGenerators(self.program, self.facts, self.rng_instructions, self._run_value_dependent)
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
        while len(self.rng_instructions) <= ins.gen:
            self.rng_instructions.append([])
            self.pinned.append(True)
        self.rng_instructions[ins.gen].append(index)
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

    def encode(self, value: Any) -> Any:
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

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        name = f"{func.namespace}.{func._schema.name.split('::')[-1]}.{func._overloadname}"
        if name in _NO_RECORD or not _returns_tensor(func):
            try:
                return func(*args, **kwargs)
            except (DataDependentOutputException, DynamicOutputShapeException):
                return self._run_for_real(func, args, kwargs, None)
        if _touches_meta(args, kwargs):
            return self._dispatch_meta(func, name, args, kwargs)
        if func is _SET_SOURCE_TENSOR and isinstance(args[0], FakeTensor) and isinstance(args[1], FakeTensor):
            # `dest.set_(src)` (parametrizations do it): `dest` now views `src`'s storage.  Nothing
            # is computed, so nothing is recorded; the next use of `dest` re-views that storage
            # (see `_alias`), as after `dest.data = src`.
            self.ref(args[1])
            return func(*args, **kwargs)
        if func._schema.name.split("::")[-1] not in _METADATA_INPLACE:
            try:
                check_recordable(func, lambda: _call_context(args, kwargs))
            except RecordError as refusal:
                return self._record_unreplayable(func, name, args, kwargs, refusal)
        if func is _DETACH and isinstance(args[0], FakeTensor) and not kwargs:
            # `nn.Parameter(...)` and `.data` detach every tensor: build the alias directly, which
            # is several times cheaper than a FakeTensorMode dispatch.
            pending = self._prepare(func, name, args, kwargs)
            with in_kernel_invocation_manager(self.fake_mode):
                alias = func(args[0])
            out = FakeTensor(self.fake_mode, alias, args[0].device)
            self._commit(pending, args, kwargs, out)
            return out
        if func in _FACTORIES and kwargs.get("device") in (None, _CPU) and not _has_tensor(args, kwargs):
            # A factory of a CPU tensor: make its meta tensor directly and wrap it, as FakeTensorMode
            # would, at a fraction of the cost of its dispatch.
            pending = self._prepare(func, name, args, kwargs)
            with in_kernel_invocation_manager(self.fake_mode):
                meta = func(*args, **dict(kwargs, device=_META_DEVICE))
            out = FakeTensor(self.fake_mode, meta, _CPU)
            self._commit(pending, args, kwargs, out)
            return out
        if func in _FILLS and isinstance(args[0], FakeTensor) and not _has_tensor(args[1:], kwargs):
            # An in-place fill with scalar arguments returns its (unchanged) self: no need to ask
            # FakeTensorMode, which costs more than recording the call.
            self._commit(self._prepare(func, name, args, kwargs), args, kwargs, args[0])
            return args[0]
        pending = self._prepare(func, name, args, kwargs)  # encode inputs before `t_()` & co. change them
        try:
            out = func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            return self._run_for_real(func, args, kwargs, pending)
        self._commit(pending, args, kwargs, out)
        return out

    def _dispatch_meta(self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict) -> Any:
        """An operator that takes or makes meta tensors.

        As in eager, an operator whose results are all on the meta device computes nothing and
        draws nothing (a random fill of a meta tensor consumes no generator state): it is not
        recorded.  An operator that reads only the shape of a meta tensor (``empty_like(t,
        device="cpu")``, which ``Module.to_empty`` calls) is recorded; one that would read a meta
        tensor's values is refused, where eager raises.
        """
        out = func(*args, **kwargs)
        results = [o for o in flatten_outputs(out) if isinstance(o, torch.Tensor)]
        if all(_is_meta(o) for o in results):
            return out
        packet = name.split(".")[1]
        if packet not in SHAPE_ONLY_OPERATORS:
            raise _reads_meta_values(name, args, kwargs)
        if packet in UNINITIALIZED_LIKE:
            # New uninitialized memory of the result's layout: record it without the meta argument.
            op = torch.ops.aten.empty_strided.default
            args, kwargs = (list(out.shape), list(out.stride())), {"dtype": out.dtype, "device": out.device}
            self._commit(self._prepare(op, "aten.empty_strided.default", args, kwargs), args, kwargs, out)
            return out
        self._commit(self._prepare(func, name, args, kwargs), args, kwargs, out)
        return out

    def _record_unreplayable(
        self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict, refusal: RecordError
    ) -> Any:
        """Record a call replay cannot execute, on shapes only, and defer its refusal.

        Constructors run such calls for their shapes (torchvision's SSDLite runs its backbone on
        a dummy image to count output channels).  The call is recorded like any other; if replay
        would ever need it (its values are read while recording, or reach a model tensor), the
        recording is refused with ``refusal`` then.  A random operator is refused at once: its
        draws move the generator every later draw starts from.
        """
        info = OpInfo(name, func)
        if info.is_random:
            raise refusal
        pending = (info, [self.encode(a) for a in args], {k: self.encode(v) for k, v in kwargs.items()}, None)
        try:
            out = func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            raise refusal from None  # its output's shape depends on its values: replay must run it
        self.unreplayable[self._commit(pending, args, kwargs, out)] = str(refusal)
        return out

    def refuse_if_unreplayable(self, needed: Iterator[int], why: str) -> None:
        """Raise the deferred refusal of the first unreplayable call among ``needed``."""
        for index in needed:
            if index in self.unreplayable:
                raise RecordError(f"{self.unreplayable[index]} ({why})")

    def _prepare(
        self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict
    ) -> tuple[OpInfo, list[Any], dict[str, Any], int | None]:
        """Resolve the operator to record and encode its arguments as they are before it runs."""
        packet = name.split(".")[1]
        if packet in _METADATA_INPLACE:
            # `x.t_()` changes x's view in place; the program binds the new view to a new value.
            overload = "int" if packet == "transpose_" else name.split(".")[2]
            name = f"aten.{packet[:-1]}.{overload}"
        info = op_info(name)
        if not info.is_random:
            explicit = generator_overload(func)
            if explicit is None:
                if name.split(".")[1] in ("rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like"):
                    raise RecordError(f"random operator `{name}` has no generator-taking form initrecipe can replay")
                return info, [self.encode(a) for a in args], {k: self.encode(v) for k, v in kwargs.items()}, None
            info = op_info(f"aten.{explicit._schema.name.split('::')[-1]}.{explicit._overloadname}")
            generator = None
        else:
            generator = kwargs.get(info.generator_arg)
            position = info.arg_names.index(info.generator_arg)
            if generator is None and position < len(args):
                generator = args[position]
        problem = random_bounds_problem(info, args, kwargs)
        if problem is not None:
            raise RecordError(
                f"`{info.name}`: {problem}. torch draws such a range inexactly (it warns, and rounds bounds and "
                "values), which initrecipe does not model, so it refuses the draw under every torch release: draw into an "
                "integer dtype and convert (`torch.randint(...).float()`), or keep the bounds within that range"
            )
        with _disable_current_modes():
            gid = self.tracker.before_draw(generator)
        if (self.rng == "portable" and not self.pinned[gid] and info.name not in DRAW_OPERATORS
                and info.name not in REFUSED_DRAWS):  # those are refused by name once names are known
            raise RecordError(
                f"`{info.name}` has no portable sampler (rng='portable' draws with "
                + ", ".join(f"`{name}`" for name in sorted({n.split('.')[1] for n in DRAW_OPERATORS}))
                + "). Record with rng='torch', or draw it from a seeded `torch.Generator`, whose "
                "stream portable recipes replay exactly"
            )
        enc_args = []
        for pos, a in enumerate(args):
            if info.is_random and pos == info.arg_names.index(info.generator_arg):
                enc_args.append(GenRef(gid))
            else:
                enc_args.append(self.encode(a))
        enc_kwargs = {k: self.encode(v) for k, v in kwargs.items() if k != info.generator_arg}
        if info.arg_names.index(info.generator_arg) >= len(args):
            enc_kwargs[info.generator_arg] = GenRef(gid)
        return info, enc_args, enc_kwargs, gid

    def _commit(
        self,
        pending: tuple[OpInfo, list[Any], dict[str, Any], int | None],
        args: tuple,
        kwargs: dict,
        out: Any,
        out_meta: tuple | None = None,
    ) -> int:
        """Append a prepared call and bind its outputs."""
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
                    self.accelerator_draws[index] = (device, _call_site())
            self.rng_instructions[gid].append(index)
            self.pinned_at[index] = self.pinned[gid]
            if self.rng == "portable" and not self.pinned[gid]:
                self.draw_ordinal[index] = len(self.draw_ordinal)
            with _disable_current_modes():
                self.tracker.after_draw(gid, index)
        return index

    # ------------------------------------------------------------------ materialization
    def materialize(self, tensor: torch.Tensor) -> torch.Tensor:
        """The real value ``tensor`` holds at this point of the constructor."""
        if not isinstance(tensor, FakeTensor):
            return tensor
        return self._materialize_value(self.ref(tensor).id, len(self.program))

    def _materialize_value(self, vid: int, end: int) -> torch.Tensor:
        """The real value of value ``vid`` right after instruction ``end - 1``."""
        available = {s: as_of for s, (_, as_of) in self.cache.items() if as_of < end}
        offered = dict(available)
        actions = plan_execution(self.program, self.facts, [vid], end=end, advance_dead_draws=False, available=available)
        if self.unreplayable:
            self.refuse_if_unreplayable((i for i, a in enumerate(actions) if a == Action.RUN),
                                        "the constructor reads values computed from its result while it runs")
        program: list[Instruction] = self.program
        portable: PortableContext | None = None
        if self.rng == "portable":
            reads = [i for i, a in enumerate(actions) if a == Action.RUN and self.is_portable_draw(i)]
            if reads and self.known_keys is None:
                # A portable draw's values depend on the name of the tensor they end up in, known
                # only once the model is built: go on with provisional values (torch's), and let
                # `record` record again with the keys this recording finds.
                self.read_portable_values = True
            elif reads:
                assert self.seed is not None
                program = list(self.program)
                for i in reads:
                    program[i] = _with_key(program[i], self._known_key(i))
                portable = PortableContext(self.seed)
        env: dict[int, torch.Tensor] = {s: self.cache[s][0] for s in available}
        with _disable_current_modes(), torch.no_grad(), torch._C.DisableTorchFunction():
            for _ in execute(program, self.facts, actions, env, self.shadow, portable=portable):
                pass
        result = env[vid]
        self._update_cache(env, actions, offered, available, end)
        return result

    def _known_key(self, index: int) -> PortableKey:
        """The stream of unpinned draw ``index`` as the previous recording keyed it (a stand-in
        for a draw that recording found dead: any fixed key does, its values reach no tensor)."""
        ordinal = self.draw_ordinal[index]
        known = self.known_keys or []
        key = known[ordinal] if ordinal < len(known) else None
        return key if key is not None else PortableKey(f"initrecipe.unkeyed.{ordinal}", 0)

    def _update_cache(
        self,
        env: dict[int, torch.Tensor],
        actions: list[Action],
        offered: dict[int, int],
        used: dict[int, int],
        end: int,
    ) -> None:
        for sid in list(env):
            if sid not in self.writers or self.facts.values.get(sid) is None or self.facts.values[sid].storage != sid:
                continue
            since = used.get(sid, -1)
            complete = all(actions[w] == Action.RUN for w in self.writers[sid] if since < w < end)
            if sid in offered and sid not in used:
                # The plan recomputed it from scratch: keep the fresh copy only if it is complete.
                complete = all(actions[w] == Action.RUN for w in self.writers[sid] if w < end)
            old = self.cache.pop(sid, None)
            if old is not None:
                self.cache_bytes -= old[0].untyped_storage().nbytes()
            if complete:
                tensor = env[sid]
                self.cache[sid] = (tensor, end - 1)
                self.cache_bytes += tensor.untyped_storage().nbytes()
        while self.cache_bytes > _CACHE_BUDGET and self.cache:
            _, (tensor, _) = self.cache.popitem(last=False)
            self.cache_bytes -= tensor.untyped_storage().nbytes()

    def _run_value_dependent(self, index: int) -> None:
        """Run random call ``index``, whose draw count depends on the values of its inputs
        (``poisson``), for real: compute its inputs and draw, so later generator states are known."""
        ins = self.program[index]
        out = next((o for o in ins.outs if o is not None), None)
        if out is None:  # pragma: no cover - value-dependent random operators return a tensor
            raise RecordError(f"random operator `{ins.op}` returns no tensor; initrecipe cannot run it")
        self._materialize_value(out, index + 1)

    def _run_for_real(
        self,
        func: torch._ops.OpOverload,
        args: tuple,
        kwargs: dict,
        pending: tuple[OpInfo, list[Any], dict[str, Any], int | None] | None,
    ) -> Any:
        """Run a data-dependent operator on materialized inputs; record it unless ``pending`` is None."""
        if _touches_meta(args, kwargs):
            raise _reads_meta_values(f"{func.namespace}.{func._schema.name.split('::')[-1]}.{func._overloadname}",
                                     args, kwargs)
        real_args = map_arg(args, torch.Tensor, self.materialize)
        real_kwargs = map_arg(kwargs, torch.Tensor, self.materialize)
        with _disable_current_modes(), torch.no_grad(), torch._C.DisableTorchFunction():
            result = func(*real_args, **real_kwargs)
        if pending is None:
            return result
        info = pending[0]
        if info.written_args:
            raise RecordError(
                f"`{info.name}` writes to a tensor through a data-dependent index while recording; "
                "initrecipe cannot record it yet. Compute the index outside the constructor or use "
                "`torch.where` instead"
            )
        flat = flatten_outputs(result)
        fakes = [self.fake_mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in flat]
        out_meta = tuple((t.dtype, tuple(t.shape)) for t in flat if isinstance(t, torch.Tensor))
        packed = fakes if isinstance(result, (list, tuple)) else fakes[0]
        index = self._commit(pending, args, kwargs, packed, out_meta)
        for vid, real in zip(self.program[index].outs, flat):
            if vid is not None:
                self.cache[vid] = (real, index)
                self.cache_bytes += real.untyped_storage().nbytes()
        return packed


def _explicit_dtype(info: OpInfo, args: list[Any], kwargs: dict[str, Any], out: Any) -> dict[str, Any]:
    """``kwargs`` with the dtype an operator's omitted ``dtype`` argument resolved to.

    Recipes mean torch's default dtype ``float32`` where an operator takes its default; a
    constructor that calls ``torch.set_default_dtype`` made its factories build another dtype,
    which the recipe then names (the output's dtype, which ``dtype=None`` would have produced).
    """
    if not info.takes_default_dtype or info.arg_names.index("dtype") < len(args) or kwargs.get("dtype") is not None:
        return kwargs
    first = next((o for o in flatten_outputs(out) if isinstance(o, torch.Tensor)), None)
    return kwargs if first is None else dict(kwargs, dtype=first.dtype)


def _reads_meta_values(name: str, args: tuple, kwargs: dict) -> RecordError:
    """The refusal of an operator that reads the values of a meta tensor, as eager refuses it."""
    return RecordError(
        f"`{name}` reads the values of a meta tensor{_call_context(args, kwargs)}; meta tensors hold no values "
        "(eager PyTorch raises here too). Allocate the tensor on a real device first "
        "(`module.to_empty(device=\"cpu\")`, `torch.empty_like(t, device=\"cpu\")`) and initialize it"
    )


def _touches_meta(args: tuple, kwargs: dict) -> bool:
    """Whether a call takes a meta tensor (fake or real) or creates one (``device=meta``)."""
    device = kwargs.get("device")
    if isinstance(device, torch.device) and device.type == "meta":
        return True
    for a in args:
        if isinstance(a, torch.Tensor):
            if _is_meta(a):
                return True
        elif isinstance(a, (list, tuple)) and any(isinstance(t, torch.Tensor) and _is_meta(t) for t in a):
            return True
    return any(isinstance(v, torch.Tensor) and _is_meta(v) for v in kwargs.values())


def _is_meta(tensor: torch.Tensor) -> bool:
    """Whether a tensor is on the meta device (a fake tensor by its fake device)."""
    return tensor.fake_device.type == "meta" if isinstance(tensor, FakeTensor) else tensor.is_meta


class _RecordingMode(TorchDispatchMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if _decomposable(func):
            # A composite operator that reaches the dispatcher whole (under `torch.inference_mode()`,
            # `reshape` does): record the operators it is made of.
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return self.recorder.dispatch(func, args, kwargs)


@functools.lru_cache(maxsize=None)
def _decomposable(func: torch._ops.OpOverload) -> bool:
    """Whether ``func`` is outside the allowlist but has a composite (decomposing) kernel."""
    return (
        func.namespace == "aten"
        and func._schema.name.split("::")[-1] not in ALLOWED_OPERATORS
        and func.has_kernel_for_dispatch_key(torch._C.DispatchKey.CompositeImplicitAutograd)
    )


@contextlib.contextmanager
def _numpy_materializes(recorder: _Recorder) -> Iterator[None]:
    """Let ``tensor.numpy()`` (and so ``np.asarray(tensor)``) return true values while recording."""
    original = torch.Tensor.numpy

    def numpy(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, FakeTensor):
            real = recorder.materialize(self)
            with _disable_current_modes():
                return original(real.detach(), *args, **kwargs)
        return original(self, *args, **kwargs)

    torch.Tensor.numpy = numpy  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.numpy = original  # type: ignore[method-assign]


def _holds_fake(data: Any) -> bool:
    """Whether a (nested) list or tuple holds a fake tensor."""
    return any(isinstance(d, FakeTensor) or (isinstance(d, (list, tuple)) and _holds_fake(d)) for d in data)


@contextlib.contextmanager
def _sequence_data_materializes(recorder: _Recorder) -> Iterator[None]:
    """Let ``torch.tensor``/``torch.as_tensor``/``Tensor.new_tensor`` read tensors inside lists.

    Given a list of tensors (``torch.tensor([f * 2 for f in freqs])``, as torchtune's Llama 3.1
    RoPE scaling does), torch reads each element's memory directly, below the dispatcher, which
    fake tensors do not have.  While recording, the fake elements of such a list are replaced by
    their true values, computed on demand as for ``.item()``; the new tensor is then a constant,
    exactly as eager builds it.
    """

    def real(data: Any) -> Any:
        if isinstance(data, FakeTensor):
            return recorder.materialize(data)
        if isinstance(data, (list, tuple)):
            return type(data)(real(d) for d in data)
        return data

    def reading(original: Callable[..., torch.Tensor], position: int) -> Callable[..., torch.Tensor]:
        def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
            data = args[position] if len(args) > position else kwargs.get("data")
            if isinstance(data, (list, tuple)) and _holds_fake(data):
                if len(args) > position:
                    args = args[:position] + (real(data),) + args[position + 1:]
                else:
                    kwargs = dict(kwargs, data=real(data))
            return original(*args, **kwargs)

        return wrapper

    originals = (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor)
    # `with torch.device(...)` finds factories in a set it builds and caches on first use; build
    # it now, from torch's own functions, not from the wrappers below (a set built while they are
    # installed would hold them, and the device context would ignore `torch.tensor` for good).
    constructors = getattr(getattr(torch.utils, "_device", None), "_device_constructors", None)
    if constructors is not None:
        constructors()
    torch.tensor = reading(originals[0], 0)  # type: ignore[assignment]
    torch.as_tensor = reading(originals[1], 0)  # type: ignore[assignment]
    torch.Tensor.new_tensor = reading(originals[2], 1)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.tensor, torch.as_tensor, torch.Tensor.new_tensor = originals  # type: ignore[misc]


_INTERNAL_FILES = (  # initrecipe itself and torch's private machinery (dispatch, fake tensors)
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # the whole package
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "_"),
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "utils", "_"),
)
_TORCH_FILES = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "")


def _call_context(args: tuple, kwargs: dict) -> str:
    """`` (on tensors of shape ..., called from `file:line` in `fn`)``: where an operator the
    recorder refuses was called, for the error to name."""
    tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
    tensors += [t for a in [*args, *kwargs.values()] if isinstance(a, (list, tuple)) for t in a
                if isinstance(t, torch.Tensor)]
    shapes = [f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors]
    parts = [f"on tensors of shape {', '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}"] if shapes else []
    site = _call_site()
    if site:
        parts.append(site)
    return f" ({', '.join(parts)})" if parts else ""


def _call_site() -> str:
    """``called from `file:line` in `fn` ``: the innermost frame outside initrecipe and torch's
    internals, and, when that frame is torch's own (``nn.functional``, a module's ``forward``),
    the first frame outside torch, the model's code (``, reached from `file:line` in `fn` ``)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL_FILES):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - a constructor always has a frame of its own
        return ""
    site = f"called from `{frame.f_code.co_filename}:{frame.f_lineno}` in `{frame.f_code.co_name}`"
    outer = frame
    while outer is not None and os.path.abspath(outer.f_code.co_filename).startswith((_TORCH_FILES, _INTERNAL_FILES[0])):
        outer = outer.f_back
    if outer is not None and outer is not frame:
        site += f", reached from `{outer.f_code.co_filename}:{outer.f_lineno}` in `{outer.f_code.co_name}`"
    return site


@contextlib.contextmanager
def _eager_deepcopy() -> Iterator[None]:
    """Deep-copy fake tensors as eager deep-copies real ones (torchtune clones its layers so).

    torch's ``Tensor.__deepcopy__`` asks a fake tensor for its ``data_ptr()`` (deprecated: it
    warns, and the test suite's warnings are errors) and clones each tensor on its own, which
    compacts views and splits storages the originals share.  Eager copies each storage once per
    ``deepcopy`` call and gives every copied tensor the original's view of it; so does this, for
    the fake tensors of the recording (the copy of the whole storage is recorded as a ``clone`` of
    an ``as_strided`` view, so replay allocates what eager allocates).
    """
    original = torch.Tensor.__deepcopy__

    def deepcopy(self: torch.Tensor, memo: dict) -> torch.Tensor:
        if (type(self) is not FakeTensor or not self.is_leaf or id(self) in memo or self.is_conj()
                or self.is_neg() or self.grad is not None):
            return original(self, memo)
        storage = self.untyped_storage()
        key = ("initrecipe: copy of storage", storage._cdata)
        with torch.no_grad():
            base = memo.get(key)
            if base is None:
                whole = self.as_strided((storage.nbytes() // self.element_size(),), (1,), 0)
                base = memo[key] = whole.clone()
            if base.dtype != self.dtype:  # one storage viewed as two dtypes (`x.view(torch.int32)`)
                base = base.view(self.dtype)
            copied = base.as_strided(self.size(), self.stride(), self.storage_offset())
        if self.requires_grad:
            copied.requires_grad_()
        own = {k: v for k, v in self.__dict__.items() if k not in copied.__dict__}  # `_is_param`, user attributes
        copied.__dict__.update(copy.deepcopy(own, memo))
        memo[id(self)] = copied
        return copied

    torch.Tensor.__deepcopy__ = deepcopy  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.__deepcopy__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _eager_module_conversion() -> Iterator[None]:
    """Make ``Module._apply`` (behind ``to_empty``, ``.to()``, ``.cuda()``, ``.half()``) convert fake
    parameters the way eager converts real ones.

    For fake parameters torch's ``Module._apply`` always swaps tensor objects
    (``torch.utils.swap_tensors``), which fails between devices (``to_empty`` from meta).  Eager,
    for real tensors, assigns ``param.data`` when the two tensors have compatible types (any two
    dense devices, a dtype change) and otherwise puts a new ``Parameter`` in the module; with
    ``torch.__future__``'s swap flag set it swaps.  While recording, ``_apply`` makes the same
    choice on the fake tensors, so object identity (ties) and devices follow eager.
    """
    original_swap = torch.utils.swap_tensors
    original_apply = torch.nn.Module._apply

    def swap_tensors(t1: torch.Tensor, t2: torch.Tensor) -> None:
        if isinstance(t1, FakeTensor) and isinstance(t2, FakeTensor):
            _set_data(t1, t2.data if isinstance(t2, torch.nn.Parameter) else t2)
            return
        original_swap(t1, t2)

    def apply(self: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor],
              recurse: bool = True) -> torch.nn.Module:
        if not any(isinstance(t, FakeTensor) for t in [*self._parameters.values(), *self._buffers.values()]):
            return original_apply(self, fn, recurse)
        if recurse:
            for child in self.children():
                child._apply(fn)
        for key, param in self._parameters.items():
            if param is not None:
                self._parameters[key] = _converted(param, fn)
        for key, buf in self._buffers.items():
            if buf is not None:
                self._buffers[key] = fn(buf)
        return self

    torch.utils.swap_tensors = swap_tensors
    torch.nn.Module._apply = apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.utils.swap_tensors = original_swap
        torch.nn.Module._apply = original_apply  # type: ignore[method-assign]


def _set_data(param: torch.Tensor, data: torch.Tensor) -> None:
    """``param.data = data``, moving a fake parameter's device label with its data as eager does."""
    param.data = data
    if isinstance(param, FakeTensor) and isinstance(data, FakeTensor):
        param.fake_device = data.fake_device


def _converted(param: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The parameter ``Module._apply(fn)`` leaves in a module, decided as eager decides it."""
    with torch.no_grad():
        applied = fn(param)
    grad = param.grad
    keep = torch.__future__.get_swap_module_params_on_conversion() or (
        torch._has_compatible_shallow_copy_type(param, applied)
        and not torch.__future__.get_overwrite_module_params_on_conversion()
    )
    if keep and torch._has_compatible_shallow_copy_type(param, applied):
        _set_data(param, applied)
        out = param
    else:
        out = torch.nn.Parameter(applied, param.requires_grad) if isinstance(param, torch.nn.Parameter) else applied
    if grad is not None:
        with torch.no_grad():
            out.grad = fn(grad).requires_grad_(grad.requires_grad)
    return out


@contextlib.contextmanager
def _device_labels() -> Iterator[None]:
    """Let ``Tensor.cuda()`` and ``Tensor.to("cuda")`` move fake tensors on a machine without CUDA.

    While recording, a device is a label (a recipe is device-neutral; replay places every tensor
    on ``replay(device=...)``), but these two methods initialize the device's runtime before they
    dispatch, which fails where torch has no CUDA.  For a fake tensor and an accelerator target
    they dispatch the copy (``aten._to_copy``) directly, as eager's ``to`` does.
    """
    original_to, original_cuda = torch.Tensor.to, torch.Tensor.cuda

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(self, FakeTensor):
            rest = dict(kwargs)
            copy = bool(rest.pop("copy", False))
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **rest)
            if device is not None and device.type not in ("cpu", "meta"):
                return _to_label(self, device, dtype, non_blocking, copy, memory_format)
        return original_to(self, *args, **kwargs)

    def cuda(self: torch.Tensor, device: Any = None, non_blocking: bool = False,
             memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
        if not isinstance(self, FakeTensor):
            return original_cuda(self, device, non_blocking, memory_format=memory_format)
        target = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
        return _to_label(self, target, None, non_blocking, False, memory_format)

    torch.Tensor.to, torch.Tensor.cuda = to, cuda  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.cuda = original_to, original_cuda  # type: ignore[method-assign]


def _to_label(tensor: FakeTensor, device: torch.device, dtype: torch.dtype | None, non_blocking: bool, copy: bool,
              memory_format: torch.memory_format | None) -> torch.Tensor:
    """``tensor.to(device, dtype)`` for an accelerator ``device``: ``tensor`` itself when nothing changes."""
    if device.index is None:
        device = torch.device(device.type, 0)
    same = (tensor.fake_device == device and dtype in (None, tensor.dtype)
            and memory_format in (None, torch.preserve_format))
    if same and not copy:
        return tensor
    kwargs: dict[str, Any] = {"device": device}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if non_blocking:
        kwargs["non_blocking"] = True
    if memory_format is not None:
        kwargs["memory_format"] = memory_format
    if isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):
        raise RecordError(
            f"`Tensor.to`/`.cuda()` moved an uninitialized parameter of a lazy module to `{device}`{_call_context((), {})}: "
            "initrecipe records lazy modules on accelerator labels only once they are materialized. Run the dry-run "
            "forward on the CPU first, then move the module (`m(dummy); m.to(device)`)"
        )
    return torch.ops.aten._to_copy.default(tensor, **kwargs)


@contextlib.contextmanager
def _parameter_class_calls() -> Iterator[None]:
    """Let ``type(param)(data, requires_grad=...)`` re-wrap a fake parameter as eager re-wraps a real one.

    accelerate's ``init_empty_weights`` and ``set_module_tensor_to_device`` (and loaders like them)
    rebuild a parameter by calling its class.  Eager, that class is ``nn.Parameter``; while
    recording, a parameter is a ``FakeTensor`` (marked ``_is_param``), whose constructor takes a
    fake tensor mode.  Called with a tensor first, as ``nn.Parameter`` is, it builds the parameter
    ``nn.Parameter`` would (other keyword arguments, the old parameter's ``__dict__``, become
    attributes, as accelerate means them, less the fake tensor's own state).
    """
    original = FakeTensor.__new__

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        if cls is FakeTensor and args and isinstance(args[0], torch.Tensor):
            requires_grad = kwargs.pop("requires_grad", args[1] if len(args) > 1 else True)
            kwargs.pop("_is_param", None)
            param = torch.nn.Parameter(args[0], requires_grad)
            for key, value in kwargs.items():
                if key not in param.__dict__:  # a user attribute, not the fake tensor's own state
                    setattr(param, key, value)
            return param
        return original(cls, *args, **kwargs)

    FakeTensor.__new__ = new  # type: ignore[method-assign]
    try:
        yield
    finally:
        FakeTensor.__new__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _fake_lazy_parameters() -> Iterator[None]:
    """Let lazy modules (``nn.LazyLinear``) create and materialize their parameters on fake tensors.

    ``UninitializedParameter``/``UninitializedBuffer`` wrap a plain tensor with
    ``Tensor._make_subclass``, which a fake tensor cannot be.  While recording they are fake
    tensors of a class that is both the uninitialized class (so ``is_lazy``, ``isinstance(p,
    nn.Parameter)`` and the lazy module's checks hold) and ``FakeTensor``; ``materialize`` gives
    them fake storage of the inferred shape (``empty``, as eager) and turns them into a plain fake
    parameter or buffer, exactly where eager turns them into ``Parameter``/``Tensor``.
    """
    from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

    originals = (UninitializedParameter.__new__, UninitializedBuffer.__new__, UninitializedTensorMixin.materialize)

    def new(cls: type, requires_grad: bool = True, device: Any = None, dtype: Any = None) -> torch.Tensor:
        tensor = torch.empty(0, device=device, dtype=dtype)
        if not isinstance(tensor, FakeTensor):  # pragma: no cover - record runs constructors under fake tensors
            raise RecordError("an uninitialized parameter was created outside the recording's fake tensors")
        tensor.requires_grad_(requires_grad)
        if issubclass(cls, UninitializedParameter):
            tensor._is_param = True
        tensor.__class__ = _fake_lazy_class(cls)
        return tensor

    def materialize(self: Any, shape: Any, device: Any = None, dtype: Any = None) -> None:
        if not isinstance(self, FakeTensor):
            return originals[2](self, shape, device, dtype)
        device = self.fake_device if device is None else device
        dtype = torch.Tensor.dtype.__get__(self) if dtype is None else dtype
        self.__class__ = FakeTensor
        _set_data(self, torch.empty(shape, device=device, dtype=dtype))

    UninitializedParameter.__new__ = new  # type: ignore[method-assign]
    UninitializedBuffer.__new__ = new  # type: ignore[method-assign]
    UninitializedTensorMixin.materialize = materialize  # type: ignore[method-assign]
    try:
        yield
    finally:
        (UninitializedParameter.__new__, UninitializedBuffer.__new__,  # type: ignore[method-assign]
         UninitializedTensorMixin.materialize) = originals


_LAZY_CLASSES: dict[type, type] = {}


def _fake_lazy_class(cls: type) -> type:
    """The class of a fake ``cls`` (an uninitialized parameter or buffer class) while recording."""
    fake = _LAZY_CLASSES.get(cls)
    if fake is None:
        fake = _LAZY_CLASSES[cls] = type(f"Fake{cls.__name__}", (cls, FakeTensor), {"cls_to_become": FakeTensor})
    return fake


@contextlib.contextmanager
def _portable_trunc_normal(recorder: _Recorder) -> Iterator[None]:
    """In ``rng="portable"`` recordings, make ``nn.init.trunc_normal_`` an inverse-CDF transform.

    torch's ``trunc_normal_`` is a rejection sampler: how many draws it makes depends on the values
    drawn, which portable recording cannot know (keys depend on names known only at the end).  For
    unpinned draws it is recorded instead as ``uniform_(2Φ(α)-1, 2Φ(β)-1)``, ``clamp_`` into the
    open interval (-1, 1), ``erfinv_``, ``mul_(std·√2)``, ``add_(mean)``, ``clamp_`` into the
    tensor dtype's values within [a, b], computed in float32 (float64 for float64 tensors) and
    copied into the tensor, rounded once: exactly truncated-normal in distribution, elementwise,
    with the portable ``erfinv``, never ±inf and never a far bound (docs/PORTABLE.md).  Recipes
    recorded before this (the chain in the tensor's own dtype, without the open-interval clamp)
    keep replaying to their own bits.  Pinned draws keep torch's own sampler.
    """
    import math

    import torch.nn.init as init_module

    original = init_module._no_grad_trunc_normal_

    def trunc_normal(tensor: torch.Tensor, mean: float, std: float, a: float, b: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        own = generator is None or generator is torch.default_generator
        if not (isinstance(tensor, FakeTensor) and own and not recorder.pinned_now(torch.default_generator)):
            return original(tensor, mean, std, a, b, generator)

        def norm_cdf(x: float) -> float:
            return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

        with torch.no_grad():
            low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
            wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
            work = tensor if tensor.dtype == wide else torch.empty(tensor.shape, dtype=wide, device=tensor.device)
            work.uniform_(2 * low - 1, 2 * high - 1)
            work.clamp_(min=-_BELOW_ONE, max=_BELOW_ONE)
            work.erfinv_()
            work.mul_(std * math.sqrt(2.0))
            work.add_(mean)
            work.clamp_(min=inner_bound(a, tensor.dtype, up=True), max=inner_bound(b, tensor.dtype, up=False))
            if work is not tensor:
                tensor.copy_(work)
        return tensor

    init_module._no_grad_trunc_normal_ = trunc_normal
    try:
        yield
    finally:
        init_module._no_grad_trunc_normal_ = original


_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1: erfinv of it is finite (3.93)

# Floating dtypes as (struct format of the value, bits, bits dropped from a float32): bfloat16 is
# the top half of a float32.
_FLOAT_LAYOUT = {torch.float32: ("<f", 32, 0), torch.float16: ("<e", 16, 0), torch.bfloat16: ("<f", 32, 16)}


def inner_bound(value: float, dtype: torch.dtype, up: bool) -> float:
    """The value of ``dtype`` nearest to ``value`` on its inner side: the smallest one >= ``value``
    (``up``) or the largest one <= it; a bound beyond the dtype's range gives its largest finite
    value (a ``float`` that ``dtype`` holds exactly; infinite and NaN bounds are returned as given)."""
    import math
    import struct

    if not math.isfinite(value) or dtype == torch.float64 or dtype not in _FLOAT_LAYOUT:
        return value
    fmt, width, drop = _FLOAT_LAYOUT[dtype]
    sign_bit = 1 << (width - drop - 1)

    def to_ordered(x: float) -> int:
        bits = struct.unpack("<I" if width == 32 else "<H", struct.pack(fmt, x))[0] >> drop
        return -(bits & (sign_bit - 1)) if bits & sign_bit else bits

    def from_ordered(o: int) -> float:
        bits = (-o | sign_bit) if o < 0 else o
        return struct.unpack(fmt, struct.pack("<I" if width == 32 else "<H", bits << drop))[0]

    finite_max = from_ordered((sign_bit - 1) - (1 << (23 - drop if width == 32 else 10)))
    if value >= finite_max:
        return finite_max
    if value <= -finite_max:
        return -finite_max
    o = to_ordered(value)  # a neighbour (rounded, or for bfloat16 truncated); then step to the inner side
    step = 1 if up else -1
    while (from_ordered(o) < value) if up else (from_ordered(o) > value):
        o += step
    while (from_ordered(o - step) >= value) if up else (from_ordered(o - step) <= value):
        o -= step
    return from_ordered(o)


def _collect(recorder: _Recorder, model: torch.nn.Module) -> list[TensorEntry]:
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
            vid = recorder.ref(tensor).id
            meta = recorder.facts.values[vid]
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


def record(
    model_fn: Callable[[], torch.nn.Module],
    *,
    seed: int | None = None,
    rng: str = "torch",
    sync_rng: bool = True,
) -> Recipe:
    """Run ``model_fn`` without allocating tensor storage and capture how it initializes its tensors.

    Args:
        model_fn: a zero-argument callable returning an ``nn.Module``; it runs once, on fake
            tensors that behave like CPU tensors (``is_meta`` is False, ``device`` is ``cpu``).
        seed: seed torch's CPU generator with it first, as ``torch.manual_seed(seed)`` does; None
            records from the generator's current state, so the recipe reproduces what
            ``model_fn()`` would have produced right now.
        rng: ``"torch"``: replay reproduces eager PyTorch on CPU bit for bit.
        sync_rng: leave torch's generators exactly where ``model_fn()`` would have left them, so
            code that draws afterwards is unaffected.  The final states are computed, not drawn
            (``schema/TORCH_RNG.md``): a few milliseconds even for a 7B-parameter model.  With
            False, the generators are put back where they were before ``record``.

    Returns:
        The :class:`Recipe`.

    Raises:
        RecordError: the constructor did something initrecipe cannot capture faithfully.

    Warns:
        UninitializedWarning: some tensors are (fully or partly) written by no instruction, so
            eager and replay give them whatever memory holds; the message names the first few and
            counts the rest, ``recipe.uninitialized_names`` lists them all.  Silence it with
            ``warnings.simplefilter("ignore", initrecipe.UninitializedWarning)`` where that is
            intended (the weights are loaded later).

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> recipe.names, recipe.rng
        (['weight', 'bias'], 'torch')

    .. Warning:: while recording, torch's generators hold placeholder states; code inside
       ``model_fn`` that reads ``torch.get_rng_state()`` as data (not to restore it) sees them.
    """
    if rng not in RNG_MODES:
        raise RecordError(f"rng must be one of {list(RNG_MODES)}, not {rng!r}")
    if rng == "portable" and (type(seed) is not int or not 0 <= seed < 2**64):
        raise RecordError(
            f"rng='portable' needs an explicit seed in 0 … 2**64-1 (every stream's key derives from it), not {seed!r}"
        )
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a zero-argument callable returning an nn.Module, not {type(model_fn).__name__}")
    if getattr(_ACTIVE, "recording", False):
        raise RecordError("`initrecipe.record` was called inside another `record`; nested recording is not supported")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
    before = _Defaults.now()
    try:
        recipe, left = _record_attempts(model_fn, rng, seed, sync_rng)
    except BaseException:
        before.apply()  # a failed recording changes nothing
        raise
    left.apply()  # as `model_fn()` left them, as eager leaves them
    found = recipe.uninitialized
    if found:
        warnings.warn(uninitialized_message(found), UninitializedWarning, stacklevel=2)
    return recipe


def _record_attempts(
    model_fn: Callable[[], torch.nn.Module], rng: str, seed: int | None, sync_rng: bool
) -> tuple[Recipe, _Defaults]:
    """Record until the recording is stable (see :data:`_PORTABLE_RECORDINGS`); the recipe and the
    torch defaults ``model_fn`` left.  Every attempt starts from the defaults ``record`` found."""
    before = _Defaults.now()
    known_keys: list[PortableKey | None] | None = None
    for attempt in range(_PORTABLE_RECORDINGS):
        before.apply()
        recorder, program, entries, keys, final_states, left = _record_once(model_fn, rng, seed, sync_rng, known_keys)
        if not recorder.read_portable_values and (known_keys is None or keys == known_keys):
            for generator, state in final_states:
                generator.set_state(state)
            break
        known_keys = keys  # user code read provisional values: record again, computing them with these keys
    else:
        raise RecordError(
            "the constructor reads the values of random tensors while it runs (`.item()`, `bool(...)`, a "
            "boolean mask ...), and with rng='portable' what it reads changes which tensors those values "
            f"end up in, recording after recording ({_PORTABLE_RECORDINGS} tried). Record with rng='torch', "
            "or draw these values from a seeded `torch.Generator`"
        )
    recipe = Recipe(rng=rng, seed=seed, generators=recorder.tracker.count, program=program, tensors=entries)
    return recipe, left


@dataclass(frozen=True)
class _Defaults:
    """torch's process-wide tensor defaults: ``torch.get_default_dtype()`` and the device of
    ``torch.set_default_device`` (None when unset).  A constructor may change them; ``record``
    leaves them as the constructor left them, as running it eagerly does, and computes its own
    tensors under :data:`_PLAIN`."""

    dtype: torch.dtype
    device: torch.device | None

    @staticmethod
    def now() -> _Defaults:
        context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
        device = getattr(context, "device", None)
        return _Defaults(torch.get_default_dtype(), None if device is None else torch.device(device))

    def apply(self) -> None:
        if torch.get_default_dtype() is not self.dtype:
            torch.set_default_dtype(self.dtype)
        if _Defaults.now().device != self.device:
            torch.set_default_device(self.device)


_PLAIN = _Defaults(torch.float32, None)


_PORTABLE_RECORDINGS = 4
"""rng="portable": how many times `record` runs a constructor that reads random values before it
gives up (twice is the rule: once to learn the keys, once to compute what it reads with them)."""


def _record_once(
    model_fn: Callable[[], torch.nn.Module], rng: str, seed: int | None, sync_rng: bool,
    known_keys: list[PortableKey | None] | None,
) -> tuple[_Recorder, list[Instruction], list[TensorEntry], list[PortableKey | None],
           list[tuple[torch.Generator, torch.Tensor]], _Defaults]:
    """One recording: the recorder, the compacted program and entries, the keys of the unpinned
    draws by ordinal (rng="portable"; None for a dead draw), and (with ``sync_rng``) the state each
    tracked generator must be left in, and the torch defaults ``model_fn`` left (the process is
    left with :data:`_PLAIN` ones).  The generators are left as they were before."""
    recorder = _Recorder(rng, seed, known_keys)
    _ACTIVE.recording = True
    finished = False
    try:
        recorder.tracker.start(torch.default_generator, seed)
        portable_inits = _portable_trunc_normal(recorder) if rng == "portable" else contextlib.nullcontext()
        with recorder.fake_mode, _RecordingMode(recorder), _numpy_materializes(recorder), \
                _sequence_data_materializes(recorder), _eager_deepcopy(), _eager_module_conversion(), \
                _device_labels(), _fake_lazy_parameters(), _parameter_class_calls(), portable_inits:
            model = model_fn()
            if not isinstance(model, torch.nn.Module):
                raise RecordError(f"model_fn returned {type(model).__name__}; it must return an nn.Module")
            entries = _collect(recorder, model)
        left = _Defaults.now()
        _PLAIN.apply()
        final_states = _final_states(recorder) if sync_rng and not recorder.read_portable_values else []
        recorder.tracker.restore_originals()
        finished = True
    finally:
        _ACTIVE.recording = False
        if not finished:
            recorder.tracker.restore_originals()
    program = list(recorder.program)
    portable = [i for i in range(len(program)) if recorder.is_portable_draw(i)]
    for i in portable:  # planned as draws that advance no generator; their keys come below
        program[i] = _with_key(program[i], PortableKey("", 0))
    actions = plan_execution(program, recorder.facts, {e.value for e in entries}, advance_dead_draws=True)
    if recorder.accelerator_draws:
        _refuse_accelerator_draws(recorder, program, entries, actions)
    if recorder.unreplayable:
        recorder.refuse_if_unreplayable((i for i in recorder.unreplayable if actions[i] != Action.SKIP),
                                        "its result reaches the model's parameters or buffers")
        needed = _needed_instructions(program, actions, set())
        recorder.refuse_if_unreplayable((i for i in recorder.unreplayable if needed[i]),
                                        "a discarded random draw on its result moves the generator for the draws after it")
    drop = _key_portable_draws(recorder, program, entries, portable, actions) if rng == "portable" else set()
    keys = [_key_of(program[i]) if actions[i] == Action.RUN else None for i in portable]
    program, entries = _compact(program, recorder.facts, entries, actions, drop)
    return recorder, program, entries, keys, final_states, left


def _refuse_accelerator_draws(recorder: _Recorder, program: list[Instruction], entries: list[TensorEntry],
                              actions: list[Action]) -> None:
    """rng="torch": refuse the first random draw made on an accelerator, naming the tensor it fills.

    Eager draws on an accelerator come from that device's generator, whose values depend on the
    device model and the kernel's launch configuration; a torch-mode recipe reproduces torch's CPU
    generator only, so it cannot promise eager's bits for them.
    """
    index = min(recorder.accelerator_draws)
    device, site = recorder.accelerator_draws[index]
    names = _draw_sinks(program, recorder.facts, actions, {index}, entries).get(index)
    what = f"`{sorted(names)[0]}`" if names else "a tensor that reaches no parameter or buffer"
    raise RecordError(
        f"random draw `{program[index].op}` on a `{device}` tensor, filling {what}"
        f"{' (' + site + ')' if site else ''}: rng='torch' reproduces torch's CPU generator, and an "
        "accelerator's random stream cannot be recorded (its values depend on the device model). Either "
        "draw on the CPU (create and initialize the tensor on \"cpu\", then move the model with `.to(device)`), "
        "or record with rng='portable', whose draws are identical on every device"
    )


def _draw_device(args: tuple, kwargs: dict, out: Any) -> torch.device:
    """The device a random call draws on: its target's (in-place fills) or its result's."""
    for t in [*args[:1], *flatten_outputs(out)]:
        if isinstance(t, FakeTensor):
            return t.fake_device
    return _CPU


def _key_of(ins: Call) -> PortableKey | None:
    return next((a for a in [*ins.args, *ins.kwargs.values()] if isinstance(a, PortableKey)), None)


def _final_states(recorder: _Recorder) -> list[tuple[torch.Generator, torch.Tensor]]:
    """The state eager execution would have left each tracked generator in."""
    out = []
    for gid, generator in enumerate(recorder.tracker.objects):
        position = recorder.tracker.position_of(gid)
        if position is None:
            # User code set this generator after its last draw: that state is eager's too.
            out.append((generator, generator.get_state()))
            continue
        with _disable_current_modes():
            out.append((generator, recorder.shadow.state_after(gid, position)))
    return out


def _with_key(ins: Call, key: PortableKey) -> Call:
    """``ins`` drawing from portable stream ``key`` instead of its generator."""
    args = tuple(key if isinstance(a, (GenRef, PortableKey)) else a for a in ins.args)
    kwargs = {k: key if isinstance(v, (GenRef, PortableKey)) else v for k, v in ins.kwargs.items()}
    return Call(ins.op, ins.outs, args, kwargs, ins.out_meta)


def _key_portable_draws(recorder: _Recorder, program: list[Instruction], entries: list[TensorEntry],
                        portable: list[int], actions: list[Action]) -> set[int]:
    """Give every live unpinned draw (``portable``) its stream key, in ``program`` (a copy of the
    recording, planned as ``actions``).

    A draw's stream is the name of the tensor its values flow into (the first such name in sorted
    order when they flow into several) and its position the draw's ordinal among that stream's
    draws, in program order.  Returns the RNG positioning instructions that only position the
    unpinned stream, which a portable recipe does not need.
    """
    facts = recorder.facts
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
        program[i] = _with_key(program[i], PortableKey(stream, position))
    return {
        i for i, pinned in recorder.pinned_at.items() if not pinned and not isinstance(program[i], Call)
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


def _renumber(value: Any, renumber: dict[int, int]) -> Any:
    """An argument with its tensor references renumbered."""
    return map_arg(value, Ref, lambda ref: Ref(renumber[ref.id]))

"""The recorder's dispatch: every operator the constructor runs under fake tensors, routed to the
program builder (recorded), run on shapes only (meta tensors, calls replay cannot execute), or run
for real on materialized inputs (data-dependent operators)."""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    in_kernel_invocation_manager,
)
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from initrecipe.analysis.meta_outputs import flatten_outputs
from initrecipe.analysis.preconditions import random_bounds_problem
from initrecipe.capture.call_site import call_context
from initrecipe.capture.materializer import Materializer
from initrecipe.capture.program_builder import PendingCall, ProgramBuilder
from initrecipe.errors import RecordError
from initrecipe.program.ir import GenRef, PortableKey
from initrecipe.program.operators import (ALLOWED_OPERATORS, DRAW_OPERATORS, RECORD_SHORTCUTS, REFUSED_DRAWS,
                                          SHAPE_ONLY_OPERATORS, UNINITIALIZED_LIKE, OpInfo, RecordShortcut,
                                          check_recordable, generator_overload, op_info, resolve_op)
from initrecipe.program.walk import map_arg

__all__ = ["Recorder", "RecordingMode"]

_NO_RECORD = frozenset({"prim.device.default"})

_DETACH = torch.ops.aten.detach.default
_SET_SOURCE_TENSOR = torch.ops.aten.set_.source_Tensor
_CPU = torch.device("cpu")
_META_DEVICE = torch.device("meta")
_FACTORIES = frozenset(resolve_op(n) for n, how in RECORD_SHORTCUTS.items() if how is RecordShortcut.META_FACTORY)
_METADATA_INPLACE = frozenset("t_ transpose_ squeeze_ unsqueeze_ as_strided_ swapdims_ swapaxes_".split())
_FILLS = frozenset(resolve_op(n) for n, how in RECORD_SHORTCUTS.items() if how is RecordShortcut.SCALAR_FILL)


def _has_tensor(args: Sequence[object], kwargs: dict) -> bool:
    return any(isinstance(a, torch.Tensor) for a in args) or any(isinstance(v, torch.Tensor) for v in kwargs.values())


def _returns_tensor(func: torch._ops.OpOverload) -> bool:
    for ret in func._schema.returns:
        text = str(ret.type)
        if "Tensor" in text:
            return True
    return False


class Recorder:
    """Records what a model constructor does while it runs under fake tensors.

    ``fake_mode`` makes the tensors, ``builder`` holds the program being built, and
    ``materializer`` computes the true value of a tensor the constructor reads.
    """

    def __init__(self, rng: str, seed: int | None = None, known_keys: list[PortableKey | None] | None = None) -> None:
        self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.builder = ProgramBuilder(rng, self._run_value_dependent)
        self.materializer = Materializer(self.builder, seed, known_keys)

    def _run_value_dependent(self, index: int) -> None:
        self.materializer.run_value_dependent(index)

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> object:
        """Run ``func`` on fake tensors as the constructor called it, recording it where replay needs it."""
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
            self.builder.ref(args[1])
            return func(*args, **kwargs)
        if func._schema.name.split("::")[-1] not in _METADATA_INPLACE:
            try:
                check_recordable(func, lambda: call_context(args, kwargs))
            except RecordError as refusal:
                return self._record_unreplayable(func, name, args, kwargs, refusal)
        if func is _DETACH and isinstance(args[0], FakeTensor) and not kwargs:
            # `nn.Parameter(...)` and `.data` detach every tensor: build the alias directly, which
            # is several times cheaper than a FakeTensorMode dispatch.
            pending = self._prepare(func, name, args, kwargs)
            with in_kernel_invocation_manager(self.fake_mode):
                alias = func(args[0])
            out = FakeTensor(self.fake_mode, alias, args[0].device)
            self.builder.append_call(pending, args, kwargs, out)
            return out
        if func in _FACTORIES and kwargs.get("device") in (None, _CPU) and not _has_tensor(args, kwargs):
            # A factory of a CPU tensor: make its meta tensor directly and wrap it, as FakeTensorMode
            # would, at a fraction of the cost of its dispatch.
            pending = self._prepare(func, name, args, kwargs)
            with in_kernel_invocation_manager(self.fake_mode):
                meta = func(*args, **dict(kwargs, device=_META_DEVICE))
            out = FakeTensor(self.fake_mode, meta, _CPU)
            self.builder.append_call(pending, args, kwargs, out)
            return out
        if func in _FILLS and isinstance(args[0], FakeTensor) and not _has_tensor(args[1:], kwargs):
            # An in-place fill with scalar arguments returns its (unchanged) self: no need to ask
            # FakeTensorMode, which costs more than recording the call.
            self.builder.append_call(self._prepare(func, name, args, kwargs), args, kwargs, args[0])
            return args[0]
        pending = self._prepare(func, name, args, kwargs)  # encode inputs before `t_()` & co. change them
        try:
            out = func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            return self._run_for_real(func, args, kwargs, pending)
        self.builder.append_call(pending, args, kwargs, out)
        return out

    def _dispatch_meta(self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict) -> object:
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
            self.builder.append_call(self._prepare(op, "aten.empty_strided.default", args, kwargs), args, kwargs, out)
            return out
        self.builder.append_call(self._prepare(func, name, args, kwargs), args, kwargs, out)
        return out

    def _record_unreplayable(
        self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict, refusal: RecordError
    ) -> object:
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
        pending = self.builder.plain_call(info, args, kwargs)
        try:
            out = func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            raise refusal from None  # its output's shape depends on its values: replay must run it
        self.builder.unreplayable[self.builder.append_call(pending, args, kwargs, out)] = str(refusal)
        return out

    def _prepare(self, func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict) -> PendingCall:
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
                return self.builder.plain_call(info, args, kwargs)
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
            gid = self.builder.tracker.before_draw(generator)
        if (self.builder.rng == "portable" and not self.builder.pinned[gid] and info.name not in DRAW_OPERATORS
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
                enc_args.append(self.builder.encode(a))
        enc_kwargs = {k: self.builder.encode(v) for k, v in kwargs.items() if k != info.generator_arg}
        if info.arg_names.index(info.generator_arg) >= len(args):
            enc_kwargs[info.generator_arg] = GenRef(gid)
        return PendingCall(info, enc_args, enc_kwargs, gid)

    def _run_for_real(
        self,
        func: torch._ops.OpOverload,
        args: tuple,
        kwargs: dict,
        pending: PendingCall | None,
    ) -> object:
        """Run a data-dependent operator on materialized inputs; record it unless ``pending`` is None."""
        if _touches_meta(args, kwargs):
            raise _reads_meta_values(f"{func.namespace}.{func._schema.name.split('::')[-1]}.{func._overloadname}",
                                     args, kwargs)
        real_args = map_arg(args, torch.Tensor, self.materializer.materialize)
        real_kwargs = map_arg(kwargs, torch.Tensor, self.materializer.materialize)
        with _disable_current_modes(), torch.no_grad(), torch._C.DisableTorchFunction():
            result = func(*real_args, **real_kwargs)
        if pending is None:
            return result
        info = pending.info
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
        index = self.builder.append_call(pending, args, kwargs, packed, out_meta)
        for vid, real in zip(self.builder.program[index].outs, flat):
            if vid is not None:
                self.materializer.remember(vid, real, index)
        return packed


def _reads_meta_values(name: str, args: tuple, kwargs: dict) -> RecordError:
    """The refusal of an operator that reads the values of a meta tensor, as eager refuses it."""
    return RecordError(
        f"`{name}` reads the values of a meta tensor{call_context(args, kwargs)}; meta tensors hold no values "
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


class RecordingMode(TorchDispatchMode):
    """The dispatch mode under which ``record`` runs a constructor: every operator goes to ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
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


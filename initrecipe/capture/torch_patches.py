"""Patches that make torch treat the recording's fake tensors as eager treats real ones, where
torch's own fake-tensor paths differ: ``copy.deepcopy``, ``Module._apply`` (``to_empty``, ``.to()``,
``.half()``), accelerator device labels (``.cuda()``, ``.to("cuda")``), re-wrapping a parameter by
calling its class, and lazy modules' uninitialized parameters.  Each is a context manager that
puts torch back as it found it."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

from initrecipe.capture.call_site import call_context
from initrecipe.errors import RecordError

__all__ = ["device_labels", "eager_deepcopy", "eager_module_conversion", "fake_lazy_parameters",
           "parameter_class_calls"]


@contextlib.contextmanager
def eager_deepcopy() -> Iterator[None]:
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
def eager_module_conversion() -> Iterator[None]:
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
def device_labels() -> Iterator[None]:
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

    def cuda(self: torch.Tensor, device: torch.device | str | int | None = None, non_blocking: bool = False,
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
    if isinstance(tensor, UninitializedTensorMixin):
        raise RecordError(
            f"`Tensor.to`/`.cuda()` moved an uninitialized parameter of a lazy module to `{device}`{call_context((), {})}: "
            "initrecipe records lazy modules on accelerator labels only once they are materialized. Run the dry-run "
            "forward on the CPU first, then move the module (`m(dummy); m.to(device)`)"
        )
    return torch.ops.aten._to_copy.default(tensor, **kwargs)


@contextlib.contextmanager
def parameter_class_calls() -> Iterator[None]:
    """Let ``type(param)(data, requires_grad=...)`` re-wrap a fake parameter as eager re-wraps a real one.

    accelerate's ``init_empty_weights`` and ``set_module_tensor_to_device`` (and loaders like them)
    rebuild a parameter by calling its class.  Eager, that class is ``nn.Parameter``; while
    recording, a parameter is a ``FakeTensor`` (marked ``_is_param``), whose constructor takes a
    fake tensor mode.  Called with a tensor first, as ``nn.Parameter`` is, it builds the parameter
    ``nn.Parameter`` would (other keyword arguments, the old parameter's ``__dict__``, become
    attributes, as accelerate means them, less the fake tensor's own state).
    """
    original = FakeTensor.__new__

    def new(cls: type, *args: Any, **kwargs: Any) -> torch.Tensor:
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
def fake_lazy_parameters() -> Iterator[None]:
    """Let lazy modules (``nn.LazyLinear``) create and materialize their parameters on fake tensors.

    ``UninitializedParameter``/``UninitializedBuffer`` wrap a plain tensor with
    ``Tensor._make_subclass``, which a fake tensor cannot be.  While recording they are fake
    tensors of a class that is both the uninitialized class (so ``is_lazy``, ``isinstance(p,
    nn.Parameter)`` and the lazy module's checks hold) and ``FakeTensor``; ``materialize`` gives
    them fake storage of the inferred shape (``empty``, as eager) and turns them into a plain fake
    parameter or buffer, exactly where eager turns them into ``Parameter``/``Tensor``.
    """
    originals = (UninitializedParameter.__new__, UninitializedBuffer.__new__, UninitializedTensorMixin.materialize)

    def new(cls: type, requires_grad: bool = True, device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> torch.Tensor:
        tensor = torch.empty(0, device=device, dtype=dtype)
        if not isinstance(tensor, FakeTensor):  # pragma: no cover - record runs constructors under fake tensors
            raise RecordError("an uninitialized parameter was created outside the recording's fake tensors")
        tensor.requires_grad_(requires_grad)
        if issubclass(cls, UninitializedParameter):
            tensor._is_param = True
        tensor.__class__ = _fake_lazy_class(cls)
        return tensor

    def materialize(self: UninitializedTensorMixin, shape: tuple[int, ...] | torch.Size,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
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

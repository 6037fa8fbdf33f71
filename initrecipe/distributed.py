"""Fill sharded meta modules from a recipe, each rank computing only its own shards: FSDP2, DTensor.

Large models are built on the meta device and sharded before they are initialized: FSDP2's
``fully_shard``, tensor parallelism's ``parallelize_module``, ``distribute_tensor``, or several of
them on a 2-D mesh.  :func:`materialize` then allocates every rank's local shards (``to_empty``)
and fills each with exactly its part of the recipe's tensors; :func:`distribute` builds
``DTensor``\\ s for a recipe from a mesh and per-tensor placements.

Where a rank's part comes from:

* ``portable`` recipes: a tensor with an elementwise program (``normal_``, ``uniform_``,
  ``trunc_normal_``, constants ...; :func:`initrecipe.sliceable`) is generated for the rank's
  block only; others are built whole, one at a time, and sliced.  Either way the bits are those of
  the single-process :func:`initrecipe.replay`, for every mesh shape and placement, so two
  parallelism layouts start from the same weights.
* ``torch`` recipes: eager's random stream is sequential, so every rank replays each tensor it
  holds a part of, whole and in eager's order (one at a time: memory stays near the largest
  tensor), and keeps its block.  Time per rank is that of a whole replay whatever the world
  size; the result is the same bits.

``initrecipe`` imports this module, and with it ``torch.distributed.tensor``, only when
``initrecipe.materialize`` or ``initrecipe.distribute`` is first used.

Example (two CPU processes with gloo; see the README section "Replacing seed checkpoints")::

    mesh = init_device_mesh("cpu", (world_size,))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    initrecipe.materialize(model, "llama.recipe")  # this rank's shards, bitwise the recipe's
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence, TypeVar, Union

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from initrecipe.errors import ReplayError
from initrecipe.format.decode import load
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.runtime.replay import iter_replay
from initrecipe.runtime.regions import Box

__all__ = ["materialize", "distribute", "local_box", "PlacementRequest"]

M = TypeVar("M", bound=torch.nn.Module)
PlacementRequest = Union[Mapping[str, Sequence[Any]], Callable[[str, tuple[int, ...]], Union[Sequence[Any], None]]]
"""Per tensor placements: a mapping name -> placements (one per mesh dimension), or a callable
``(name, shape) -> placements | None`` (None: replicated on every mesh dimension)."""


def _as_recipe(recipe: Recipe | str | Any) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load(recipe)


def local_box(shape: Sequence[int], mesh: DeviceMesh, placements: Sequence[Any]) -> Box:
    """The block of a tensor of global ``shape`` that this rank holds under ``placements`` on
    ``mesh`` (torch's own rule: ``Shard`` splits as ``torch.chunk`` does, uneven shards included;
    ``Replicate`` keeps everything).  ``Partial`` placements are refused."""
    shape = tuple(int(s) for s in shape)
    if any(isinstance(p, Partial) for p in placements):
        raise ReplayError("a `Partial` placement holds partial sums, not a part of a tensor: initrecipe cannot fill it")
    if len(placements) != mesh.ndim:
        raise ReplayError(f"{len(placements)} placements for a {mesh.ndim}-dimensional device mesh")
    local_shape, offset = compute_local_shape_and_global_offset(shape, mesh, list(placements))
    return Box(tuple(int(o) for o in offset), tuple(int(o) + int(n) for o, n in zip(offset, local_shape)))


def _module_tensors(module: torch.nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for name, tensor in module.named_parameters(remove_duplicate=False):
        out[name] = ("parameter", tensor)
    for name, tensor in module.named_buffers(remove_duplicate=False):
        out[name] = ("buffer", tensor)
    return out


def _is_meta(tensor: torch.Tensor) -> bool:
    if isinstance(tensor, DTensor):
        return tensor._local_tensor.is_meta
    return tensor.is_meta


def _check_names(recipe: Recipe, tensors: dict[str, tuple[str, torch.Tensor]]) -> None:
    have, want = set(tensors), set(recipe.names)
    problems = []
    extra, missing = sorted(have - want), sorted(want - have)
    if extra:
        problems.append(f"the module has {len(extra)} tensors the recipe lacks: {_some(extra)}")
    if missing:
        problems.append(f"the recipe has {len(missing)} tensors the module lacks: {_some(missing)}")
    if problems:
        raise ReplayError(
            "cannot materialize the module: " + "; ".join(problems)
            + ". Build the module from the same config the recipe was recorded from"
        )
    kinds = {t.name: t.kind for t in recipe.tensors}
    for name, (kind, _) in tensors.items():
        if kinds[name] != kind:
            raise ReplayError(f"`{name}` is a {kind} in the module but a {kinds[name]} in the recipe")


def _some(names: list[str], shown: int = 4) -> str:
    listed = ", ".join(f"`{n}`" for n in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _default_device(tensors: dict[str, tuple[str, torch.Tensor]]) -> torch.device:
    types = {t.device_mesh.device_type for _, t in tensors.values() if isinstance(t, DTensor)}
    if len(types) > 1:
        raise ReplayError(f"the module's DTensors live on meshes of several device types ({sorted(types)}); pass `device`")
    return torch.device(types.pop() if types else "cpu")


def materialize(module: M, recipe: Recipe | str | Any, *, device: str | torch.device | None = None,
                threads: int | None = None) -> M:
    """Allocate and fill a meta module's parameters and buffers from a recipe, shard by shard.

    ``module`` was built on the meta device (``with torch.device("meta"): ...``) and may have been
    sharded with FSDP2 (``fully_shard``), tensor parallelism (``parallelize_module``) or
    ``distribute_tensor``, on any device mesh.  Every rank calls this: it allocates its local
    shards on ``device`` (``module.to_empty``) and fills each with its block of the recipe's
    tensor (see the module documentation for what that costs in each RNG mode).  Parameters stay
    ``nn.Parameter``/``DTensor`` with their placements; buffers (non-persistent ones too) and tied
    parameters are filled; the module is ready for a forward pass and an optimizer step.

    Args:
        module: the meta module.
        recipe: a :class:`~initrecipe.Recipe`, or a path or bytes to :func:`initrecipe.load`.
        device: where the shards live (default: the device type of the module's meshes, else CPU).
        threads: worker threads for large random fills (see :func:`initrecipe.replay`).

    Returns:
        ``module``, filled.

    Raises:
        ReplayError: the module and the recipe do not have the same tensors (both lists are in
            the message), a tensor is already materialized, or a placement cannot be filled.
    """
    recipe = _as_recipe(recipe)
    tensors = _module_tensors(module)
    _check_names(recipe, tensors)
    _refuse_materialized(tensors)
    target_device = torch.device(device) if device is not None else _default_device(tensors)
    _check_mesh_devices(tensors, target_device)
    module.to_empty(device=target_device)
    requests, locals_ = _local_shards(_module_tensors(module))  # to_empty may swap tensor objects
    _check_dtypes(recipe, locals_)
    with torch.no_grad():
        for entries, values in iter_replay(recipe, device=target_device, shards=requests, draw_in_place=False,
                                           threads=threads):
            done: set[int] = set()
            for entry in entries:
                target = locals_[entry.name]
                if id(target) in done:
                    continue
                done.add(id(target))
                target.copy_(values.reshape(target.shape))
    return module


def _refuse_materialized(tensors: dict[str, tuple[str, torch.Tensor]]) -> None:
    """:class:`ReplayError` when a tensor of the module is not on the meta device."""
    real = [n for n, (_, t) in tensors.items() if not _is_meta(t)]
    if real:
        raise ReplayError(
            f"`{real[0]}`" + (f" and {len(real) - 1} more tensors are" if len(real) > 1 else " is")
            + " already materialized; materialize fills a module built under `torch.device('meta')`"
        )


def _check_mesh_devices(tensors: dict[str, tuple[str, torch.Tensor]], target_device: torch.device) -> None:
    """:class:`ReplayError` when a DTensor's mesh is of another device type than ``target_device``."""
    for name, (_, tensor) in tensors.items():
        if isinstance(tensor, DTensor) and tensor.device_mesh.device_type != target_device.type:
            raise ReplayError(
                f"`{name}` is sharded over a `{tensor.device_mesh.device_type}` mesh, but device is `{target_device}`"
            )


def _local_shards(tensors: dict[str, tuple[str, torch.Tensor]]) -> tuple[dict[str, Box | None], dict[str, torch.Tensor]]:
    """Per tensor name: the block of the full tensor this rank holds (None: all of it), and the local
    tensor that receives it."""
    requests: dict[str, Box | None] = {}
    locals_: dict[str, torch.Tensor] = {}
    for name, (_, tensor) in tensors.items():
        if isinstance(tensor, DTensor):
            box = local_box(tensor.shape, tensor.device_mesh, tensor.placements)
            local = tensor._local_tensor
            if tuple(local.shape) != box.shape():
                raise ReplayError(
                    f"`{name}`: the local shard has shape {list(local.shape)}, but its placements "
                    f"{list(tensor.placements)} give {list(box.shape())}"
                )
            requests[name] = None if box.is_whole(tuple(tensor.shape)) else box
            locals_[name] = local
        else:
            requests[name] = None
            locals_[name] = tensor
    return requests, locals_


def _check_dtypes(recipe: Recipe, locals_: dict[str, torch.Tensor]) -> None:
    """:class:`ReplayError` when a module tensor's dtype differs from the recipe's."""
    entries_of = {t.name: t for t in recipe.tensors}
    for name, tensor in locals_.items():
        entry = entries_of[name]
        if tensor.dtype != entry.dtype:
            raise ReplayError(f"`{name}` is {tensor.dtype} in the module but {entry.dtype} in the recipe")


def distribute(recipe: Recipe | str | Any, mesh: DeviceMesh, placements: PlacementRequest, *,
               device: str | torch.device | None = None, names: Sequence[str] | None = None,
               threads: int | None = None) -> dict[str, torch.Tensor]:
    """The recipe's tensors as ``DTensor``\\ s on ``mesh``: each rank computes only its blocks.

    Args:
        recipe: a :class:`~initrecipe.Recipe`, or a path or bytes.
        mesh: a ``torch.distributed.device_mesh.DeviceMesh``.
        placements: per tensor, one placement per mesh dimension (``Shard(d)``, ``Replicate()``;
            uneven shards as ``torch.chunk``/FSDP2 split them): a mapping, or a callable
            ``(name, shape) -> placements | None`` (None or a missing name: replicated).
        device: where the local shards live (default: the mesh's device type).
        names: only these tensors (default: all).
        threads: worker threads for large random fills.

    Returns:
        Every name mapped to its ``DTensor``; parameters are ``nn.Parameter`` with the recorded
        ``requires_grad``, tied names map to one object.

    Example::

        dtensors = initrecipe.distribute(recipe, mesh, lambda name, shape: [Shard(0)] if shape else None)
    """
    recipe = _as_recipe(recipe)
    target_device = torch.device(device) if device is not None else torch.device(mesh.device_type)
    selected = _selected_names(recipe, placements, names)
    entries = {t.name: t for t in recipe.tensors}
    chosen, requests = _choose_placements(entries, selected, mesh, placements)
    out: dict[str, torch.Tensor] = {}
    wanted = set(selected)
    for group, local in iter_replay(recipe, device=target_device, names=lambda n: n in wanted, shards=requests,
                                    draw_in_place=False, threads=threads):
        by_request: dict[str, torch.Tensor] = {}
        for entry in group:
            key = repr(chosen[entry.name])
            if key not in by_request:
                stride = tuple(math.prod(entry.shape[d + 1:]) for d in range(len(entry.shape)))
                value = DTensor.from_local(local, mesh, chosen[entry.name], run_check=False,
                                           shape=torch.Size(entry.shape), stride=stride)
                if entry.kind == "parameter":
                    value = torch.nn.Parameter(value, requires_grad=entry.requires_grad)
                by_request[key] = value
            out[entry.name] = by_request[key]
    return {name: out[name] for name in selected}


def _selected_names(recipe: Recipe, placements: PlacementRequest, names: Sequence[str] | None) -> list[str]:
    """The names :func:`distribute` returns; :class:`ReplayError` for an unknown name, or placements
    given for a name it does not return."""
    selected = list(recipe.names if names is None else names)
    unknown = sorted(set(selected) - set(recipe.names))
    if unknown:
        raise ReplayError(f"`{unknown[0]}` is not a tensor of this recipe; `initrecipe show RECIPE` lists the names")
    if isinstance(placements, Mapping):
        extra = sorted(set(placements) - set(selected))
        if extra:
            raise ReplayError(f"placements are given for `{extra[0]}`, which is not a tensor this call returns")
    return selected


def _choose_placements(entries: dict[str, TensorEntry], selected: list[str], mesh: DeviceMesh,
                       placements: PlacementRequest) -> tuple[dict[str, list[Any]], dict[str, Box | None]]:
    """Per selected name: its placements (missing: replicated) and the block this rank computes
    (None: all of it).  Tied names share one tensor, so they must share placements too."""
    chosen: dict[str, list[Any]] = {}
    requests: dict[str, Box | None] = {}
    for name in selected:
        entry = entries[name]
        given = placements(name, entry.shape) if callable(placements) else placements.get(name)
        chosen[name] = list(given) if given is not None else [Replicate()] * mesh.ndim
        box = local_box(entry.shape, mesh, chosen[name])
        requests[name] = None if box.is_whole(entry.shape) else box
    by_value: dict[int, str] = {}
    for name in selected:
        first = by_value.setdefault(entries[name].value, name)
        if chosen[first] != chosen[name]:
            raise ReplayError(f"`{name}` and `{first}` are one tensor (tied) but are given different placements")
    return chosen, requests

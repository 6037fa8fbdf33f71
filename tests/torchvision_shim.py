"""Import torchvision beside this project's CPU build of torch 2.13.0.

PyPI's torchvision 0.28.0 (the release for torch 2.13) is a CUDA build: its C++ extension links
against CUDA libraries that the CPU torch wheel does not have, so it fails to load, and
torchvision's own import then stops at ``torch.library.register_fake("torchvision::nms")``, an
operator only the extension defines.  When the extension cannot load, :func:`import_torchvision`
defines the schemas of the two operators torchvision's Python registers fake kernels for
unconditionally (``nms`` and ``qnms``), so that its pure-Python parts (models, transforms,
``ops.misc``) import.  Its C++ operators stay unavailable, as torchvision itself reports
(``torchvision.extension._has_ops()`` is False); no model constructor calls them.  With a matching
torch (e.g. torch 2.14.1 + torchvision 0.29.1) nothing is defined and torchvision loads as usual.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from types import ModuleType

import torch

_SHIM_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: list[torch.library.Library] = []  # keeps the shim's definitions alive


def import_torchvision() -> ModuleType:
    """``import torchvision``, with the shim above where its C++ extension cannot load."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed")
    if not _extension_loads(spec.submodule_search_locations[0]):
        library = torch.library.Library("torchvision", "DEF")
        for schema in _SHIM_SCHEMAS:
            library.define(schema)
        _LIBRARY.append(library)
    import torchvision

    return torchvision


def _extension_loads(package_dir: str) -> bool:
    paths = glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd"))
    if not paths:
        return False
    try:
        torch.ops.load_library(paths[0])
    except (OSError, RuntimeError):
        return False
    return True

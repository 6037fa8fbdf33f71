"""timm and torchvision models (``zoo_vision_models.py``) replay like eager construction.

``rng="torch"``: bitwise equal to ``torch.manual_seed(0); model_fn()`` tensor by tensor (names and
their order, parameter/buffer split, dtypes, shapes, bytes, ``requires_grad``, ties).
``rng="portable"``: eager's names, kinds, dtypes, shapes and ties, draw-free tensors with eager's
bits, three tensors replayed alone and in halves.  The subset here is the architectures issue 15
names plus the quick torchvision models; ``tools/zoo_vision.py`` runs all 94, with the shard check
(``docs/ZOO.md``).

These tests carry the ``vision`` marker and run in a second pytest call with torchvision and timm
on ``PYTHONPATH`` only (``.ci/run``, stage 1): installed into the venv, torchvision (a CUDA
build beside the CPU torch) would break every process that imports ``transformers`` without the
shim, such as the benchmark and distributed tests' subprocesses.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import initrecipe  # noqa: E402
from initrecipe.inspect.check import check  # noqa: E402
from zoo_check import check_portable, check_torch_mode  # noqa: E402
from zoo_vision_models import TIMM_CI, TORCHVISION_CI, timm_zoo, torchvision_zoo  # noqa: E402

pytestmark = pytest.mark.vision
LABELS = [f"timm:{n}" for n in TIMM_CI] + [f"torchvision:{n}" for n in TORCHVISION_CI]


def _model_fn(label: str):
    library, name = label.split(":", 1)
    return (timm_zoo if library == "timm" else torchvision_zoo)()[name]


@pytest.mark.parametrize("label", LABELS)
def test_vision_replay_matches_eager(label: str) -> None:
    check_torch_mode(label, _model_fn(label))


@pytest.mark.parametrize("label", LABELS)
def test_vision_portable_replay(label: str) -> None:
    check_portable(label, _model_fn(label), samples=3)


def test_ssdlite_records_although_its_constructor_runs_the_backbone() -> None:
    """torchvision's SSDLite counts its backbone's output channels by running it on a dummy
    320x320 image (``retrieve_out_channels``): convolutions, which replay cannot run.  Only the
    shapes are used, so the recipe holds none of it (the other checks of this model are above)."""
    recipe = initrecipe.record(torchvision_zoo()["ssdlite320_mobilenet_v3_large"], seed=0)
    assert not any(getattr(ins, "op", "").startswith("aten.convolution") for ins in recipe.program)
    assert check(recipe.to_bytes()) == []

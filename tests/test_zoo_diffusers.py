"""The tiny ``diffusers`` zoo (``zoo_diffusers.py``): every model replays like eager construction.

``rng="torch"``: bitwise equal to ``torch.manual_seed(0); model_fn()`` tensor by tensor (names and
their order, parameter/buffer split, dtypes, shapes, bytes, ``requires_grad``, ties).
``rng="portable"``: eager's names, kinds, dtypes, shapes and ties, draw-free tensors with eager's
bits, three tensors replayed alone and in halves, and every tensor's shards equal to the full replay.  The checks are
``zoo_check.py``'s, shared with the ``transformers`` zoo.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("diffusers")

from zoo_check import check_portable, check_portable_shards, check_torch_mode  # noqa: E402
from zoo_diffusers import ZOO  # noqa: E402


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_diffusers_replay_matches_eager(model_name: str) -> None:
    check_torch_mode(model_name, ZOO[model_name])


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_diffusers_portable_replay(model_name: str) -> None:
    recipe = check_portable(model_name, ZOO[model_name], samples=3)
    check_portable_shards(model_name, recipe)

"""Record -> save -> load -> replay every model of the tiny transformers zoo and compare with eager init.

For each model of :data:`zoo_models.ZOO` the replayed weights must be bitwise equal to
``torch.manual_seed(0); model_fn()``: same names in the same order, same dtypes and shapes, same
bytes, parameters as ``nn.Parameter`` with eager's ``requires_grad``, and the same tie groups
(the checks are in ``zoo_check.py``, shared with the other zoos).
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("transformers")

from zoo_check import check_portable, check_portable_shards, check_torch_mode, record_portable  # noqa: E402
from zoo_models import ZOO  # noqa: E402


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_replay_matches_eager(model_name: str) -> None:
    check_torch_mode(model_name, ZOO[model_name])


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_portable_replay(model_name: str) -> None:
    """rng="portable" for every architecture: records, round-trips, replays to eager's names, kinds,
    dtypes, shapes and ties; tensors without random draws equal eager's bits; every tensor is the
    same when replayed alone, and a sliceable tensor's halves stitch back together."""
    check_portable(model_name, ZOO[model_name])


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_portable_every_tensor_shards_exactly(model_name: str) -> None:
    """Every tensor, 3 shards along dim 0 and 2 along the last dim, stitched: the full replay's bits."""
    check_portable_shards(model_name, record_portable(ZOO[model_name]))

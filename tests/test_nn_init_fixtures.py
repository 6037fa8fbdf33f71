"""`describe` names every nn.init function as each supported torch release records it.

``tests/nn_init/torch-<release>-<rng>.recipe`` are recordings of ``every_init.EveryInit`` made under
each release by ``tools/make_nn_init_fixtures.py``.  ``torch/nn/init.py`` is the same file in 2.13.0,
2.14.1 and 2.15.0, but torch's own lowering of it is not: 2.15 writes ``sparse_``'s
``tensor[rows, col] = 0`` as ``index_fill_`` (2.13 and 2.14: ``index_put_``) and ``dirac_``'s
``tensor[d, d, k] = 1`` as ``fill_`` (before: ``copy_``).  Describing needs no replay, so every
release's fixture is checked under whichever torch runs the tests; the recording of the installed
torch is checked against its own fixture, so a stale fixture fails too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import initrecipe
from initrecipe.inspect.show import summarize
from initrecipe.runtime.torch_versions import VERIFIED_TORCH, torch_release

from every_init import EXPECTED_INITS, EveryInit

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "nn_init"
RNG_MODES = ("torch", "portable")
sys.path.insert(0, str(ROOT / "tools"))

from make_nn_init_fixtures import fixture_path, op_sequences  # noqa: E402


@pytest.mark.parametrize("rng", RNG_MODES)
@pytest.mark.parametrize("release", VERIFIED_TORCH)
def test_every_releases_recording_of_every_nn_init_function_is_named(release, rng):
    recipe = initrecipe.load(fixture_path(release, rng))
    assert recipe.producer["torch"] == release and recipe.rng == rng
    assert {t.name: t.init_text for t in summarize(recipe).tensors} == EXPECTED_INITS


def test_the_fixtures_are_every_verified_release_in_both_modes():
    assert sorted(p.name for p in FIXTURES.glob("*.recipe")) == sorted(
        fixture_path(v, rng).name for v in VERIFIED_TORCH for rng in RNG_MODES
    )


@pytest.mark.parametrize("rng", RNG_MODES)
def test_both_lowerings_of_sparse_are_among_the_fixtures(rng):
    # The patterns are tested against both of torch's ways of writing sparse_, whatever runs the tests.
    ops = {v: op_sequences(initrecipe.load(fixture_path(v, rng)))["sparse"] for v in VERIFIED_TORCH}
    assert ops["2.13.0"] == ops["2.14.1"] == ["aten.normal_.default"] + ["aten.index_put_.default"] * 5
    assert ops["2.15.0"] == ["aten.normal_.default"] + ["aten.index_fill_.int_Scalar"] * 5


@pytest.mark.parametrize("rng", RNG_MODES)
def test_the_installed_torch_records_what_its_fixture_holds(rng):
    recipe = initrecipe.record(EveryInit, seed=0, rng=rng)
    fixture = initrecipe.load(fixture_path(torch_release(), rng))
    assert op_sequences(recipe) == op_sequences(fixture)
    assert recipe.content_hash == fixture.content_hash

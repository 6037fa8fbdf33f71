"""Torch releases: replay of rng="torch" recipes is gated on the verified-versions table, portable
recipes replay anywhere, and a bounded integer draw into a float (torch warns about inexact
integers) replays eager's values silently under every release.

Runs under whichever torch is installed (CI: 2.13.0 and 2.15.0; ``tools/test_torch_versions.sh``:
2.14.1 too).  The table's mechanism is tested with monkeypatched tables.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import initrecipe
from initrecipe.runtime import torch_versions
from initrecipe.errors import RecipeWarning, ReplayError, UnverifiedTorchWarning
from initrecipe.runtime.torch_versions import VERIFIED_TORCH, check_torch_version, torch_release
from initrecipe.inspect.check import check

HERE = torch_release()
GOLDEN = Path(__file__).resolve().parent / "golden"


def _linear() -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which (recorded, installed) pairs this process has warned about."""
    monkeypatch.setattr(torch_versions, "_warned", set())


def _with_producer(recipe: initrecipe.Recipe, version: str | None) -> initrecipe.Recipe:
    producer = dict(recipe.producer)
    if version is None:
        producer.pop("torch")
    else:
        producer["torch"] = version
    return initrecipe.Recipe(rng=recipe.rng, seed=recipe.seed, generators=recipe.generators,
                             program=recipe.program, tensors=recipe.tensors, producer=producer)


def test_the_installed_torch_is_verified_and_recipes_record_it():
    # CI runs under 2.13.0 and 2.15.0: a release joins the table only after the torch-RNG and
    # golden tests pass under it.
    assert HERE in VERIFIED_TORCH, f"torch {HERE} is not in VERIFIED_TORCH {VERIFIED_TORCH}"
    assert VERIFIED_TORCH[0] == "2.13.0"
    assert initrecipe.record(_linear, seed=0).producer["torch"] == HERE
    assert torch_release("2.15.0+cu132") == "2.15.0"


def test_replay_under_an_unverified_torch_warns_once_per_process(monkeypatch, fresh_warnings):
    monkeypatch.setattr(torch_versions, "VERIFIED_TORCH", ("1.0.0", "1.1.0"))
    recipe = _with_producer(initrecipe.record(_linear, seed=0), "1.0.0")
    with pytest.warns(UnverifiedTorchWarning) as caught:
        first = initrecipe.replay(recipe)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"torch {HERE}, installed here, is not among the releases whose CPU random kernels initrecipe has "
        "verified (torch 1.0.0, 1.1.0): this rng='torch' recipe replays bitwise only if its kernels draw as "
        "those do (schema/TORCH_RNG.md). Compare against eager construction once, or record with rng='portable'"
    )
    assert issubclass(UnverifiedTorchWarning, RecipeWarning) and issubclass(RecipeWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = initrecipe.replay(recipe)  # once per process: no second warning
        assert check(recipe) == []
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_a_recipe_recorded_with_an_unverified_torch_warns(fresh_warnings):
    recipe = _with_producer(initrecipe.record(_linear, seed=0), "2.12.0")
    with pytest.warns(UnverifiedTorchWarning, match=re.escape(
        "torch 2.12.0, which recorded this recipe, is not among the releases whose CPU random kernels "
        f"initrecipe has verified (torch {', '.join(VERIFIED_TORCH)})"
    )):
        initrecipe.replay(recipe)


def test_portable_recipes_and_recipes_without_a_torch_version_replay_without_a_warning(monkeypatch, fresh_warnings):
    monkeypatch.setattr(torch_versions, "VERIFIED_TORCH", ("1.0.0",))
    portable = _with_producer(initrecipe.record(_linear, seed=0, rng="portable"), "0.9.0")
    hand_made = _with_producer(initrecipe.record(_linear, seed=0), None)
    monkeypatch.setattr(torch_versions, "VERIFIED_TORCH", (HERE,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initrecipe.replay(initrecipe.load(GOLDEN / "portable-v1.1.recipe"))
        initrecipe.replay(portable)
        initrecipe.replay(hand_made)
        check_torch_version("portable", {"torch": "0.1.0"})


def test_replay_under_a_torch_known_to_differ_refuses_and_check_reports_it(monkeypatch, fresh_warnings):
    monkeypatch.setattr(torch_versions, "DIFFERING_TORCH", {HERE: "randperm draws 64 bits per element"})
    monkeypatch.setattr(torch_versions, "VERIFIED_TORCH", ("2.13.0", "2.14.1"))
    recipe = _with_producer(initrecipe.record(_linear, seed=0), "2.13.0")
    expected = (
        f"this rng='torch' recipe was recorded with torch 2.13.0; torch {HERE}, installed here, consumes the "
        "CPU generator differently (randperm draws 64 bits per element), so replay would not give the recorded "
        "weights; torch 2.13.0, 2.14.1 give the recorded bits: replay it under one of those, or record the "
        "model again with rng='portable' (the same on every torch)"
    )
    with pytest.raises(ReplayError) as exc:
        initrecipe.replay(recipe)
    assert str(exc.value) == expected
    with pytest.raises(ReplayError, match=re.escape(expected)):
        list(initrecipe.iter_replay(recipe, shards={"weight": initrecipe.Shard(0, 0, 1)}))
    assert check(recipe) == [expected]
    # Portable recipes are the same on every torch.
    initrecipe.replay(_with_producer(initrecipe.record(_linear, seed=0, rng="portable"), "2.13.0"))


def test_a_recipe_recorded_with_a_torch_known_to_differ_is_refused(monkeypatch, fresh_warnings):
    monkeypatch.setattr(torch_versions, "DIFFERING_TORCH", {"2.12.0": "bernoulli_ draws doubles"})
    recipe = _with_producer(initrecipe.record(_linear, seed=0), "2.12.0")
    with pytest.raises(ReplayError) as exc:
        initrecipe.replay(recipe)
    assert str(exc.value) == (
        "this rng='torch' recipe was recorded with torch 2.12.0; torch 2.12.0 consumes the CPU generator "
        "differently (bernoulli_ draws doubles), so replay would not give the recorded weights; only torch "
        f"2.12.0's eager construction gives the recorded bits: record the model again under torch "
        f"{', '.join(VERIFIED_TORCH)}, or with rng='portable' (the same on every torch)"
    )


# ---------------------------------------------------------------- inexact integer ranges in floats
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
BOUNDS = st.one_of(
    st.sampled_from([2**8, 2**8 + 1, 2**8 + 2, 2**11 + 3, 2**24, 2**24 + 1, 2**24 + 2, 2**24 + 5, 2**30, 2**53 + 7]),
    st.integers(1, 2**40),
)


class IntegerDraws(torch.nn.Module):
    """A bounded integer draw into a float, each way a model can write one."""

    def __init__(self, kind: str, low: int, high: int, dtype: torch.dtype) -> None:
        super().__init__()
        if kind == "randint":
            t = torch.randint(low, high, (5, 3), dtype=dtype)
        elif kind == "randint_like":
            t = torch.randint_like(torch.empty(5, 3, dtype=dtype), low, high)
        elif kind == "random_":
            t = torch.empty(3, 5, dtype=dtype).t().random_(low, high)  # a transposed view
        else:
            t = torch.empty(5, 3, dtype=dtype).random_(high)
        self.register_buffer("t", t)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["randint", "randint_like", "random_", "random_to"]), dtype=st.sampled_from(FLOATS),
       low=st.integers(-(2**30), 2**20), high=BOUNDS)
@example(kind="randint", dtype=torch.float32, low=0, high=2**24 + 2)  # the case the issue found under 2.15
@example(kind="randint", dtype=torch.float32, low=0, high=2**24)
@example(kind="random_", dtype=torch.bfloat16, low=-256, high=256)
@example(kind="random_", dtype=torch.bfloat16, low=-1000, high=300)
@example(kind="randint_like", dtype=torch.float64, low=0, high=2**53 + 7)
def test_an_inexact_integer_range_in_a_float_is_refused_while_recording_in_every_release(capfd, kind, dtype, low, high):
    # torch warns about such a draw (2.13 and 2.14 on stderr from an OpOverload, 2.15 as a Python
    # warning) and draws anyway; initrecipe refuses it before anything runs, under every release,
    # and records (bitwise eager) every draw whose bounds the dtype holds exactly.
    low = 0 if kind == "random_to" else min(low, high - 1)  # random_(to) draws from [0, to)
    limit = int(round(2 / torch.finfo(dtype).eps))
    exact = abs(low) <= limit and abs(high) <= limit
    capfd.readouterr()
    if not exact:
        with pytest.raises(initrecipe.RecordError, match=r"is outside the integers torch\.\w+ represents exactly "
                           r"\(\|n\| <= \d+\)\. torch draws such a range inexactly"):
            initrecipe.record(lambda: IntegerDraws(kind, low, high, dtype), seed=0)
    else:
        recipe = initrecipe.record(lambda: IntegerDraws(kind, low, high, dtype), seed=0)
        assert check(recipe) == []
        got = initrecipe.replay(recipe)["t"]
        torch.manual_seed(0)
        want = IntegerDraws(kind, low, high, dtype).t
        assert torch.equal(got, want) and got.stride() == want.stride()
    assert capfd.readouterr() == ("", "")


def test_check_and_replay_refuse_an_inexact_integer_range_in_a_float_alike():
    # A hand-made recipe (the recorder refuses to write one): check's finding is replay's error.
    from test_check_agrees import recipe_bytes

    data = recipe_bytes("torch", "aten.randint.generator", [2**24 + 2], torch.float32, factory=True)
    message = ("program[0]: `aten.randint.generator` rejects its arguments: 16777218 is outside the integers "
               "torch.float32 represents exactly (|n| <= 16777216)")
    assert check(data) == [message]
    with pytest.raises(initrecipe.RecipeFormatError) as exc:
        initrecipe.replay(data)
    assert str(exc.value) == message

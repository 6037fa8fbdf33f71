"""Calls replay cannot execute (operators outside the allowlist) inside a constructor.

A constructor may run one for its result's *shape* only (torchvision's SSDLite runs its backbone on
a dummy image to count channels): that records, and the call is left out of the recipe.  If replay
would need the call (its result reaches a model tensor, or the constructor reads its values), the
recording is refused with a message that names the operator, the tensors and the call site.  A
random operator outside the allowlist is refused at once: its draws would move the generator.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initrecipe
from eager_check import assert_replay_matches_eager
from initrecipe.inspect.check import check

ALLOWLIST_HINT = ("initrecipe cannot replay it. Build this part of the model outside the recorded constructor, or "
                  "open an issue asking for the operator to be added to the allowlist")


class Probed(nn.Module):
    """Sizes its head by running its stem on a dummy input, as detection models do."""

    def __init__(self, probe: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Hardswish(inplace=True))
        if probe:
            self.stem.eval()
            with torch.no_grad():
                channels = self.stem(torch.zeros(1, 3, 8, 8)).shape[1]  # convolution, batch norm, hardswish
            self.stem.train()
        else:
            channels = 4
        self.head = nn.Linear(channels, 2)
        self.register_buffer("scale", torch.rand(2))


def _ops(recipe: initrecipe.Recipe) -> set[str]:
    return {getattr(ins, "op", "") for ins in recipe.program}


def test_a_call_used_only_for_its_shape_records_bitwise_and_stays_out_of_the_recipe():
    recipe = assert_replay_matches_eager(Probed)
    assert not any(op.split(".")[1] in ("convolution", "_native_batch_norm_legit_no_training", "hardswish_")
                   for op in _ops(recipe) if op)
    assert check(recipe.to_bytes()) == []
    # Nothing of the probe is left: the recipe is the one of the same model built without it.
    assert recipe.to_bytes() == initrecipe.record(lambda: Probed(probe=False), seed=0).to_bytes()


def test_a_call_used_only_for_its_shape_records_in_portable_mode():
    recipe = initrecipe.record(Probed, seed=3, rng="portable")
    assert recipe.to_bytes() == initrecipe.record(lambda: Probed(probe=False), seed=3, rng="portable").to_bytes()
    assert check(recipe.to_bytes()) == []


def _refusal(build, rng: str = "torch") -> str:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            build(self)

    with pytest.raises(initrecipe.RecordError) as info:
        initrecipe.record(Model, seed=0, rng=rng)
    return str(info.value)


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_a_result_that_reaches_a_buffer_is_refused_naming_the_call(rng):
    def build(m):
        m.register_buffer("x", F.hardswish(torch.randn(4)))

    line = build.__code__.co_firstlineno + 1
    message = _refusal(build, rng)
    assert message.startswith("unsupported operator `aten.hardswish.default` called while recording (on tensors "
                              "of shape [4] float32, called from `")
    assert message.endswith(f"reached from `{__file__}:{line}` in `build`): {ALLOWLIST_HINT} "
                            "(its result reaches the model's parameters or buffers)")


def test_an_in_place_write_into_a_parameter_is_refused():
    def build(m):
        m.w = nn.Parameter(torch.rand(4) + 1)
        with torch.no_grad():
            m.w.lgamma_()

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.lgamma_.default` called while recording (on tensors of "
                              "shape [4] float32, called from `")
    assert message.endswith(f"{ALLOWLIST_HINT} (its result reaches the model's parameters or buffers)")


def test_an_in_place_write_into_a_view_of_a_parameter_is_refused():
    def build(m):
        m.w = nn.Parameter(torch.rand(4, 3) + 1)
        with torch.no_grad():
            m.w[1:].lgamma_()

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.lgamma_.default` called while recording (on tensors of "
                              "shape [3, 3] float32, called from `")
    assert message.endswith("(its result reaches the model's parameters or buffers)")


def test_values_read_while_recording_are_refused():
    def build(m):
        m.w = nn.Parameter(torch.randn(4))
        if F.hardswish(m.w.detach()).sum() > 0:  # the constructor reads the values
            m.b = nn.Parameter(torch.zeros(1))

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.hardswish.default` called while recording (on tensors of "
                              "shape [4] float32, called from `")
    assert message.endswith(f"{ALLOWLIST_HINT} (the constructor reads values computed from its result while it runs)")


def test_a_discarded_draw_shaped_by_an_unreplayable_result_is_refused():
    # The draw is dead, but it moves the generator, and replay moves it on a scratch tensor of the
    # draw's argument, which the unreplayable call defines.
    def build(m):
        F.hardswish(torch.zeros(4)).normal_()
        m.w = nn.Parameter(torch.randn(2))

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.hardswish.default`")
    assert message.endswith(f"{ALLOWLIST_HINT} (a discarded random draw on its result moves the generator "
                            "for the draws after it)")


def test_an_unlisted_random_operator_is_refused_at_once_even_if_unused():
    def build(m):
        F.rrelu(torch.randn(4), training=True)  # draws: every later draw would start elsewhere
        m.w = nn.Parameter(torch.randn(2))

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.rrelu_with_noise")
    assert message.endswith(ALLOWLIST_HINT)


def test_later_draws_keep_eager_bits_after_an_unused_unreplayable_call():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.randn(5))
            torch.special.i0e(torch.randn(3))  # a draw, then an unreplayable call on it, unused
            self.b = nn.Parameter(torch.randn(5))

    assert_replay_matches_eager(Model)


def test_an_out_argument_that_is_a_parameter_is_refused():
    def build(m):
        m.w = nn.Parameter(torch.ones(6))
        with torch.no_grad():
            torch.special.i0e(torch.randn(6), out=m.w)

    assert _refusal(build).startswith("unsupported operator `aten.special_i0e.out` called while recording")


def test_a_result_copied_into_a_view_of_a_parameter_is_refused():
    def build(m):
        m.w = nn.Parameter(torch.ones(6))
        with torch.no_grad():
            m.w[::2].copy_(F.hardswish(torch.randn(3)))

    message = _refusal(build)
    assert message.startswith("unsupported operator `aten.hardswish.default` called while recording")
    assert message.endswith("(its result reaches the model's parameters or buffers)")

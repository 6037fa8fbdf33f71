"""rng="torch" at memory speed: torch's CPU generator positioned by arithmetic, not by drawing.

* the generator state as data, and the mt19937 jump-ahead, against torch's own generator;
* the consumption model (schema/TORCH_RNG.md) against torch's kernels, over sizes, dtypes,
  contiguity and the Box–Muller cache;
* record and replay end to end: dead draws skipped, live draws positioned, pieces of large fills on
  several threads, private generators interleaved with the global one — bitwise eager values and
  the generator states eager leaves.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import initrecipe
import initrecipe.rng.torch.draw_costs as draw_costs
import initrecipe.rng.torch.parallel_draws as parallel_draws
from initrecipe.rng.torch import generator_state as cpu_generator
from initrecipe.rng.torch.generator_state import GeneratorState, advance
from initrecipe.rng.torch.draw_costs import DrawCost, after_cost, normal_cost, random_cost, trusted, uniform_cost
from initrecipe.program.operators import DRAW_COST_RULES

from eager_check import assert_replay_matches_eager, eager_tensors

AWKWARD = [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 100, 2**20 + 3]
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
pytestmark = pytest.mark.skipif(not cpu_generator.available(), reason="initrecipe.rng.torch._mt19937 is not built")


def _int32_draws(generator: torch.Generator, n: int) -> None:
    """Take exactly n outputs (int32 random_ takes one per element)."""
    torch.empty(n, dtype=torch.int32).random_(generator=generator)


def _pair_sample(state: GeneratorState, outputs: int) -> float:
    generator = advance(state, outputs).with_double_normal(None).generator()
    torch.empty(1, dtype=torch.float64).normal_(generator=generator)
    value = GeneratorState.of(generator).double_normal
    assert value is not None
    return value


def _predicts(draw, cost: DrawCost | None, *, seed: int = 0, pre: int = 0, cached: bool = False) -> bool:
    """Whether ``cost`` moves a generator exactly as ``draw(generator)`` does."""
    generator = torch.Generator().manual_seed(seed)
    _int32_draws(generator, pre)
    if cached:
        torch.empty(1, dtype=torch.float64).normal_(generator=generator)
    start = GeneratorState.of(generator)
    draw(generator)
    assert cost is not None
    return after_cost(start, cost, _pair_sample) == GeneratorState.of(generator)


# --------------------------------------------------------------------------- state and jump-ahead
@pytest.mark.parametrize("setup", ["fresh", "drawn", "double cached", "set from bytes"])
def test_generator_state_roundtrips_the_bytes_torch_writes(setup):
    generator = torch.Generator().manual_seed(123)
    if setup == "drawn":
        _int32_draws(generator, 1000)
    elif setup == "double cached":
        torch.randn(3, dtype=torch.float64, generator=generator)
    elif setup == "set from bytes":
        other = torch.Generator().manual_seed(5)
        _int32_draws(other, 7)
        generator.set_state(other.get_state())
    raw = generator.get_state()
    state = GeneratorState.decode(raw)
    assert state is not None
    assert torch.equal(state.tensor(), raw)
    assert state.fresh == (setup == "fresh")
    assert (state.double_normal is not None) == (setup == "double cached")
    assert torch.equal(state.generator().get_state(), raw)


def test_states_torch_does_not_write_are_not_modelled():
    raw = bytearray(torch.Generator().manual_seed(1).get_state().numpy().tobytes())
    raw[8] = 7  # `left` no longer agrees with `next`
    assert GeneratorState.decode(bytes(raw)) is None
    assert GeneratorState.decode(b"\x00" * 100) is None


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    pre=st.sampled_from([0, 1, 623, 624, 625, 1247, 1248, 5000]),
    n=st.one_of(st.integers(0, 3000), st.sampled_from([623, 624, 625, 624 * 5, 624 * 5 + 1, 10**6 + 7])),
)
def test_advance_equals_drawing(seed, pre, n):
    generator = torch.Generator().manual_seed(seed)
    _int32_draws(generator, pre)
    start = GeneratorState.of(generator)
    _int32_draws(generator, n)
    moved = advance(start, n)
    assert moved == GeneratorState.of(generator)
    assert torch.equal(moved.tensor(), generator.get_state())


def test_long_jumps_compose():
    start = GeneratorState.of(torch.Generator().manual_seed(99))
    a, b = 2**40 + 12345, 3 * 2**33 + 7
    assert advance(advance(start, a), b) == advance(start, a + b) == advance(advance(start, b), a)
    assert advance(start, a) != advance(start, a + 1)


def test_a_seeded_state_jumped_far_draws_what_drawing_gives():
    generator = torch.Generator().manual_seed(7)
    start = GeneratorState.of(generator)
    _int32_draws(generator, 30_000_000)
    assert advance(start, 30_000_000) == GeneratorState.of(generator)


# --------------------------------------------------------------------------- the consumption model
@settings(max_examples=80, deadline=None)
@given(
    n=st.one_of(st.sampled_from(AWKWARD[:-1]), st.integers(0, 5000)),
    dtype=st.sampled_from(FLOATS + [torch.complex64]),
    contiguous=st.booleans(),
    cached=st.booleans(),
    pre=st.integers(0, 700),
)
def test_normal_model_matches_torch(n, dtype, contiguous, cached, pre):
    def draw(generator):
        tensor = torch.empty(n, dtype=dtype) if contiguous else torch.empty(n, 2, dtype=dtype)[:, 0]
        tensor.normal_(0.0, 0.02, generator=generator)

    cost = normal_cost(n, dtype, contiguous=contiguous or n <= 1)
    assert _predicts(draw, cost, pre=pre, cached=cached)


@pytest.mark.parametrize("dtype", FLOATS)
def test_normal_model_matches_torch_for_a_large_awkward_size(dtype):
    n = 2**20 + 3
    assert _predicts(lambda g: torch.empty(n, dtype=dtype).normal_(generator=g), normal_cost(n, dtype, contiguous=True))


@settings(max_examples=50, deadline=None)
@given(n=st.sampled_from(AWKWARD), dtype=st.sampled_from(FLOATS + [torch.complex128]), contiguous=st.booleans())
def test_uniform_model_matches_torch(n, dtype, contiguous):
    def draw(generator):
        tensor = torch.empty(n, dtype=dtype) if contiguous else torch.empty(n, 2, dtype=dtype)[:, 0]
        tensor.uniform_(-0.1, 0.1, generator=generator)

    assert _predicts(draw, uniform_cost(n, dtype))


_INTEGERS = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


@settings(max_examples=120, deadline=None)
@given(
    dtype=st.sampled_from(_INTEGERS + FLOATS),
    low=st.sampled_from([None, 0, -3, 5, -(2**31), -(2**63), 2**20]),
    high=st.sampled_from([None, 1, 2, 100, 2**24, 2**28 - 1, 2**28, 2**28 + 1, 2**31, 2**32, 2**32 + 1, 2**40, 2**62]),
    n=st.sampled_from([0, 1, 7, 33]),
)
def test_random_model_matches_torch(dtype, low, high, n):
    tensor = torch.empty(n, dtype=dtype)
    bounded = low is not None or high is not None
    if low is None and high is not None:
        args, lo, hi = (high,), 0, high
    elif low is not None:
        args, lo, hi = (low, high), low, high
    else:
        args, lo, hi = (), None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns about (and will refuse) imprecise float bounds
            tensor.clone().random_(*args, generator=torch.Generator())
    except (RuntimeError, UserWarning):
        return  # torch refuses these bounds for this dtype
    cost = random_cost(n, dtype, lo, hi, bounded=bounded)
    if cost is None:
        return
    assert _predicts(lambda g: tensor.random_(*args, generator=g), cost)


@pytest.mark.parametrize("family", sorted({rule.family for rule in DRAW_COST_RULES.values() if rule.family is not None}))
def test_every_rule_family_is_trusted_on_this_torch(family):
    assert trusted(family)


def test_a_rule_torch_contradicts_is_not_used_and_replay_stays_bitwise(monkeypatch):
    monkeypatch.setattr(draw_costs, "_trust", {})
    monkeypatch.setattr(draw_costs, "uniform_cost", lambda numel, dtype: DrawCost(outputs=numel + 1))
    assert not trusted("uniform")
    assert_replay_matches_eager(lambda: nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3)), seed=4)


def test_without_the_jump_ahead_replay_draws_and_stays_bitwise(monkeypatch):
    monkeypatch.setattr(cpu_generator, "available", lambda: False)
    monkeypatch.setattr(draw_costs, "_trust", {})
    assert_replay_matches_eager(lambda: nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), seed=4)


# --------------------------------------------------------------------------- record and replay
class EveryDraw(nn.Module):
    """Draws with every modelled operator, dtype and an awkward size each; most draws are dead
    (overwritten afterwards), a few live, so replay must position the live ones exactly."""

    def __init__(self, sizes: list[int], keep: set[str]) -> None:
        super().__init__()
        for k, n in enumerate(sizes):
            for dtype in (torch.float32, torch.float64, torch.bfloat16):
                tag = f"{k}_{str(dtype)[6:]}"
                self.register_buffer(f"normal_{tag}", torch.empty(n, dtype=dtype).normal_(0.0, 0.5))
                self.register_buffer(f"strided_{tag}", torch.empty(n, 2, dtype=dtype)[:, 1].normal_())
                self.register_buffer(f"uniform_{tag}", torch.empty(n, dtype=dtype).uniform_(-1.0, 1.0))
                self.register_buffer(f"exp_{tag}", torch.empty(n, dtype=dtype).exponential_())
                self.register_buffer(f"lognormal_{tag}", torch.empty(n, dtype=dtype).log_normal_())
                self.register_buffer(f"cauchy_{tag}", torch.empty(n, dtype=dtype).cauchy_())
                self.register_buffer(f"geometric_{tag}", torch.empty(n, dtype=dtype).geometric_(0.3))
                self.register_buffer(f"bernoulli_{tag}", torch.empty(n, dtype=dtype).bernoulli_(0.3))
            self.register_buffer(f"randint_{k}", torch.randint(0, 2**40, (n,)))
            self.register_buffer(f"random_{k}", torch.empty(n, dtype=torch.int32).random_())
            self.register_buffer(f"randperm_{k}", torch.randperm(n))
            self.register_buffer(f"randn_{k}", torch.randn(n))
            self.register_buffer(f"rand_{k}", torch.rand(n, dtype=torch.float64))
            self.register_buffer(f"bern_t_{k}", torch.bernoulli(torch.full((n,), 0.5)))
            self.register_buffer(f"normal_t_{k}", torch.normal(torch.zeros(n), 1.0))
        self.register_buffer("multinomial", torch.multinomial(torch.ones(8), 4))
        self.register_buffer("multinomial_r", torch.multinomial(torch.ones(2, 5), 3, replacement=True))
        for name, buffer in list(self._buffers.items()):
            if name not in keep:
                buffer.zero_()  # dead draw: overwritten


@pytest.mark.parametrize("keep", [set(), {"normal_1_float32", "randn_4", "exp_2_float64", "randperm_5"},
                                  {"lognormal_1_float64", "strided_4_bfloat16", "multinomial", "bern_t_5"}])
def test_every_modelled_draw_dead_or_live_replays_bitwise_and_leaves_eager_state(keep):
    sizes = [0, 1, 15, 16, 17, 33]
    assert_replay_matches_eager(lambda: EveryDraw(sizes, keep), seed=11)


def test_draws_of_a_large_awkward_size_position_the_generator_exactly():
    class Large(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = 2**20 + 3
            for dtype in (torch.float32, torch.float64, torch.bfloat16):
                torch.empty(n, dtype=dtype).normal_()  # dead
                torch.empty(n, dtype=dtype).uniform_()  # dead
                torch.empty(n, dtype=dtype).bernoulli_(0.5)  # dead
            torch.randint(0, 10, (n,))  # dead
            torch.randperm(n)  # dead
            torch.empty(n, 2)[:, 0].normal_()  # dead, one element at a time
            self.w = nn.Parameter(torch.empty(40, 40).normal_())

    assert_replay_matches_eager(Large, seed=8)


def test_bernoulli_and_multinomial_buffers_record_with_default_arguments():
    # Two constructors that `record(fn, seed=0)` refused before the consumption model (issue 15).
    class Masks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 16)
            self.register_buffer("mask", torch.bernoulli(torch.full((16,), 0.5)))
            self.register_buffer("picked", torch.multinomial(torch.ones(8), 4))
            self.after = nn.Linear(16, 4)  # draws after both, so their consumption must be right

    recipe = assert_replay_matches_eager(Masks, seed=0)
    assert {"mask", "picked"} <= set(recipe.names)


def test_replay_leaves_torch_generators_alone():
    recipe = initrecipe.record(lambda: nn.Linear(300, 300), seed=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    initrecipe.replay(recipe, threads=2)
    list(initrecipe.iter_replay(recipe, draw_in_place=False))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_generator_made_outside_and_drawn_inside_is_left_where_eager_leaves_it():
    outside = torch.Generator().manual_seed(42)
    torch.randn(5, generator=outside)  # a sample cached before the constructor runs

    def build() -> nn.Module:
        module = nn.Linear(33, 7)
        nn.init.normal_(module.weight, generator=outside)
        module.register_buffer("noise", torch.randn(3, generator=outside))
        return module

    start = outside.get_state()
    recipe = initrecipe.record(build, seed=0)
    after_record = outside.get_state()
    outside.set_state(start)
    torch.manual_seed(0)
    eager = build()
    assert torch.equal(after_record, outside.get_state())
    weights = initrecipe.replay(recipe)
    assert torch.equal(weights["weight"], eager.weight) and torch.equal(weights["noise"], eager.noise)


def test_dead_draws_between_live_ones_and_private_generators_interleaved():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            private = torch.Generator().manual_seed(77)
            self.a = nn.Parameter(torch.empty(40, 40).normal_())
            torch.empty(1000).uniform_()  # dead, on the global generator
            self.b = nn.Parameter(torch.empty(33).normal_(generator=private))
            torch.empty(3).normal_()  # dead, leaves a Box–Muller sample cached
            self.c = nn.Parameter(torch.empty(5).normal_())  # uses the cached sample first
            torch.randn(17, generator=private)  # dead, private
            self.d = nn.Parameter(torch.empty(2**20 + 3).uniform_(generator=private))
            self.e = nn.Parameter(torch.empty(2**20 + 3).normal_())
            self.register_buffer("f", torch.empty(7).log_normal_(generator=private))

    assert_replay_matches_eager(Mixed, seed=3)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_fills_split_across_threads_give_eager_bits(threads, monkeypatch):
    monkeypatch.setattr(parallel_draws, "PARALLEL_MIN_ELEMENTS", 64)
    monkeypatch.setattr(parallel_draws, "PIECE_ELEMENTS", 48)

    class Fills(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for n in (64, 65, 79, 80, 81, 1000, 4099):
                for dtype in FLOATS:
                    tag = f"{n}_{str(dtype)[6:]}"
                    self.register_buffer(f"n{tag}", torch.empty(n, dtype=dtype).normal_(0.0, 0.02))
                    self.register_buffer(f"u{tag}", torch.empty(n, dtype=dtype).uniform_(-0.5, 0.5))
                torch.empty(n).normal_()  # dead: the next fill starts after a jump

    recipe = initrecipe.record(Fills, seed=5)
    torch.manual_seed(5)
    eager = Fills()
    weights = initrecipe.replay(recipe, threads=threads)
    for name, tensor in eager.state_dict().items():
        assert torch.equal(weights[name], tensor), name


def test_streaming_and_partial_replays_skip_dead_draws_and_keep_bits():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         vocab_size=300, tie_word_embeddings=False)
    recipe = initrecipe.record(lambda: LlamaForCausalLM(config), seed=2)
    torch.manual_seed(2)
    eager = eager_tensors(LlamaForCausalLM(config))
    for entries, tensor in initrecipe.iter_replay(recipe, draw_in_place=False):
        assert torch.equal(tensor, eager[entries[0].name]), entries[0].name
    last = "model.layers.2.mlp.down_proj.weight"
    assert torch.equal(initrecipe.replay(recipe, names=[last])[last], eager[last])
    from initrecipe.runtime.replay_plan import prepare_replay

    plan = prepare_replay(recipe, names=[last])
    # Only the one live draw runs: every reset_parameters draw and every other init is skipped.
    ran = [i for i, a in enumerate(plan.actions) if a.name in ("RUN", "ADVANCE")
           and getattr(recipe.program[i], "op", "").startswith(("aten.normal_", "aten.uniform_"))]
    assert len(ran) == 1


def test_value_dependent_draws_record_with_sync_rng():
    class Poisson(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rates = torch.empty(20).uniform_(1.0, 5.0)
            self.register_buffer("counts", torch.poisson(rates))
            self.w = nn.Parameter(torch.empty(30).normal_())

    assert_replay_matches_eager(Poisson, seed=1)


@settings(max_examples=400, deadline=None)
@given(geometry=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30)), max_size=4))
def test_is_contiguous_agrees_with_torch(geometry: list[tuple[int, int]]) -> None:
    """The one contiguity check (draw costs, chunked dead fills, parallel draws) answers as
    ``torch.Tensor.is_contiguous()`` does, for empty tensors too (always contiguous)."""
    shape = tuple(size for size, _ in geometry)
    stride = tuple(step for _, step in geometry)
    expected = torch.empty_strided(shape, stride, device="meta").is_contiguous()
    assert draw_costs.is_contiguous(shape, stride) == expected
    assert draw_costs.is_contiguous((3, 0, 2), (7, 5, 3))

"""Every init flow of issue 19 records like eager (docs/FLOWS.md).

The rule: for a constructor that runs eagerly on CPU, ``replay(record(fn, seed=s))`` is bitwise
``torch.manual_seed(s); fn()`` for every tensor eager initializes (rng="torch"); a tensor eager
leaves as uninitialized memory (``to_empty``, ``skip_init`` storage never written) is recorded as
uninitialized, and replay still builds it with eager's shape and dtype.  In rng="portable" the
invariants hold: replay succeeds, names, shapes and dtypes are eager's, recording is deterministic,
and a shard is the slice of the whole.  The constructors are in ``tests/flow_models.py``.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path
from typing import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flow_models as fm
import initrecipe
from initrecipe.cli import main
from initrecipe.inspect.show import summarize
from zoo_check import bitwise_equal

ModelFn = Callable[[], nn.Module]


def uninitialized(recipe: initrecipe.Recipe) -> set[str]:
    """The names whose recorded init is ``uninitialized`` (``initrecipe show``)."""
    return {name for group in summarize(recipe).to_json()["groups"] for name in group["names"]
            if group["init"]["function"] == "uninitialized"}


def record_expecting(fn: ModelFn, uninit: set[str] = frozenset(), **options: object) -> initrecipe.Recipe:
    """``initrecipe.record(fn, **options)``, which warns exactly when ``uninit`` is not empty, and
    whose recipe then lists exactly ``uninit`` as uninitialized (``record``, ``show`` agree)."""
    if not uninit:
        recipe = initrecipe.record(fn, **options)  # any warning fails the test (filterwarnings=error)
    else:
        with pytest.warns(initrecipe.UninitializedWarning, match="leaves .* uninitialized"):
            recipe = initrecipe.record(fn, **options)
    assert set(recipe.uninitialized_names) == set(uninit) == uninitialized(recipe)
    return recipe


def eager_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def check_torch(fn: ModelFn, seed: int = 0, *, eager_fn: ModelFn | None = None,
                uninit: set[str] = frozenset()) -> initrecipe.Recipe:
    """Record ``fn`` (rng="torch"), replay it, and compare with ``eager_fn`` (default ``fn``) run
    eagerly on the CPU: every tensor bitwise except ``uninit``, which must be exactly the tensors
    the recipe says are uninitialized; names, kinds, shapes, dtypes, ``requires_grad`` and ties
    for all.  The generator is left where eager leaves it."""
    recipe = initrecipe.load(record_expecting(fn, uninit, seed=seed).to_bytes())
    after_record = torch.get_rng_state()
    replayed = initrecipe.replay(recipe)
    torch.manual_seed(seed)
    eager = eager_tensors((eager_fn or fn)())
    assert torch.equal(after_record, torch.get_rng_state()), "generator state after record differs from eager"
    assert list(replayed) == list(eager)
    assert uninitialized(recipe) == set(uninit)
    for name, want in eager.items():
        got = replayed[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        assert isinstance(got, nn.Parameter) == isinstance(want, nn.Parameter), name
        assert got.requires_grad == want.requires_grad, name
        if name not in uninit:
            assert bitwise_equal(got, want.detach().cpu()), f"`{name}` differs from eager"
    for a in eager:
        for b in eager:
            assert (eager[a] is eager[b]) == (replayed[a] is replayed[b]), f"tie `{a}` / `{b}`"
    return recipe


def check_portable(fn: ModelFn, seed: int = 0, *, eager_fn: ModelFn | None = None,
                   uninit: set[str] = frozenset()) -> initrecipe.Recipe:
    """rng="portable": deterministic recording, eager's names, shapes and dtypes, and every
    initialized tensor's two dim-0 halves replayed alone equal to the whole replay's halves."""
    recipe = record_expecting(fn, uninit, seed=seed, rng="portable")
    assert record_expecting(fn, uninit, seed=seed, rng="portable").to_bytes() == recipe.to_bytes()
    whole = initrecipe.replay(initrecipe.load(recipe.to_bytes()))
    torch.manual_seed(seed)
    eager = eager_tensors((eager_fn or fn)())
    assert [(n, t.shape, t.dtype) for n, t in whole.items()] == [(n, t.shape, t.dtype) for n, t in eager.items()]
    assert uninitialized(recipe) == set(uninit)
    for name, tensor in whole.items():
        if name in uninit or tensor.dim() == 0 or tensor.shape[0] < 2:
            continue
        halves = [initrecipe.replay(recipe, names=[name], shards={name: initrecipe.Shard.of(tensor.shape[0], r, 2)})[name]
                  for r in range(2)]
        assert bitwise_equal(torch.cat(halves), tensor), f"`{name}`: shards are not slices of the whole"
    return recipe


# ---------------------------------------------------------------------------------------- meta


def test_a_random_fill_of_a_meta_tensor_draws_nothing() -> None:
    recipe = check_torch(fm.meta_then_assign)
    check_portable(fm.meta_then_assign)
    torch.manual_seed(0)
    first = torch.empty(8, 8).normal_()
    assert torch.equal(initrecipe.replay(recipe)["weight"], first)  # the stream's first values


def test_meta_tensors_left_in_the_model_are_recorded_without_values() -> None:
    def fn() -> nn.Module:
        with torch.device("meta"):
            m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        m.add_module("live", nn.Linear(4, 2))
        return m

    recipe = record_expecting(fn, {"0.weight", "0.bias", "1.weight", "1.bias"}, seed=0)
    torch.manual_seed(0)
    eager = fn()
    assert eager[0].weight.is_meta
    replayed = initrecipe.replay(recipe)
    assert {n: (t.shape, t.dtype) for n, t in replayed.items()} == {
        n: (t.shape, t.dtype) for n, t in eager_tensors(eager).items()}
    assert torch.equal(replayed["live.weight"], eager.live.weight)  # the meta layers drew nothing


@pytest.mark.parametrize("fn, uninit", [
    (fm.meta_to_empty, set()),
    (fm.meta_to_empty_reset_parameters, {"scale"}),
    (fm.skip_init, {"bias"}),
    (fm.default_device_meta, set()),
    (fm.load_state_dict_assign, set()),
    (fm.accelerate_empty_weights, set()),
    (fm.accelerate_partly_set, {"0.bias", "1.bias"}),
    (fm.lightning_empty_init, {"0.weight", "0.bias", "1.weight"}),
    (fm.torchtitan_meta, set()),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_meta_flows_record_like_eager(fn: ModelFn, uninit: set[str]) -> None:
    check_torch(fn, uninit=uninit)
    check_portable(fn, uninit=uninit)


def test_to_empty_keeps_eagers_parameter_objects() -> None:
    """``to_empty`` from meta makes new Parameters (so it unties), ``.half()`` keeps them."""
    def fn() -> nn.Module:
        with torch.device("meta"):
            m = nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4, bias=False))
        m[1].weight = m[0].weight
        m.to_empty(device="cpu")
        m.half()
        nn.init.ones_(m[0].weight)
        nn.init.zeros_(m[1].weight)
        return m

    check_torch(fn)


def test_transformers_model_through_its_meta_flow() -> None:
    check_torch(fm.llama_meta)
    check_torch(fm.gpt2_meta_init_weights)


# ------------------------------------------------------------------------------ torch defaults


def test_set_default_device_inside_the_constructor_is_left_as_eager_leaves_it() -> None:
    try:
        recipe = record_expecting(fm.default_device_meta_left, {"weight", "bias"}, seed=0)
        assert torch.get_default_device() == torch.device("meta")
        under_meta = initrecipe.replay(recipe)  # replay works under torch's defaults, on its own device
    finally:
        torch.set_default_device(None)
    assert uninitialized(recipe) == {"weight", "bias"}
    assert {n: (t.shape, t.dtype, t.device.type) for n, t in under_meta.items()} == {
        "weight": ((4, 4), torch.float32, "cpu"), "bias": ((4,), torch.float32, "cpu")}


def test_replay_ignores_the_callers_default_device_and_dtype() -> None:
    recipes = [initrecipe.record(fm.meta_to_empty, seed=0), initrecipe.record(fm.meta_to_empty, seed=0, rng="portable")]
    plain = [initrecipe.replay(r) for r in recipes]
    torch.set_default_device("meta")
    torch.set_default_dtype(torch.float64)
    try:
        changed = [initrecipe.replay(r) for r in recipes]
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(torch.float32)
    for want, got in zip(plain, changed):
        assert all(t.device.type == "cpu" and bitwise_equal(t, want[n]) for n, t in got.items())


def test_set_default_dtype_inside_the_constructor() -> None:
    recipe = check_torch(fm.default_dtype_bf16)
    assert recipe.dtypes["0.0.weight"] == torch.bfloat16 and recipe.dtypes["1.weight"] == torch.float32
    check_portable(fm.default_dtype_bf16)


def test_a_default_dtype_left_by_the_constructor_stays_and_replay_ignores_it() -> None:
    try:
        recipe = initrecipe.record(fm.default_dtype_left, seed=0)
        assert torch.get_default_dtype() == torch.float64  # as `fn()` leaves it
        replayed = initrecipe.replay(recipe)  # replays under the float64 default, unaffected
        torch.set_default_dtype(torch.float32)
        torch.manual_seed(0)
        eager = eager_tensors(fm.default_dtype_left())
    finally:
        torch.set_default_dtype(torch.float32)
    assert [t.dtype for t in replayed.values()] == [torch.float32] * 2 + [torch.float64] * 3
    assert all(bitwise_equal(replayed[n], t.detach()) for n, t in eager.items())


def test_a_failed_recording_restores_the_defaults() -> None:
    def fn() -> nn.Module:
        torch.set_default_dtype(torch.float64)
        torch.set_default_device("meta")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        initrecipe.record(fn, seed=0)
    assert torch.get_default_dtype() == torch.float32 and torch.get_default_device() == torch.device("cpu")


# ------------------------------------------------------------------- lazy, inference mode


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")
def test_lazy_modules_sized_by_a_dry_run() -> None:
    check_torch(fm.lazy_modules)
    check_portable(fm.lazy_modules)


def test_tensors_made_under_inference_mode() -> None:
    check_torch(fm.inference_mode_buffer)
    check_portable(fm.inference_mode_buffer)


# ---------------------------------------------------------------------------------- devices


@pytest.mark.parametrize("flow", [fm.cuda_method_on, fm.cuda_to_on], ids=lambda f: f.__name__)
def test_cuda_calls_are_labels_and_replay_places_tensors(flow: Callable[[str], nn.Module]) -> None:
    assert not torch.cuda.is_available()
    recipe = check_torch(functools.partial(flow, "cuda"), eager_fn=functools.partial(flow, "cpu"))
    check_portable(functools.partial(flow, "cuda"), eager_fn=functools.partial(flow, "cpu"))
    meta = initrecipe.replay(recipe, device="meta")
    assert {t.device.type for t in meta.values()} == {"meta"}


@pytest.mark.parametrize("flow", [fm.cuda_context_on, fm.cuda_random_factory_on], ids=lambda f: f.__name__)
def test_portable_records_accelerator_draws_device_neutrally(flow: Callable[[str], nn.Module]) -> None:
    on_cuda = initrecipe.record(functools.partial(flow, "cuda"), seed=0, rng="portable")
    on_cpu = initrecipe.record(functools.partial(flow, "cpu"), seed=0, rng="portable")
    assert on_cuda.to_bytes() == on_cpu.to_bytes()
    check_portable(functools.partial(flow, "cuda"), eager_fn=functools.partial(flow, "cpu"))


_WAYS_OUT = (
    "rng='torch' reproduces torch's CPU generator, and an accelerator's random stream cannot be recorded "
    "(its values depend on the device model). Either draw on the CPU (create and initialize the tensor on "
    "\"cpu\", then move the model with `.to(device)`), or record with rng='portable', whose draws are "
    "identical on every device"
)


def test_torch_mode_refuses_a_draw_on_an_accelerator() -> None:
    with pytest.raises(initrecipe.RecordError) as refused:
        initrecipe.record(functools.partial(fm.cuda_random_factory_on, "cuda"), seed=0)
    assert re.fullmatch(
        r"random draw `aten\.randn\.generator` on a `cuda:0` tensor, filling `p` \(called from `[^`]*"
        r"flow_models\.py:\d+` in `cuda_random_factory_on`\): " + re.escape(_WAYS_OUT), str(refused.value))
    with pytest.raises(initrecipe.RecordError) as refused:
        initrecipe.record(functools.partial(fm.cuda_context_on, "cuda"), seed=0)
    assert re.fullmatch(
        r"random draw `aten\.uniform_\.default` on a `cuda:0` tensor, filling `weight` \(called from `[^`]*init\.py:\d+` "
        r"in `kaiming_uniform_`, reached from `[^`]*flow_models\.py:\d+` in `cuda_context_on`\): " + re.escape(_WAYS_OUT),
        str(refused.value))


# --------------------------------------------------------------------------------- refusals


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")
def test_moving_an_unmaterialized_lazy_module_to_an_accelerator_is_a_record_error() -> None:
    def fn() -> nn.Module:
        m = nn.Sequential(nn.LazyLinear(3)).cuda()
        m(torch.ones(2, 4, device="cuda"))
        return m

    with pytest.raises(initrecipe.RecordError) as refused:
        initrecipe.record(fn, seed=0, rng="portable")
    assert re.fullmatch(
        r"`Tensor\.to`/`\.cuda\(\)` moved an uninitialized parameter of a lazy module to `cuda:0` \(called from "
        r"`[^`]*module\.py:\d+` in `<lambda>`, reached from `[^`]*test_flows\.py:\d+` in `fn`\): initrecipe records "
        r"lazy modules on accelerator labels only once they are materialized\. Run the dry-run forward on the CPU "
        r"first, then move the module \(`m\(dummy\); m\.to\(device\)`\)", str(refused.value)), str(refused.value)

    def materialized_first() -> nn.Module:
        m = nn.Sequential(nn.LazyLinear(3))
        m(torch.ones(2, 4))
        return m.cuda()

    check_torch(materialized_first, eager_fn=_lazy_cpu)
    check_portable(materialized_first, eager_fn=_lazy_cpu)


def _lazy_cpu() -> nn.Module:
    m = nn.Sequential(nn.LazyLinear(3))
    m(torch.ones(2, 4))
    return m


def test_reading_a_meta_tensors_values_is_a_record_error() -> None:
    def copy_out() -> nn.Module:
        with torch.device("meta"):
            m = nn.Linear(2, 2)
        m.register_buffer("copy", m.weight.detach().to("cpu"))
        return m

    def item() -> nn.Module:
        with torch.device("meta"):
            m = nn.Linear(2, 2)
        m.scale = float(m.weight.detach().sum())
        return m

    for fn, op, shape in ((copy_out, "aten._to_copy.default", r"\[2, 2\]"),
                          (item, "aten._local_scalar_dense.default", r"\[\]")):
        with pytest.raises(initrecipe.RecordError) as refused:
            initrecipe.record(fn, seed=0)
        assert re.fullmatch(
            rf"`{re.escape(op)}` reads the values of a meta tensor \(on tensors of shape {shape} float32, called "
            rf"from `[^`]*test_flows\.py:\d+` in `{fn.__name__}`\); meta tensors hold no values \(eager PyTorch "
            r"raises here too\)\. Allocate the tensor on a real device first \(`module\.to_empty\(device=\"cpu\"\)`"
            r", `torch\.empty_like\(t, device=\"cpu\"\)`\) and initialize it", str(refused.value)), str(refused.value)
        with pytest.raises((NotImplementedError, RuntimeError)):
            fn()  # eager fails too


# -------------------------------------------------------------------------------- combinations


_BUILD = ("eager", "meta_context", "default_device", "skip_init")
_INIT = ("reset_parameters", "normal", "none")


def _combined(build: str, init: str, dtype: torch.dtype, lazy: bool, label: str | None) -> nn.Module:
    """A model made by one combination of the flows; ``label`` moves it with ``.to(label)``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if build == "skip_init":
            m = nn.Sequential(torch.nn.utils.skip_init(nn.Linear, 4, 4), nn.LayerNorm(4))
            m[1].to_empty(device="cpu")
        elif build == "eager":
            m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        else:
            if build == "meta_context":
                with torch.device("meta"):
                    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
            else:
                torch.set_default_device("meta")
                try:
                    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
                finally:
                    torch.set_default_device(None)
            m.to_empty(device="cpu")
        if init == "reset_parameters":
            for module in m.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        elif init == "normal":
            for p in m.parameters():
                nn.init.normal_(p, std=0.1)
        if lazy:
            m.append(nn.LazyLinear(3))
            m(torch.ones(2, 4, dtype=dtype))
        with torch.inference_mode():
            table = torch.arange(4.0).reshape(2, 2).flatten()
        m.register_buffer("table", table.to(dtype))
        if label is not None:
            m.to(label)
    finally:
        torch.set_default_dtype(previous)
    return m


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")
@settings(max_examples=24, deadline=None)
@given(build=st.sampled_from(_BUILD), init=st.sampled_from(_INIT),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]), lazy=st.booleans(),
       cuda=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_flows_in_combination(build: str, init: str, dtype: torch.dtype, lazy: bool, cuda: bool, seed: int) -> None:
    fn = functools.partial(_combined, build, init, dtype, lazy, "cuda" if cuda else None)
    eager_fn = functools.partial(_combined, build, init, dtype, lazy, None)
    uninit = set()
    if init == "none" and build != "eager":
        uninit = {"0.weight", "0.bias", "1.weight", "1.bias"}
    check_torch(fn, seed, eager_fn=eager_fn, uninit=uninit)
    check_portable(fn, seed, eager_fn=eager_fn, uninit=uninit)


# -------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("name", ["meta_then_assign", "meta_to_empty", "skip_init", "default_dtype_bf16",
                                  "torchtitan_meta", "accelerate_empty_weights"])
def test_the_command_line_records_the_api_recipe(name: str, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["record", f"flow_models:{name}", "--seed", "0", "-o", "flow.recipe"]) == 0
    uninit = {"skip_init": {"bias"}}.get(name, set())
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("initrecipe: warning:")]
    assert warned == ([
        "initrecipe: warning: the constructor leaves 1 tensor uninitialized, `bias`: no instruction writes its "
        "values, so eager gives it whatever memory holds and so does replay; initialize it in the constructor or "
        "with init_weights (`initrecipe check flow.recipe` lists each)"] if uninit else [])
    api = record_expecting(getattr(fm, name), uninit, seed=0)
    assert (tmp_path / "flow.recipe").read_bytes() == api.to_bytes()


# ----------------------------------------------------------------------- docs/FLOWS.md how-to

FLOWS_MD = Path(__file__).resolve().parent.parent / "docs" / "FLOWS.md"


def flows_audit(text: str) -> tuple[str, list[tuple[list[str], str]]]:
    """The audit how-to of docs/FLOWS.md: its module's source, and each console block's commands
    (``$ initrecipe ...`` lines) with the output shown after the last one."""
    module = re.search(r"<!-- flows-audit: gpt2_flows\.py -->\n```python\n(.*?)```", text, re.S)
    assert module is not None, "docs/FLOWS.md lost its audit module"
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = block.splitlines()
        commands = [line[2:] for line in lines if line.startswith("$ ")]
        last = max(i for i, line in enumerate(lines) if line.startswith("$ "))
        blocks.append((commands, "".join(line + "\n" for line in lines[last + 1:])))
    return module.group(1), blocks


def test_the_flows_audit_how_to(tmp_path, monkeypatch, capsys) -> None:
    """docs/FLOWS.md's audit runs as written and prints what the page shows."""
    source, blocks = flows_audit(FLOWS_MD.read_text())
    (tmp_path / "gpt2_flows.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(blocks) == 3
    for commands, shown in blocks:
        capsys.readouterr()
        codes = []
        for command in commands:
            assert command.startswith("initrecipe ")
            codes.append(main(shlex.split(command)[1:]))
        assert capsys.readouterr().out == shown
        assert codes[:-1] == [0] * (len(codes) - 1)
        assert codes[-1] == (0 if shown.startswith("---") and "\nidentical:" in shown else 1)
    # The meta flow leaves GPT-2's Conv1D tensors uninitialized and unties the head; the page's
    # first diff says so, tensor by tensor and in its summary.
    first = blocks[0][1]
    assert ("~ transformer.h.{0,1}.attn.c_attn.weight  (32, 96) float32\n"
            "    initialized -> uninitialized: b's program never writes it\n"
            "    init: normal_(mean=0.0, std=0.02) -> uninitialized\n") in first
    assert ("~ transformer.h.{0,1}.attn.c_attn.bias  (96,) float32\n"
            "    initialized -> uninitialized: b's program never writes it\n"
            "    init: zeros -> uninitialized\n") in first
    assert first.endswith("0 added, 0 removed, 19 changed (16 newly uninitialized), 10 keep their bits\n")
    assert "    tie: tied to `lm_head.weight` -> not tied\n" in first
    assert blocks[2][1].endswith("identical: 29 tensors, same metadata and values (same live programs)\n")

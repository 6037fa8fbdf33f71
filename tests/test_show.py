"""`initrecipe show`: how each tensor is initialized, in nn.init terms, from the live program alone."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import initrecipe
from initrecipe.analysis.facts import Action
from initrecipe.analysis.infer import infer_facts
from initrecipe.analysis.plan import plan_execution
from initrecipe.cli import main
from initrecipe.analysis.describe import Describer
from initrecipe.analysis.lineage import analyse
from initrecipe.support.namegroups import collapse, index_set_text
from initrecipe.program.ir import Call, Ref, RngSeed, GenRef
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.inspect.show import summarize

from every_init import EXPECTED_INITS, EveryInit

ROOT = Path(__file__).resolve().parent.parent
jsonschema = pytest.importorskip("jsonschema")
SHOW_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "schema" / "show.schema.json").read_text()))


@pytest.fixture(scope="module")
def every_init() -> dict[str, Recipe]:
    return {rng: initrecipe.record(EveryInit, seed=0, rng=rng) for rng in ("torch", "portable")}


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_every_nn_init_function_is_named_in_both_rng_modes(every_init, rng):
    summary = summarize(every_init[rng])
    assert {t.name: t.init_text for t in summary.tensors} == EXPECTED_INITS


def test_torch_and_portable_recordings_describe_alike_with_equal_keys(every_init):
    from initrecipe.analysis.lineage import Interner

    interner, describer = Interner(), Describer()
    keys = [{t.name: t.init.key for t in summarize(every_init[rng], interner=interner, describer=describer).tensors}
            for rng in ("torch", "portable")]
    assert keys[0] == keys[1]


def test_a_trunc_normal_that_rejected_nothing_is_a_normal_draw_in_torch_mode():
    # The rejection test that found nothing is dead code: the recipe, like eager, holds a normal_.
    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(2, 2))
            nn.init.trunc_normal_(self.w, std=0.02)

    (t,) = list(analyse(initrecipe.record(Small, seed=0)))
    assert Describer().tensor(t).text == "normal_(mean=0.0, std=0.02)"


def _planner_live(recipe: Recipe, facts, value: int) -> set[int]:
    actions = plan_execution(recipe.program, facts, [value], advance_dead_draws=False)
    live = set()
    for i, (ins, action) in enumerate(zip(recipe.program, actions)):
        if action != Action.RUN or not isinstance(ins, Call):
            if action == Action.RUN and not isinstance(ins, Call) and hasattr(ins, "out"):
                live.add(i)  # a literal
            continue
        info = facts.infos[i]
        creates = any(o is not None and facts.storage_creator.get(facts.values[o].storage) == i for o in ins.outs)
        if creates or facts.written_storages(i, ins):
            live.add(i)
    return live


_UNINITIALIZED = {"aten.empty.memory_format", "aten.empty_like.default", "aten.new_empty.default"}


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_live_programs_are_what_the_planner_runs(every_init, rng):
    recipe = every_init[rng]
    facts = infer_facts(recipe.program, recipe.generators, rng=rng)
    lineage = analyse(recipe, facts=facts)
    for t in lineage:
        mine, planner = t.live_indices(), _planner_live(recipe, facts, t.entry.value)
        assert mine <= planner, t.entry.name
        # The planner also keeps the allocation an `out=` call writes into (`eye_`): no values.
        assert {recipe.program[i].op for i in planner - mine} <= _UNINITIALIZED, t.entry.name


TINY_LLAMA = """\
format 1.0   rng torch   seed 0   118 ops   1 generator
hash: {hash}
tensors: 23 names, 22 distinct, 1 tie group
  21 parameters, 2 buffers (2 non-persistent)
size: 6,232 elements, 24.3 KiB
  float32: 22 tensors, 6,232 elements, 24.3 KiB

model.embed_tokens.weight  (64, 16) float32  normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.self_attn.q_proj.weight  (16, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.self_attn.k_proj.weight  (16, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.self_attn.v_proj.weight  (16, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.self_attn.o_proj.weight  (16, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.mlp.gate_proj.weight  (32, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.mlp.up_proj.weight  (32, 16) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.mlp.down_proj.weight  (16, 32) float32
    normal_(mean=0.0, std=0.02)
model.layers.{{0,1}}.input_layernorm.weight  (16,) float32  ones
model.layers.{{0,1}}.post_attention_layernorm.weight  (16,) float32  ones
model.norm.weight  (16,) float32  ones
lm_head.weight  (64, 16) float32  = model.embed_tokens.weight (tied)
model.rotary_emb.inv_freq  (4,) float32 [buffer, non-persistent]
    mul(reciprocal(pow(10000.0, div(arange(0, 8, 2), 8))), 1.0)
model.rotary_emb.original_inv_freq  (4,) float32 [buffer, non-persistent]
    mul(reciprocal(pow(10000.0, div(arange(0, 8, 2), 8))), 1.0)
"""


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("show") / "llama.recipe"
    initrecipe.record(lambda: LlamaForCausalLM(cfg), seed=0).save(path)
    return path


def test_show_of_a_tiny_llama_is_pinned(tiny_llama, capsys):
    assert main(["show", str(tiny_llama)]) == 0
    out = capsys.readouterr().out
    recipe = initrecipe.load(tiny_llama)
    assert out == f"recipe: {tiny_llama}\n" + TINY_LLAMA.format(hash=recipe.content_hash)
    assert all(len(line) <= 80 for line in out.splitlines()[1:])


def test_show_json_is_one_document_matching_its_schema(tiny_llama, capsys):
    golden = ROOT / "tests" / "golden" / "portable-v1.1.recipe"
    for path in (tiny_llama, golden):
        assert main(["show", "--json", str(path)]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert list(SHOW_SCHEMA.iter_errors(doc)) == []
    doc_groups = json.loads(_show_json(tiny_llama, capsys))["groups"]
    assert doc_groups[1] == {
        "pattern": "model.layers.{0,1}.self_attn.q_proj.weight",
        "names": ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"],
        "shape": [16, 16], "dtype": "float32", "kind": "parameter", "persistent": True, "requires_grad": True,
        "tied_to": None,
        "init": {"function": "normal_", "params": {"mean": "0.0", "std": "0.02"},
                 "text": "normal_(mean=0.0, std=0.02)"},
    }


def _show_json(path: Path, capsys) -> str:
    main(["show", "--json", str(path)])
    return capsys.readouterr().out


def test_textconv_is_one_stable_line_per_tensor(tiny_llama, capsys):
    assert main(["show", "--textconv", str(tiny_llama)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["format 1.0", "rng torch", "seed 0", "generators 1"]
    assert lines[5] == "model.embed_tokens.weight  (64, 16) float32  normal_(mean=0.0, std=0.02)"
    assert lines[-3] == "lm_head.weight  (64, 16) float32  = model.embed_tokens.weight (tied)"
    assert len(lines) == 5 + 23


def test_show_is_linear_in_tied_names_and_views():
    """10^4 tied names and 10^4 views of one storage (a ~1 MB recipe): one storage version is
    described once, every name costs a constant; a generous bound guards against regressions."""
    n = 10_000
    program = [
        RngSeed(0, 0),
        Call("aten.empty.memory_format", (0,), ([n, 4],), {"device": torch.device("cpu"), "pin_memory": False}),
        Call("aten.normal_.default", (None,), (Ref(0), 0.0, 0.02), {"generator": GenRef(0)}),
    ]
    tensors = [TensorEntry("w", 0, "parameter", (n, 4), torch.float32, True, True)]
    for i in range(n):
        program.append(Call("aten.select.int", (i + 1,), (Ref(0), 0, i), {}))
        tensors.append(TensorEntry(f"rows.{i}", i + 1, "buffer", (4,), torch.float32, False, True))
        tensors.append(TensorEntry(f"tied.{i}.weight", 0, "parameter", (n, 4), torch.float32, True, True))
    recipe = initrecipe.load(Recipe(rng="torch", seed=0, generators=1, program=program, tensors=tensors).to_bytes())
    describer = Describer()
    start = time.perf_counter()
    summary = summarize(recipe, describer=describer)
    text = summary.text()
    elapsed = time.perf_counter() - start
    assert len(describer._versions) == 1  # the one storage version, described once
    assert "tied.{0..9999}.weight  (10000, 4) float32  = w (tied)" in text.splitlines()
    assert text.endswith("rows.9999  (4,) float32 [buffer]\n"
                         "    normal_(mean=0.0, std=0.02) (view [9999] of a (10000, 4) tensor)\n")
    d = initrecipe.diff(recipe, recipe)
    assert d.identical and len(d.unchanged) == 2 * n + 1
    assert elapsed < 20  # seconds; about 1 s on the project's 2-core machine


# --------------------------------------------------------------------------- collapsing names
def test_index_sets():
    assert index_set_text(range(16)) == "{0..15}"
    assert index_set_text([0, 1, 2, 3, 5, 7, 8, 9]) == "{0..3,5,7..9}"
    assert index_set_text([3]) == "3"
    assert index_set_text([1, 0]) == "{0,1}"


def test_collapse_keeps_different_keys_and_order_apart():
    items = [(f"layers.{i}.w", "a" if i != 2 else "b") for i in range(4)] + [("head", "a")]
    assert [(g.pattern, g.names) for g in collapse(items)] == [
        ("layers.{0,1,3}.w", ("layers.0.w", "layers.1.w", "layers.3.w")),
        ("layers.2.w", ("layers.2.w",)),
        ("head", ("head",)),
    ]


def _expand(pattern: str) -> set[str]:
    parts = []
    for part in re.findall(r"\{[^}]*\}|[^.]+", pattern):
        if part.startswith("{"):
            values: list[str] = []
            for piece in part[1:-1].split(","):
                lo, _, hi = piece.partition("..")
                values.extend(str(i) for i in range(int(lo), int(hi or lo) + 1))
            parts.append(values)
        else:
            parts.append([part])
    return {".".join(p) for p in itertools.product(*parts)}


@given(st.sets(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from("ab")), max_size=40),
       st.sampled_from(["k", "v"]))
def test_every_pattern_expands_to_exactly_its_names(triples, suffix):
    items = [(f"blocks.{i}.layer.{j}.{leaf}.{suffix}", leaf) for i, j, leaf in sorted(triples)]
    groups = collapse(items)
    assert sorted(n for g in groups for n in g.names) == sorted(n for n, _ in items)
    for g in groups:
        assert _expand(g.pattern) == set(g.names)
        assert len({dict(items)[n] for n in g.names}) == 1
    assert re.fullmatch(r"[^{}]*", "".join(g.pattern for g in groups if len(g.names) == 1))

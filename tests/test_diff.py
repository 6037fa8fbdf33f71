"""`initrecipe diff`: real pairs of recipes, recipes against checkpoints, and the exit codes of diff(1).

Every pair is a tiny model recorded twice with one thing changed; each test pins the exact report.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import initrecipe
from initrecipe.cli import main
from initrecipe.inspect.value_compare import compare_values

ROOT = Path(__file__).resolve().parent.parent
jsonschema = pytest.importorskip("jsonschema")
DIFF_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "schema" / "diff.schema.json").read_text()))


def llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=64, **overrides)
    return lambda: LlamaForCausalLM(cfg)


def gpt2(layers: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_embd=16, n_layer=layers, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                     eos_token_id=0)
    return lambda: GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("diff")


@pytest.fixture(autouse=True)
def in_workdir(workdir, monkeypatch):
    """Tests name files relative to one folder, so that reports show short names."""
    monkeypatch.chdir(workdir)


@pytest.fixture(scope="module")
def recipes(workdir) -> dict[str, Path]:
    """The real pairs, recorded once and saved (paths relative to `workdir`)."""
    out = workdir
    made = {
        "llama-0.02": initrecipe.record(llama(initializer_range=0.02), seed=0),
        "llama-0.01": initrecipe.record(llama(initializer_range=0.01), seed=0),
        "llama-tied": initrecipe.record(llama(tie_word_embeddings=True), seed=0),
        "llama-seed1": initrecipe.record(llama(initializer_range=0.02), seed=1),
        "llama-portable": initrecipe.record(llama(initializer_range=0.02), seed=0, rng="portable"),
    }
    for rng in ("torch", "portable"):
        made[f"gpt2-2-{rng}"] = initrecipe.record(gpt2(2), seed=0, rng=rng)
        made[f"gpt2-3-{rng}"] = initrecipe.record(gpt2(3), seed=0, rng=rng)
    paths = {}
    for name, recipe in made.items():
        recipe.save(out / f"{name}.recipe")
        paths[name] = Path(f"{name}.recipe")
    return paths


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    if "--json" not in argv:
        for line in captured.out.splitlines():
            assert len(line) <= 80, line
    return code, captured.out, captured.err


def body(out: str) -> str:
    """The report without its two header lines (they name temporary paths)."""
    return "\n".join(out.splitlines()[2:]) + "\n"


# --------------------------------------------------------------------------- recipe against recipe
LLAMA_STD = """\
~ model.embed_tokens.weight  (64, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.self_attn.q_proj.weight  (16, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.self_attn.k_proj.weight  (16, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.self_attn.v_proj.weight  (16, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.self_attn.o_proj.weight  (16, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.mlp.gate_proj.weight  (32, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.mlp.up_proj.weight  (32, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ model.layers.{0,1}.mlp.down_proj.weight  (16, 32) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
~ lm_head.weight  (64, 16) float32
    init: normal_(mean=0.0, std=0.02 -> 0.01)
0 added, 0 removed, 16 changed, 7 keep their bits
"""


def test_llama_initializer_range_shows_every_changed_std(recipes, capsys):
    code, out, err = run(capsys, "diff", recipes["llama-0.02"], recipes["llama-0.01"])
    assert (code, err) == (1, "")
    assert out.splitlines()[:2] == [
        f"--- {recipes['llama-0.02']}  (recipe: rng torch, seed 0, 23 tensors)",
        f"+++ {recipes['llama-0.01']}  (recipe: rng torch, seed 0, 23 tensors)",
    ]
    assert body(out) == LLAMA_STD


def test_diff_of_a_recipe_with_itself_is_identical_and_exits_0(recipes, capsys):
    code, out, _ = run(capsys, "diff", recipes["llama-0.02"], recipes["llama-0.02"])
    assert code == 0
    assert body(out) == "identical: 23 tensors, same metadata and values (same live programs)\n"


GPT2_NEW_LAYER = """\
+ transformer.h.2.ln_1.weight  (16,) float32  ones
+ transformer.h.2.ln_1.bias  (16,) float32  zeros
+ transformer.h.2.attn.c_attn.weight  (16, 48) float32
    normal_(mean=0.0, std=0.02)
+ transformer.h.2.attn.c_attn.bias  (48,) float32  zeros
+ transformer.h.2.attn.c_proj.weight  (16, 16) float32
    normal_(mean=0.0, std=0.00816497)
+ transformer.h.2.attn.c_proj.bias  (16,) float32  zeros
+ transformer.h.2.ln_2.weight  (16,) float32  ones
+ transformer.h.2.ln_2.bias  (16,) float32  zeros
+ transformer.h.2.mlp.c_fc.weight  (16, 64) float32  normal_(mean=0.0, std=0.02)
+ transformer.h.2.mlp.c_fc.bias  (64,) float32  zeros
+ transformer.h.2.mlp.c_proj.weight  (64, 16) float32
    normal_(mean=0.0, std=0.00816497)
+ transformer.h.2.mlp.c_proj.bias  (16,) float32  zeros
"""
# GPT-2 scales its residual projections by 1/sqrt(2 * n_layer): a third layer changes them too.
GPT2_SCALED = """\
~ transformer.h.{0,1}.attn.c_proj.weight  (16, 16) float32
    init: normal_(mean=0.0, std=0.01 -> 0.00816497)
~ transformer.h.{0,1}.mlp.c_proj.weight  (64, 16) float32
    init: normal_(mean=0.0, std=0.01 -> 0.00816497)
"""


def test_gpt2_third_layer_portable_names_the_layer_and_the_rescaled_projections(recipes, capsys):
    code, out, _ = run(capsys, "diff", recipes["gpt2-2-portable"], recipes["gpt2-3-portable"])
    assert code == 1
    assert body(out) == GPT2_NEW_LAYER + GPT2_SCALED + "12 added, 0 removed, 4 changed, 25 keep their bits\n"


def test_gpt2_third_layer_torch_also_moves_later_draws_in_the_stream(recipes, capsys):
    # In torch mode the new layer's draws (reset_parameters while building) come before every
    # `_init_weights` draw: all of those keep their init but get other values.
    code, out, _ = run(capsys, "diff", recipes["gpt2-2-torch"], recipes["gpt2-3-torch"])
    assert code == 1
    moved = "    values differ: same init, drawn at another position of torch's random stream\n"
    assert body(out) == (
        GPT2_NEW_LAYER
        + "~ transformer.wte.weight  (64, 16) float32\n" + moved
        + "~ transformer.wpe.weight  (32, 16) float32\n" + moved
        + "~ transformer.h.{0,1}.attn.c_attn.weight  (16, 48) float32\n" + moved
        + GPT2_SCALED.split("~ transformer.h.{0,1}.mlp")[0]
        + "~ transformer.h.{0,1}.mlp.c_fc.weight  (16, 64) float32\n" + moved
        + "~ transformer.h.{0,1}.mlp.c_proj.weight  (64, 16) float32\n"
        + "    init: normal_(mean=0.0, std=0.01 -> 0.00816497)\n"
        + "~ lm_head.weight  (64, 16) float32\n" + moved
        + "12 added, 0 removed, 11 changed (7 only in values), 18 keep their bits\n"
    )


def test_untied_embeddings(recipes, capsys):
    code, out, _ = run(capsys, "diff", recipes["llama-tied"], recipes["llama-0.02"])
    assert code == 1
    assert body(out) == (
        "~ model.embed_tokens.weight  (64, 16) float32\n"
        "    tie: tied to `lm_head.weight` -> not tied\n"
        "~ lm_head.weight  (64, 16) float32\n"
        "    tie: tied to `model.embed_tokens.weight` -> not tied\n"
        "    values differ: same init, drawn at another position of torch's random stream\n"
        "0 added, 0 removed, 2 changed, 21 keep their bits\n"
    )


def _values_only_report(reason: str) -> str:
    groups = [
        ("model.embed_tokens.weight", "(64, 16)"),
        ("model.layers.{0,1}.self_attn.q_proj.weight", "(16, 16)"),
        ("model.layers.{0,1}.self_attn.k_proj.weight", "(16, 16)"),
        ("model.layers.{0,1}.self_attn.v_proj.weight", "(16, 16)"),
        ("model.layers.{0,1}.self_attn.o_proj.weight", "(16, 16)"),
        ("model.layers.{0,1}.mlp.gate_proj.weight", "(32, 16)"),
        ("model.layers.{0,1}.mlp.up_proj.weight", "(32, 16)"),
        ("model.layers.{0,1}.mlp.down_proj.weight", "(16, 32)"),
        ("lm_head.weight", "(64, 16)"),
    ]
    return "".join(f"~ {n}  {s} float32\n    values differ: same init, {reason}\n" for n, s in groups)


def test_two_seeds(recipes, capsys):
    code, out, _ = run(capsys, "diff", recipes["llama-0.02"], recipes["llama-seed1"])
    assert code == 1
    assert body(out) == ("seed: 0 -> 1\n" + _values_only_report("seed 0 -> 1")
                         + "0 added, 0 removed, 16 changed (16 only in values), 7 keep their bits\n")


def test_torch_against_portable_recording_of_one_model(recipes, capsys):
    code, out, _ = run(capsys, "diff", recipes["llama-0.02"], recipes["llama-portable"])
    assert code == 1
    assert body(out) == ("format: 1.0 -> 1.1\nrng: torch -> portable\n" + _values_only_report("rng torch -> portable")
                         + "0 added, 0 removed, 16 changed (16 only in values), 7 keep their bits\n")


class Head(nn.Module):
    """A linear layer whose init `_init_weights`-style code overwrites, and a second layer."""

    def __init__(self, extra_dead_draw: bool, dead_at_end: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        if extra_dead_draw and not dead_at_end:
            nn.init.uniform_(self.first.weight)  # overwritten below: dead
        nn.init.normal_(self.first.weight, std=0.02)
        self.second = nn.Linear(8, 4)
        if extra_dead_draw and dead_at_end:
            self.scratch = torch.empty(3).normal_()  # drawn after everything, used by nothing
            del self.scratch


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_dead_draws_are_ignored_but_torch_stream_positions_are_not(rng):
    plain = initrecipe.record(lambda: Head(False), seed=0, rng=rng)
    at_end = initrecipe.record(lambda: Head(True, dead_at_end=True), seed=0, rng=rng)
    early = initrecipe.record(lambda: Head(True), seed=0, rng=rng)
    assert initrecipe.diff(plain, at_end).identical
    d = initrecipe.diff(plain, early)
    if rng == "portable":  # dead draws are not even recorded; each draw has its own stream
        assert d.identical and plain.content_hash == early.content_hash
        return
    # The overwritten draw is dead, so `first.weight` keeps its init; but it and the draws after it
    # (the second layer's) moved in torch's stream.  `first.bias` was drawn before: same bits.
    assert [(c.name, [x.text for x in c.changes]) for c in d.changed] == [
        (name, ["values differ: same init, drawn at another position of torch's random stream"])
        for name in ("first.weight", "second.weight", "second.bias")
    ]
    assert d.unchanged == ["first.bias"]


def test_values_mode_replays_both_and_measures(recipes, capsys):
    code, out, _ = run(capsys, "diff", "--values", recipes["gpt2-2-portable"], recipes["gpt2-3-portable"])
    assert code == 1
    lines = body(out).splitlines()
    assert lines[-1] == "12 added, 0 removed, 4 changed, 25 keep their bits"
    first = lines.index("~ transformer.h.0.attn.c_proj.weight  (16, 16) float32")
    assert lines[first + 1] == "    init: normal_(mean=0.0, std=0.01 -> 0.00816497)"
    assert lines[first + 2].startswith("    values differ: 256 of 256 elements, max abs diff 0.00")
    # A new seed changes nothing in a model without random draws: identical, exit 0.
    a = initrecipe.record(lambda: nn.LayerNorm(4), seed=0)
    b = initrecipe.record(lambda: nn.LayerNorm(4), seed=1)
    d = initrecipe.diff(a, b, values=True)
    assert d.identical and [c.text for c in d.settings] == ["seed: 0 -> 1"]


def test_all_lists_unchanged_tensors(recipes, capsys):
    code, out, _ = run(capsys, "diff", "--all", recipes["llama-0.02"], recipes["llama-0.01"])
    assert code == 1
    assert body(out).endswith(
        "= model.layers.{0,1}.input_layernorm.weight  (16,) float32  ones\n"
        "= model.layers.{0,1}.post_attention_layernorm.weight  (16,) float32  ones\n"
        "= model.norm.weight  (16,) float32  ones\n"
        "= model.rotary_emb.inv_freq  (4,) float32 [buffer, non-persistent]\n"
        "    mul(reciprocal(pow(10000.0, div(arange(0, 8, 2), 8))), 1.0)\n"
        "= model.rotary_emb.original_inv_freq  (4,) float32 [buffer, non-persistent]\n"
        "    mul(reciprocal(pow(10000.0, div(arange(0, 8, 2), 8))), 1.0)\n"
        "0 added, 0 removed, 16 changed, 7 keep their bits\n"
    )


def test_json_is_one_document_matching_the_schema(recipes, capsys):
    code, out, _ = run(capsys, "diff", "--json", recipes["llama-tied"], recipes["llama-0.02"])
    assert code == 1
    doc = json.loads(out)
    assert list(DIFF_SCHEMA.iter_errors(doc)) == []
    assert doc["identical"] is False and doc["mode"] == "recipes"
    assert doc["changed"][0] == {
        "name": "model.embed_tokens.weight", "shape": [64, 16], "dtype": "float32", "values": None,
        "changes": [{"field": "tie", "a": ["lm_head.weight"], "b": [],
                     "text": "tie: tied to `lm_head.weight` -> not tied"}],
    }
    assert doc["summary"] == {"added": 0, "removed": 0, "changed": 2, "unchanged": 21, "newly_uninitialized": 0,
                              "newly_initialized": 0}
    assert doc["uninitialized"] == {"a": [], "b": []}


def test_library_result_is_typed_and_its_str_is_the_cli_text(recipes, capsys):
    d = initrecipe.diff(recipes["llama-0.02"], recipes["llama-0.01"])
    assert isinstance(d, initrecipe.RecipeDiff)
    assert not d.identical and d.added == [] and d.removed == []
    assert len(d.changed) == 16 and d.changed[0].changes[0].field == "init"
    main(["diff", str(recipes["llama-0.02"]), str(recipes["llama-0.01"])])
    assert capsys.readouterr().out == str(d)


# --------------------------------------------------------------------------- against checkpoints
@pytest.fixture(scope="module")
def checkpoints(recipes, workdir) -> dict[str, Path]:
    out = workdir
    tied = out / recipes["llama-tied"]
    initrecipe.to_safetensors(tied, out / "full")
    initrecipe.to_safetensors(tied, out / "sharded", max_shard_size=3000)
    initrecipe.to_safetensors(tied, out / "bf16", dtype="bf16")
    weights = load_file(out / "full" / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][3, 4] += 0.5
    save_file(weights, out / "perturbed.safetensors")
    del weights["model.norm.weight"]
    weights["extra.bias"] = torch.zeros(3)
    save_file(weights, out / "renamed.safetensors")
    return {name: Path(name) for name in ("full", "sharded", "bf16", "perturbed.safetensors", "renamed.safetensors")} | {
        "perturbed": Path("perturbed.safetensors"), "renamed": Path("renamed.safetensors")}


def test_recipe_against_its_own_checkpoint_is_identical(recipes, checkpoints, capsys):
    code, out, err = run(capsys, "diff", recipes["llama-tied"], checkpoints["full"])
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == f"+++ {checkpoints['full']}  (checkpoint: 20 tensors in 1 file)"
    assert body(out) == ("not expected in the checkpoint: 3 tied or non-persistent names\n"
                         "identical: 20 tensors, same metadata and values\n")


def test_sharded_checkpoint_folder_reads_through_its_index(recipes, checkpoints, capsys):
    assert len(list(checkpoints["sharded"].glob("model-*.safetensors"))) > 1
    code, out, _ = run(capsys, "diff", checkpoints["sharded"], recipes["llama-tied"])
    assert code == 0
    assert out.splitlines()[0].endswith("(checkpoint: 20 tensors in 11 files)")


def test_perturbed_element_is_found_named_and_measured(recipes, checkpoints, capsys):
    code, out, _ = run(capsys, "diff", recipes["llama-tied"], checkpoints["perturbed"])
    assert code == 1
    assert body(out) == (
        "~ model.layers.1.mlp.up_proj.weight  (32, 16) float32\n"
        "    values differ: 1 of 512 elements, max abs diff 0.5\n"
        "not expected in the checkpoint: 3 tied or non-persistent names\n"
        "19 equal, 1 different, 0 missing from the checkpoint, 0 not in the recipe\n"
    )
    code, out, _ = run(capsys, "diff", "--tolerance", "0.5", recipes["llama-tied"], checkpoints["perturbed"])
    assert code == 0
    assert body(out) == ("tolerance: values within 0.5 of each other count as equal\n"
                         "not expected in the checkpoint: 3 tied or non-persistent names\n"
                         "identical: 20 tensors, same metadata and values\n")


def test_missing_and_extra_tensors_either_order(recipes, checkpoints, capsys):
    code, out, _ = run(capsys, "diff", checkpoints["renamed"], recipes["llama-tied"])
    assert code == 1
    assert body(out) == (
        "- extra.bias  (3,) float32\n"
        "+ model.norm.weight  (16,) float32  ones\n"
        "~ model.layers.1.mlp.up_proj.weight  (32, 16) float32\n"
        "    values differ: 1 of 512 elements, max abs diff 0.5\n"
        "not expected in the checkpoint: 3 tied or non-persistent names\n"
        "18 equal, 1 different, 1 missing from the checkpoint, 1 not in the recipe\n"
    )


def test_bf16_checkpoint_reports_the_cast(recipes, checkpoints):
    d = initrecipe.diff(recipes["llama-tied"], checkpoints["bf16"])
    assert not d.identical and len(d.changed) == 20 and d.unchanged == []
    assert {x.text for c in d.changed for x in c.changes} == {
        "dtype: float32 -> bfloat16 (values equal to the recipe's, cast to bfloat16)"
    }


def test_two_checkpoints(checkpoints, capsys):
    code, out, _ = run(capsys, "diff", checkpoints["full"], checkpoints["perturbed"])
    assert code == 1
    assert body(out) == (
        "~ model.layers.1.mlp.up_proj.weight  (32, 16) float32\n"
        "    values differ: 1 of 512 elements, max abs diff 0.5\n"
        "19 equal, 1 different, 0 only in a, 0 only in b\n"
    )


# --------------------------------------------------------------------------- trouble: exit 2
def test_missing_file_exits_2_with_one_line(recipes, tmp_path, capsys):
    code, out, err = run(capsys, "diff", recipes["llama-0.02"], tmp_path / "nope.recipe")
    assert (code, out) == (2, "")
    assert err == f"initrecipe: error: `{tmp_path / 'nope.recipe'}` does not exist\n"


def test_tampered_recipe_exits_2(recipes, tmp_path, capsys):
    data = bytearray(recipes["llama-0.02"].read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "tampered.recipe"
    bad.write_bytes(bytes(data))
    code, out, err = run(capsys, "diff", recipes["llama-0.02"], bad)
    assert (code, out) == (2, "")
    assert err.startswith("initrecipe: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("header, problem", [
    (b"\xff" * 8, "its header claims 18446744073709551615 bytes"),
    (json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}).encode(), "outside the file's"),
    (json.dumps({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 16]}}).encode(), "holds 16 bytes"),
    (json.dumps({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}).encode(), "dtype 'Q4'"),
    (b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "w": 1}', "appears twice"),
    (b"[1, 2]", "not a JSON object"),
])
def test_hostile_safetensors_exit_2(recipes, tmp_path, capsys, header, problem):
    path = tmp_path / "hostile.safetensors"
    if header.startswith(b"\xff"):
        path.write_bytes(header + b"{}")
    else:
        path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    code, out, err = run(capsys, "diff", recipes["llama-0.02"], path)
    assert (code, out) == (2, "")
    assert err.startswith(f"initrecipe: error: `{path}` is not a readable safetensors file: ")
    assert problem in err and err.count("\n") == 1


def test_index_naming_a_file_outside_its_folder_exits_2(recipes, checkpoints, tmp_path, capsys):
    folder = tmp_path / "evil"
    shutil.copytree(checkpoints["sharded"], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "../../etc/passwd"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    code, _, err = run(capsys, "diff", recipes["llama-0.02"], folder)
    assert code == 2
    assert err == (f"initrecipe: error: `{folder / 'model.safetensors.index.json'}` names the file "
                   "'../../etc/passwd'; shards must lie in the index's folder\n")


def test_bad_arguments_exit_2(recipes, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diff", str(recipes["llama-0.02"])])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "initrecipe: error: the following arguments are required: B (see `initrecipe diff --help`)\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(["diff", "a", "b", "--tolerance", "-1"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- value comparison
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64, torch.int64, torch.bool,
                                   torch.complex64])
def test_compare_values_counts_and_measures(dtype):
    x = torch.arange(10).to(dtype)
    y = x.clone()
    assert compare_values(x, y).equal
    y[0] = torch.tensor(1).to(dtype) if dtype == torch.bool else x[0] + 2
    d = compare_values(x, y)
    assert (d.differing, d.numel, d.max_abs_diff) == (1, 10, 1.0 if dtype == torch.bool else 2.0)


def test_compare_values_is_bitwise_by_default_and_numeric_with_a_tolerance():
    x = torch.tensor([0.0, float("nan"), 1.0])
    y = torch.tensor([-0.0, float("nan"), 1.0 + 2**-23])
    d = compare_values(x, y)
    assert (d.differing, d.max_abs_diff) == (2, 2**-23)
    assert compare_values(x, y, tolerance=1e-6).equal
    assert compare_values(torch.tensor([1.0]), torch.tensor([float("nan")])).max_abs_diff == math.inf


# --------------------------------------------------------------------------- git
def test_git_diff_with_the_readme_textconv_names_the_changed_tensor(recipes, tmp_path):
    assert shutil.which("git"), "this test runs real `git diff`: install git"
    readme = (ROOT / "README.md").read_text()
    attributes = next(line for line in readme.splitlines() if line.startswith("*.recipe "))
    config = next(line for line in readme.splitlines() if line.startswith("git config diff.initrecipe.textconv"))
    repo = tmp_path / "repo"
    repo.mkdir()
    # The `initrecipe` command of this interpreter's environment, activated or not.
    scripts = Path(sys.executable).parent
    assert (scripts / "initrecipe").exists(), f"no `initrecipe` command beside {sys.executable}: pip install -e ."
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path), "PATH": f"{scripts}:/usr/bin:/bin"}

    def sh(command: str) -> str:
        return subprocess.run(command, shell=True, cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout

    sh("git init -q . && git config user.email t@example.com && git config user.name t")
    sh(config)
    (repo / ".gitattributes").write_text(attributes + "\n")
    shutil.copy(recipes["llama-0.02"].resolve(), repo / "model.recipe")
    sh("git add -A && git commit -qm a")
    shutil.copy(recipes["llama-0.01"].resolve(), repo / "model.recipe")
    out = sh("git diff")
    assert "-model.layers.0.mlp.up_proj.weight  (32, 16) float32  normal_(mean=0.0, std=0.02)\n" in out
    assert "+model.layers.0.mlp.up_proj.weight  (32, 16) float32  normal_(mean=0.0, std=0.01)\n" in out
    assert "+model.layers.0.input_layernorm.weight" not in out  # unchanged lines are context, not changes


def test_diff_and_show_import_neither_the_recorder_nor_transformers(recipes, checkpoints):
    code = (
        "import sys, initrecipe\n"
        "from initrecipe.inspect.show import summarize\n"
        f"summarize(initrecipe.load({str(recipes['llama-0.02'])!r})).text()\n"
        f"str(initrecipe.diff({str(recipes['llama-0.02'])!r}, {str(recipes['llama-0.01'])!r}))\n"
        f"str(initrecipe.diff({str(recipes['llama-tied'])!r}, {str(checkpoints['full'])!r}))\n"
        "print([m for m in ('initrecipe.capture.recorder', 'initrecipe.capture.generators', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shape_mismatch_against_a_checkpoint(recipes, workdir):
    weights = load_file(workdir / "full" / "model.safetensors")
    weights["model.norm.weight"] = torch.ones(8)
    save_file(weights, workdir / "reshaped.safetensors")
    d = initrecipe.diff(recipes["llama-tied"], "reshaped.safetensors")
    assert [(c.name, [x.text for x in c.changes]) for c in d.changed] == [
        ("model.norm.weight", ["shape: (16,) -> (8,)"])
    ]


class Reseeded(nn.Module):
    """Draws, an extra draw, `manual_seed`, and a layer inside `fork_rng` (restored after)."""

    def __init__(self, variant: bool) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        if variant:
            torch.empty(4).normal_()  # moves the stream, but a reseed follows
        torch.manual_seed(7)
        self.b = nn.Linear(3, 3)
        with torch.random.fork_rng():
            if variant:
                self.c = nn.Linear(3, 3)  # drawn from a forked stream that is restored after
        self.d = nn.Linear(3, 3)


def test_reseeding_and_restored_generators_bound_what_a_change_moves():
    d = initrecipe.diff(initrecipe.record(lambda: Reseeded(False), seed=0),
                        initrecipe.record(lambda: Reseeded(True), seed=0))
    assert body(str(d)) == (
        "+ c.weight  (3, 3) float32  kaiming_uniform_(a=sqrt(5))\n"
        "+ c.bias  (3,) float32  uniform_(a=-1/sqrt(3), b=1/sqrt(3))\n"
        "2 added, 0 removed, 0 changed, 6 keep their bits\n"
    )


def test_recipes_recorded_from_the_current_generator_state():
    torch.manual_seed(1)
    a = initrecipe.record(lambda: nn.Linear(3, 3))
    torch.manual_seed(1)
    same = initrecipe.record(lambda: nn.Linear(3, 3))
    torch.manual_seed(2)
    other = initrecipe.record(lambda: nn.Linear(3, 3))
    assert initrecipe.diff(a, same).identical
    d = initrecipe.diff(a, other)
    assert [x.text for c in d.changed for x in c.changes] == [
        "values differ: same init, torch's generator starts from another state"] * 2


class Inits(nn.Module):
    def __init__(self, variant: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)
        if variant:
            nn.init.normal_(self.lin.weight, std=0.02)
        self.norm = nn.Parameter(torch.ones(4) if variant else torch.zeros(4))
        self.t = nn.Parameter(torch.empty(8, 4))
        nn.init.trunc_normal_(self.t, std=0.02, a=-3.0 if variant else -2.0, b=3.0 if variant else 2.0)


def test_init_changes_in_nn_init_terms():
    d = initrecipe.diff(initrecipe.record(lambda: Inits(False), seed=0, rng="portable"),
                        initrecipe.record(lambda: Inits(True), seed=0, rng="portable"))
    assert body(str(d)) == (  # a module's own parameters come before its submodules'
        "~ norm  (4,) float32\n"
        "    init: zeros -> ones\n"
        "~ t  (8, 4) float32\n"
        "    init: trunc_normal_(mean=0.0, std=0.02, a=-2.0 -> -3.0, b=2.0 -> 3.0)\n"
        "~ lin.weight  (4, 4) float32\n"
        "    init: kaiming_uniform_(a=sqrt(5)) -> normal_(mean=0.0, std=0.02)\n"
        "0 added, 0 removed, 3 changed, 0 keep their bits\n"
    )

"""Packaging promises: the replayer stands alone, the README and CI agree, the API is typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from torch import nn

import initrecipe

ROOT = Path(__file__).resolve().parent.parent


def test_replay_imports_neither_the_recorder_nor_transformers(tmp_path):
    path = initrecipe.record(lambda: nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), seed=1).save(tmp_path / "r.recipe")
    code = (
        "import sys, initrecipe\n"
        f"w = initrecipe.replay({str(path)!r})\n"
        "bad = [m for m in ('initrecipe.capture.recorder', 'initrecipe.capture.generators', 'transformers') "
        "if m in sys.modules]\n"
        "print(len(w), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4 []"


def test_public_api_names():
    assert set(initrecipe.__all__) >= {"record", "replay", "iter_replay", "load", "Recipe", "RecipeError"}
    assert callable(initrecipe.record)
    assert issubclass(initrecipe.RecipeFormatError, initrecipe.RecipeError)
    assert issubclass(initrecipe.RecipeFormatError, ValueError)
    assert issubclass(initrecipe.UnsupportedVersionError, initrecipe.RecipeFormatError)
    assert issubclass(initrecipe.ReplayError, RuntimeError)
    assert issubclass(initrecipe.RecordError, initrecipe.RecipeError)
    assert (ROOT / "initrecipe" / "py.typed").exists()


def test_readme_opens_with_the_two_commands_and_the_test_command_is_ci():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert "torch==2.13.0" in block[0] and "initrecipe.example" in block[0]
    assert block[1].split("#")[0].strip() == ".ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    # The oldest supported torch (pyproject's floor) runs everything, the newest release the
    # torch-release tests, each stage failing on "no tests collected".
    assert "pip install -q torch==2.13.0 -e '.[test]' && run_pytest &&" in ci
    assert "PIP_CONFIG_FILE=/dev/null pip install -q torch==2.15.0 ||" in ci
    assert '"torch>=2.13"' in (ROOT / "pyproject.toml").read_text()
    listed = ci.split("TORCH_RELEASE_TESTS=(", 1)[1].split(")", 1)[0].split()
    for name in ("test_torch_rng", "test_golden", "test_record_replay", "test_show", "test_nn_init_fixtures",
                 "test_check_agrees", "test_torch_versions", "test_zoo"):
        assert f"tests/{name}.py" in listed
    assert all((ROOT / path).is_file() for path in listed)


def test_gpt2_recipe_is_small_and_grows_with_ops_not_numel():
    from transformers import GPT2Config, GPT2LMHeadModel

    small = initrecipe.record(lambda: GPT2LMHeadModel(GPT2Config(n_embd=96, n_head=12)), seed=0, sync_rng=False)
    full = initrecipe.record(lambda: GPT2LMHeadModel(GPT2Config()), seed=0, sync_rng=False)
    assert full.total_bytes > 400 * 2**20
    assert len(full.to_bytes()) < 64 * 1024
    # 20x the weights, about the same recipe: only the digits of shapes and scales differ.
    assert small.total_bytes * 19 < full.total_bytes
    assert abs(len(full.to_bytes()) - len(small.to_bytes())) < 0.05 * len(full.to_bytes())


def test_builtin_example_runs_and_checks_against_eager():
    out = subprocess.run(
        [sys.executable, "-m", "initrecipe.example", "--small"], capture_output=True, text=True, check=True
    )
    assert "bitwise equal to eager" in out.stdout


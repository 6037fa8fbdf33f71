"""The package's shape (docs/ARCHITECTURE.md): imports point down the stages, no cycles, no
private names across modules, imports inside functions only where a comment says why, and the
module paths the docs and specs name exist."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imports that stay inside a function, each for a reason written beside it in the source.
LAZY_IMPORTS = {
    # start-up time: the recorder (torch's fake-tensor machinery) and torch.distributed load on first use
    "initrecipe: from initrecipe.capture.recorder import record",
    "initrecipe: from initrecipe import distributed",
    "initrecipe.cli: from initrecipe.capture.findings import uninitialized_message",
    "initrecipe.cli: from initrecipe.capture.recorder import record",
    "initrecipe.cli: from initrecipe.capture.hf import model_fn_from_config",
    # an optional dependency, imported when asked for
    "initrecipe.capture.hf: import transformers",
    # torch's private API: any failure to import it is a fallback reason, checked per device
    "initrecipe.rng.portable.torch_philox: import torch.func._random as api",
}

# Strings in the docs that look like module paths but are not: metadata keys, a git setting, the
# JSON schema names, a key-derivation label, a placeholder.
NOT_MODULE_PATHS = {
    "initrecipe.NAME", "initrecipe.content_hash", "initrecipe.hash", "initrecipe.textconv", "initrecipe.version",
    "initrecipe.philox4x32", "initrecipe.show", "initrecipe.diff",
}


def _metrics() -> dict:
    spec = importlib.util.spec_from_file_location("arch_metrics", ROOT / "tools" / "arch_metrics.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.measure()


def test_no_import_cycles_and_no_upward_imports():
    figures = _metrics()
    assert figures["import_cycles_all_imports"] == []
    assert figures["upward_imports"] == []
    assert figures["modules_outside_the_layers"] == []


def test_no_module_imports_another_modules_private_name():
    # The C extensions are private modules of their own package, imported by its binding module only.
    extensions = {
        "initrecipe.rng.portable.kernel_samplers: initrecipe.rng.portable._portable_kernel",
        "initrecipe.rng.torch.generator_state: initrecipe.rng.torch._mt19937",
    }
    assert sorted(set(_metrics()["private_name_imports"]) - extensions) == []


def test_imports_inside_functions_are_only_the_commented_lazy_ones():
    found = {re.sub(r":\d+:", ":", item) for item in _metrics()["imports_inside_functions"]}
    assert found == LAZY_IMPORTS


def test_the_layer_contract_holds():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is part of the test extra"
    run = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout


def test_module_paths_named_in_the_docs_exist():
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("schema/*.md"), *ROOT.glob("schema/*.json")]
    missing = []
    for path in files:
        for match in re.finditer(r"(?<![\w/])initrecipe(?:\.[A-Za-z_]\w*)+", path.read_text()):
            name = match.group(0)
            if name in NOT_MODULE_PATHS:
                continue
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    target: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                break
            for attribute in parts[cut:]:
                if not hasattr(target, attribute):
                    missing.append(f"{path.relative_to(ROOT)}: {name}")
                    break
                target = getattr(target, attribute)
    assert missing == []


def test_file_paths_named_in_the_docs_exist():
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("schema/*.md")]
    missing = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in re.finditer(r"initrecipe/[\w/]+\.(?:py|c|h)\b", path.read_text())
        if not (ROOT / match.group(0)).exists()
    ]
    assert missing == []

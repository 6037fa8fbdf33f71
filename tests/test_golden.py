"""The committed golden recipe: format 1.0 files written today must read and replay identically forever.

The files in tests/golden/ are made by ``tools/make_golden.py`` and only by it; these tests read them
and never write them.  A failure here means a change broke compatibility with existing recipe files:
fix the change, do not regenerate the golden file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import torch

import initrecipe
from initrecipe.format.recipe import encode_for_schema

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
RECIPE = GOLDEN / "linear-v1.0.recipe"
EXPECTED = json.loads((GOLDEN / "linear-v1.0.sha256.json").read_text())
BODY_KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")


def _tensor_sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def raw() -> bytes:
    return RECIPE.read_bytes()


def test_golden_file_is_the_committed_one(raw: bytes) -> None:
    assert hashlib.sha256(raw).hexdigest() == EXPECTED["file_sha256"], (
        "tests/golden/linear-v1.0.recipe changed; golden files are regenerated only by "
        "tools/make_golden.py, deliberately, together with their .sha256.json"
    )


def test_load_then_to_bytes_is_identical(raw: bytes) -> None:
    recipe = initrecipe.load(raw)
    assert recipe.to_bytes() == raw
    assert initrecipe.load(RECIPE).to_bytes() == raw  # from a path too


def test_content_hash_is_as_stored(raw: bytes) -> None:
    doc = msgpack.unpackb(raw, raw=False)
    recipe = initrecipe.load(raw)
    assert doc["hash"] == recipe.content_hash == EXPECTED["content_hash"]
    # FORMAT.md section 8: the hash of the canonical re-encoding of the nine body fields ...
    body = msgpack.packb({k: doc[k] for k in BODY_KEYS}, use_bin_type=True)
    assert doc["hash"] == "sha256:" + hashlib.sha256(body).hexdigest()
    # ... which, for a canonically written file, is the file minus its hash entry.
    assert raw[0] == 0x8A and list(doc)[-1] == "hash"
    assert hashlib.sha256(b"\x89" + raw[1 : len(raw) - 78]).hexdigest() == doc["hash"].removeprefix("sha256:")


def test_golden_is_format_1_0(raw: bytes) -> None:
    doc = msgpack.unpackb(raw, raw=False)
    assert doc["format"] == "initrecipe"
    assert doc["version"] == EXPECTED["format_version"] == [1, 0]
    assert list(doc) == [*BODY_KEYS, "hash"]


def test_replay_gives_the_expected_tensor_hashes(raw: bytes) -> None:
    weights = initrecipe.replay(initrecipe.load(raw))
    assert list(weights) == list(EXPECTED["tensors"])
    for name, tensor in weights.items():
        want = EXPECTED["tensors"][name]
        assert str(tensor.dtype).removeprefix("torch.") == want["dtype"], name
        assert list(tensor.shape) == want["shape"], name
        assert _tensor_sha256(tensor) == want["sha256"], f"`{name}` replays to different bits"


def test_golden_matches_eager_initialization(raw: bytes) -> None:
    torch.manual_seed(EXPECTED["seed"])
    eager = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)).state_dict()
    for name, want in EXPECTED["tensors"].items():
        assert _tensor_sha256(eager[name]) == want["sha256"], name


def test_corrupted_golden_is_refused(raw: bytes) -> None:
    doc = msgpack.unpackb(raw, raw=False)
    doc["seed"] = 1  # an edit that keeps the file well-formed
    with pytest.raises(initrecipe.RecipeIntegrityError):
        initrecipe.load(msgpack.packb(doc, use_bin_type=True))
    with pytest.raises(initrecipe.RecipeFormatError):
        initrecipe.load(raw[:-1])
    with pytest.raises(initrecipe.RecipeFormatError):
        initrecipe.load(raw + b"\x00")


def test_golden_is_schema_valid(raw: bytes) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schema" / "recipe.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(encode_for_schema(initrecipe.load(raw)))


def test_reference_reader_reads_golden() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "schema" / "reference_reader.py"), str(RECIPE)],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert EXPECTED["content_hash"] in out.stdout
    for name in EXPECTED["tensors"]:
        assert name in out.stdout


# --------------------------------------------------------------------------- portable (format 1.1)
PORTABLE = GOLDEN / "portable-v1.1.recipe"
PORTABLE_EXPECTED = json.loads((GOLDEN / "portable-v1.1.sha256.json").read_text())


def _portable_hashes(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, object]]:
    return {
        name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "sha256": _tensor_sha256(t)}
        for name, t in weights.items()
    }


def test_portable_golden_is_the_committed_file() -> None:
    data = PORTABLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PORTABLE_EXPECTED["file_sha256"]
    assert initrecipe.load(data).to_bytes() == data
    assert msgpack.unpackb(data, raw=False)["version"] == [1, 1]


@pytest.mark.parametrize("path", ["kernel", "reference"])
def test_portable_golden_replays_to_the_pinned_bits(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bits of a portable recipe are pinned across torch versions (this file was written under
    torch 2.13.0 and checked under 2.14.1 with tools/make_portable_golden.py --check), thread counts
    and the CPU kernel vs the device-generic torch-op path that accelerators run."""
    _assert_replays_to(PORTABLE, PORTABLE_EXPECTED, path, monkeypatch)


def _assert_replays_to(recipe: Path, expected: dict, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``recipe`` replays to ``expected``'s per-tensor hashes on 1 and 2 threads, through the C
    kernel (``path="kernel"``) or the torch-op path (``"reference"``)."""
    import initrecipe.rng.portable.samplers as samplers

    if path == "reference":
        monkeypatch.setattr(samplers, "_kernel", None)
    else:
        assert samplers.KERNEL_AVAILABLE, "the C kernel was not built (pip install -e . builds it)"
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            got = _portable_hashes(initrecipe.replay(initrecipe.load(recipe)))
            assert got == expected["tensors"], f"{path}, {count} threads"
    finally:
        torch.set_num_threads(threads)


def test_portable_golden_is_schema_valid() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schema" / "recipe.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(encode_for_schema(initrecipe.load(PORTABLE)))


# --------------------------------------------------------------------------- portable (format 1.2)
PORTABLE_12 = GOLDEN / "portable-v1.2.recipe"
PORTABLE_12_EXPECTED = json.loads((GOLDEN / "portable-v1.2.sha256.json").read_text())


def test_portable_1_2_golden_is_the_committed_file() -> None:
    data = PORTABLE_12.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PORTABLE_12_EXPECTED["file_sha256"]
    assert initrecipe.load(data).to_bytes() == data
    doc = msgpack.unpackb(data, raw=False)
    assert doc["version"] == [1, 2]
    for op in ("aten.cauchy_.default", "aten.log_normal_.default", "aten.geometric_.default", "aten.bernoulli.default",
               "aten.bernoulli.p", "aten.bernoulli_.Tensor", "aten.normal.Tensor_Tensor", "aten.normal.Tensor_float",
               "aten.normal.float_Tensor", "aten.multinomial.default"):
        assert op in doc["ops"], op


@pytest.mark.parametrize("path", ["kernel", "reference"])
def test_portable_1_2_golden_replays_to_the_pinned_bits(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written under torch 2.13.0, checked under 2.14.1 and 2.15.0 (tools/make_portable_golden.py
    --format 1.2 --check); 1 and 2 threads; the C kernel and the torch-op path."""
    _assert_replays_to(PORTABLE_12, PORTABLE_12_EXPECTED, path, monkeypatch)


def test_portable_1_2_golden_is_schema_valid_and_a_1_1_label_is_refused() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "schema" / "recipe.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(encode_for_schema(initrecipe.load(PORTABLE_12)))
    doc = msgpack.unpackb(PORTABLE_12.read_bytes(), raw=False)
    doc["version"] = [1, 1]
    body = {k: doc[k] for k in BODY_KEYS}
    doc["hash"] = "sha256:" + hashlib.sha256(msgpack.packb(body, use_bin_type=True)).hexdigest()
    with pytest.raises(initrecipe.RecipeFormatError, match=r"program\[\d+\]: `aten\.\w+\.\w+` draws from a stream key, "
                       r"which format 1\.2 added, but this file says 1\.1: the file is corrupt"):
        initrecipe.load(msgpack.packb(doc, use_bin_type=True))


def test_old_trunc_normal_programs_keep_their_bits() -> None:
    """The 1.1 golden holds trunc_normal_ as initrecipe 0.2 recorded it (no open-interval clamp): it
    still replays as written, while a new recording of the same module records the corrected program."""
    doc = msgpack.unpackb(PORTABLE.read_bytes(), raw=False)
    calls = [doc["ops"][ins[1]].split(".")[1] for ins in doc["program"] if ins[0] == 0]
    at = calls.index("erfinv_")
    assert calls[at - 1 : at + 4] == ["uniform_", "erfinv_", "mul_", "add_", "clamp_"]
    weights = initrecipe.replay(initrecipe.load(PORTABLE))
    assert _portable_hashes({"trunc": weights["trunc"]}) == {"trunc": PORTABLE_EXPECTED["tensors"]["trunc"]}

"""Hostile and broken recipes: a clear error every time, never code execution, a hang, a crash or a
memory bomb.  The most likely mistakes each get an exact, helpful message."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
import re
import time
from pathlib import Path

import msgpack
import pytest
import torch
from torch import nn

import initrecipe
from initrecipe import WorkLimitError
from initrecipe.format import envelope, spec
from initrecipe.cli import main as cli_main
from initrecipe.program.ir import Call, GenRef, Literal, Ref
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.inspect.check import check

KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")
MiB = 1 << 20


# --------------------------------------------------------------------------- helpers
def linear_recipe() -> Recipe:
    """program: 0 seed, 1 empty->0, 2 detach->1, 3 detach->2 (weight), 4 empty->3, 5 detach->4,
    6 detach->5 (bias), 7 uniform_(2), 8 uniform_(5)."""
    return initrecipe.record(lambda: nn.Linear(3, 2), seed=0)


@pytest.fixture(scope="module")
def base() -> bytes:
    return linear_recipe().to_bytes()


def doc_of(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def content_hash(doc: dict) -> str:
    """The content hash, computed independently of initrecipe: sha256 of the body's msgpack."""
    body = msgpack.packb({k: doc[k] for k in KEYS if k in doc}, use_bin_type=True, use_single_float=False)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def pack(doc: dict, *, rehash: bool = True) -> bytes:
    doc = dict(doc)
    if rehash:
        doc["hash"] = content_hash(doc)
    return msgpack.packb(doc, use_bin_type=True, use_single_float=False)


def edited(data: bytes, edit) -> bytes:
    """The recipe after ``edit(doc)`` changed its document, with a valid hash (past the integrity check)."""
    doc = copy.deepcopy(doc_of(data))
    edit(doc)
    return pack(doc)


def raises(exc_type, message: str, fn, *args, **kwargs):
    with pytest.raises(exc_type, match=re.escape(message)) as info:
        fn(*args, **kwargs)
    return info.value


def hand_recipe(program, tensors, generators: int = 0) -> bytes:
    return Recipe(rng="torch", seed=None, generators=generators, program=program, tensors=tensors).to_bytes()


# --------------------------------------------------------------------------- the ten likeliest mistakes
def test_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    raises(initrecipe.RecipeFormatError, "this is a safetensors file (weights, not a recipe), not an init recipe",
           initrecipe.load, path)


def test_a_torch_save_checkpoint_and_a_pickle(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, path)
    raises(initrecipe.RecipeFormatError, "this is a zip archive (a `torch.save` checkpoint?), not an init recipe",
           initrecipe.load, path)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=False)
    raises(initrecipe.RecipeFormatError, "this is a pickle file (a `torch.save` checkpoint?), not an init recipe",
           initrecipe.load, buf.getvalue())
    for protocol in (2, 3, 4, 5):
        raises(initrecipe.RecipeFormatError, "this is a pickle file", initrecipe.load,
               pickle.dumps({"a": [1, 2]}, protocol=protocol))


def test_a_json_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}, indent=2))
    raises(
        initrecipe.RecipeFormatError,
        "this is a JSON file (a `config.json`? record it with `initrecipe record --hf-config`), not an init recipe",
        initrecipe.load, path,
    )


def test_an_empty_file(tmp_path):
    path = tmp_path / "empty.recipe"
    path.write_bytes(b"")
    raises(initrecipe.RecipeFormatError,
           "the recipe is empty (0 bytes): the download or copy did not complete", initrecipe.load, path)


def test_a_truncated_download(base):
    raises(initrecipe.RecipeFormatError,
           "the recipe is truncated (its data ends early): download or copy it again",
           initrecipe.load, base[: len(base) // 2])
    # Every cut is an error, and none is taken for another kind of file or a strange instruction.
    for cut in range(1, len(base)):
        with pytest.raises(initrecipe.RecipeFormatError) as info:
            initrecipe.load(base[:cut])
        assert "truncated" in str(info.value) or "corrupt" in str(info.value), (cut, str(info.value))


def test_a_newer_version(base, monkeypatch):
    newer = edited(base, lambda d: d.__setitem__("version", [1, 3]))
    raises(
        initrecipe.UnsupportedVersionError,
        f"recipe format 1.3 needs a newer initrecipe; this is initrecipe {initrecipe.__version__}, which reads "
        "format versions up to 1.2. Upgrade with `pip install -U initrecipe`",
        initrecipe.load, newer,
    )
    monkeypatch.setitem(spec.FIRST_READER, (2, 3), "0.4.0")
    err = raises(initrecipe.UnsupportedVersionError, "recipe format 2.3 needs initrecipe >= 0.4.0; ",
                 initrecipe.load, edited(base, lambda d: d.__setitem__("version", [2, 3])))
    assert "corrupt" not in str(err)  # a genuine newer recipe: its hash matches
    assert isinstance(err, initrecipe.RecipeFormatError)
    # Older versions than 1.0 do not exist; the own version is read.
    raises(initrecipe.UnsupportedVersionError, "recipe format 0.9 predates format 1.0 and cannot be read",
           initrecipe.load, edited(base, lambda d: d.__setitem__("version", [0, 9])))
    assert initrecipe.load(base).names == ["weight", "bias"]


def test_an_unknown_op(base):
    def edit(doc):
        doc["ops"][2] = "aten.system.default"

    bad = edited(base, edit)
    message = (
        "ops[2]: unknown operator `aten.system.default`: it is not on initrecipe's allowlist; "
        "the recipe was written by a newer or a modified initrecipe, or is corrupt"
    )
    raises(initrecipe.RecipeFormatError, message, initrecipe.load, bad)
    raises(initrecipe.RecipeFormatError, message, initrecipe.replay, bad)
    assert check(bad, max_bytes=MiB) == [message]
    # An allowlisted name with an overload this torch lacks is refused before anything runs.
    raises(initrecipe.RecipeFormatError, "program[7]: operator `aten.uniform_.nope` does not exist in torch",
           initrecipe.replay, edited(base, lambda d: d["ops"].__setitem__(2, "aten.uniform_.nope")))
    # Names that would reach other namespaces or Python attributes never resolve.
    for name in ("builtins.eval.default", "os.system.default", "aten.__class__.default",
                 "aten.empty.__init__", "aten.empty", "aten..default", "torch.ops.aten.empty.default"):
        def edit(doc, name=name):
            doc["ops"][0] = name
        with pytest.raises(initrecipe.RecipeFormatError, match=r"^(ops\[0\]|program\[1\]): .*operator"):
            initrecipe.replay(edited(base, edit))


def test_a_flipped_byte(base):
    # A flip inside a float argument changes nothing structural: the hash says the file is corrupt.
    pos = base.index(msgpack.packb(-0.5773502691896257)) + 5
    damaged = base[:pos] + bytes([base[pos] ^ 0x10]) + base[pos + 1:]
    raises(
        initrecipe.RecipeIntegrityError,
        "the recipe's content hash does not match its content: the file is corrupt or was edited. "
        "Download or copy it again",
        initrecipe.load, damaged,
    )
    # Every single-byte flip anywhere is reported as corruption, never as a strange instruction.
    for pos in range(len(base)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            damaged = base[:pos] + bytes([base[pos] ^ mask]) + base[pos + 1:]
            with pytest.raises(initrecipe.RecipeFormatError) as info:
                initrecipe.load(damaged)
            text = str(info.value)
            assert "corrupt" in text or "truncated" in text, (pos, mask, text)


def test_a_directory_path(tmp_path):
    raises(initrecipe.RecipeError, f"`{tmp_path}` is a directory, not a recipe file", initrecipe.load, tmp_path)
    raises(initrecipe.RecipeError, f"`{tmp_path}` is a directory, not a recipe file", initrecipe.replay, str(tmp_path))


def test_a_missing_file(tmp_path):
    path = tmp_path / "nope.recipe"
    raises(initrecipe.RecipeError, f"recipe file `{path}` does not exist", initrecipe.load, path)
    raises(initrecipe.RecipeError, f"recipe file `{path}` does not exist", initrecipe.replay, path)


# --------------------------------------------------------------------------- other kinds of files
@pytest.mark.parametrize(
    "data, message",
    [
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
         "this is an HTML or XML page (an error page saved instead of the download?), not an init recipe"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 3100\n",
         "this is a Git LFS pointer, not the file it points to (run `git lfs pull`), not an init recipe"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "this is a gzip-compressed file (decompress it first), not an init recipe"),
        (b"GGUF\x03\x00\x00\x00", "this is a GGUF file (weights, not a recipe), not an init recipe"),
        (msgpack.packb([1, 2, 3]), "this is a msgpack list, not an init recipe (expected a msgpack map)"),
        (msgpack.packb({"a": 1}), "format: expected `initrecipe`, found None; this msgpack file is not an init recipe"),
        (b"\x91" * 100_000, "the recipe nests values thousands of levels deep: the file is corrupt or hostile"),
        (b"\xdd\xff\xff\xff\xff", "the recipe declares an oversized value"),
    ],
)
def test_other_files_are_named(data, message):
    raises(initrecipe.RecipeFormatError, message, initrecipe.load, data)


def test_a_device_file_is_refused_without_reading_it():
    start = time.perf_counter()
    raises(initrecipe.RecipeError, "`/dev/zero` is not a regular file (a device, FIFO or socket), not a recipe file",
           initrecipe.load, "/dev/zero")
    assert time.perf_counter() - start < 1


def test_a_huge_file_is_named_from_its_first_bytes(tmp_path):
    # Sparse files: 5 GiB on paper, nothing on disk; neither is read in full.
    zipped = tmp_path / "pytorch_model.bin"
    with open(zipped, "wb") as handle:
        handle.write(b"PK\x03\x04" + b"\x00" * 60)
        handle.truncate(5 << 30)
    start = time.perf_counter()
    raises(initrecipe.RecipeFormatError, "this is a zip archive (a `torch.save` checkpoint?), not an init recipe",
           initrecipe.load, zipped)
    other = tmp_path / "big.recipe"
    with open(other, "wb") as handle:
        handle.write(b"\x8a\xa6format")
        handle.truncate(5 << 30)
    raises(initrecipe.RecipeFormatError, f"`{other}` holds {5 << 30} bytes, more than the {4 << 30} a recipe may: "
           "it is not a recipe", initrecipe.load, other)
    assert time.perf_counter() - start < 1


def test_a_text_mode_file_object(tmp_path, base):
    path = tmp_path / "m.recipe"
    path.write_bytes(base)
    with open(path) as handle, pytest.raises(initrecipe.RecipeError, match="must be opened in binary mode"):
        initrecipe.load(handle)


# --------------------------------------------------------------------------- envelope and integrity
def test_damaged_field_names_are_reported_as_corruption(base):
    data = base.replace(b"\xa6format", b"\xa6formaT", 1)
    raises(initrecipe.RecipeFormatError, "format: expected `initrecipe`, found None: the file looks like a damaged "
           "recipe (it is corrupt); download or copy it again", initrecipe.load, data)
    data = base.replace(b"\xa7program", b"\xa7progrAm", 1)
    raises(initrecipe.RecipeFormatError, "unknown top-level field 'progrAm' for format 1.0: the file is corrupt",
           initrecipe.load, data)


def test_missing_and_extra_fields(base):
    raises(initrecipe.RecipeFormatError, "missing required field `tensors`: the recipe is incomplete or corrupt",
           initrecipe.load, edited(base, lambda d: d.pop("tensors")))
    raises(initrecipe.RecipeFormatError, "unknown top-level field 'extra' for format 1.0",
           initrecipe.load, edited(base, lambda d: d.__setitem__("extra", 1)))
    doc = doc_of(base)
    del doc["hash"]
    raises(initrecipe.RecipeFormatError, "hash: missing or not a string; the recipe is incomplete or corrupt",
           initrecipe.load, pack(doc, rehash=False))


def test_verify_hash_false_reads_a_damaged_file_for_inspection(base):
    pos = base.index(msgpack.packb(-0.5773502691896257)) + 5
    damaged = base[:pos] + bytes([base[pos] ^ 0x10]) + base[pos + 1:]
    assert initrecipe.load(damaged, verify_hash=False).names == ["weight", "bias"]


def test_the_content_hash_is_independent_of_initrecipe(base):
    doc = doc_of(base)
    assert doc["hash"] == content_hash(doc) == envelope.compute_hash(doc)


# --------------------------------------------------------------------------- structure
def _set(path, value):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        # references: to a value never defined, and to one defined later (a cycle in program order)
        (_set(("program", 2, 3, 0, "t"), 99),
         "program[2].args[0].t: reference to undefined tensor 99 (a value must be defined by an earlier instruction)"),
        (_set(("program", 2, 3, 0, "t"), 4),
         "program[2].args[0].t: reference to undefined tensor 4 (a value must be defined by an earlier instruction)"),
        (_set(("program", 2, 3, 0, "t"), 1),  # the instruction reads its own output
         "program[2].args[0].t: reference to undefined tensor 1"),
        (_set(("program", 5, 2), [1]),
         "program[5].outs[0]: value 1 is defined twice (first by program[2]); values are defined once"),
        (_set(("tensors", 0, 1), 77), "tensors[0] (`weight`).value: value 77 is never defined by the program"),
        # instructions
        (_set(("program", 3), []), "program[3]: empty instruction"),
        (_set(("program", 3), [9, 1]), "program[3][0]: unknown instruction code 9"),
        (_set(("program", 3), [0, 1, [2]]), "program[3]: instruction code 0 takes 5 or 6 fields, found 3"),
        (_set(("program", 3, 1), 7), "program[3][1]: integer 7 out of range [0, 2]"),
        (_set(("program", 3, 3), "x"), "program[3].args: expected a list of arguments, found string"),
        (_set(("program", 1, 4, "device"), {"device": "file:///etc/passwd"}),
         "program[1].kwargs.device: unknown device 'file:///etc/passwd'"),
        (_set(("program", 1, 4, "dtype"), {"dtype": "object"}), "program[1].kwargs.dtype: unknown dtype 'object'"),
        (_set(("program", 1, 4, "dtype"), {"pickle": "cos\nsystem\n"}), "program[1].kwargs.dtype: unknown tag 'pickle'"),
        (_set(("program", 1, 3, 0), [[[[[[[[[[2]]]]]]]]]]), "arguments nested deeper than 8 levels"),
        (_set(("program", 1, 3, 0), "x" * 70_000), "program[1].args[0]: a string of 70000 characters (at most 65536)"),
        # generators
        (_set(("generators",), 0), "program[0].gen: generator 0 is not declared (the recipe declares 0)"),
        (_set(("generators",), 10**6), "generators: integer 1000000 out of range [0, 4096]"),
        (_set(("program", 7, 4, "generator"), {"g": 3}),
         "program[7].kwargs.generator.g: generator 3 is not declared (the recipe declares 1)"),
        (_set(("program", 0), [3, 0, b"\x00" * 100]),
         "program[0].state: 100 bytes, but a torch CPU generator state has 5056"),
        (_set(("program", 0), [2, 0, -1]), "program[0].seed: integer -1 out of range [0, 18446744073709551615]"),
        (_set(("program", 3), [4, 0, 5]), "program[3].after: integer 5 out of range [0, 2]"),
        # tensor entries
        (_set(("tensors", 1, 0), "weight"), "tensors[1].name: `weight` is listed twice (also tensors[0])"),
        (_set(("tensors", 1, 0), ""), "tensors[1].name: empty tensor name"),
        (_set(("tensors", 0, 6), False), "tensors[0] (`weight`).persistent: a parameter is always persistent"),
        (_set(("tensors", 0, 2), "weights"), "tensors[0] (`weight`).kind: expected `parameter` or `buffer`, found 'weights'"),
        (_set(("tensors", 0, 3), [2, -3]), "tensors[0] (`weight`).shape[1]: integer -3 out of range"),
        (_set(("tensors", 0, 3), [2**62, 2**62]), "more than any machine can address"),
        (_set(("tensors", 0, 3), [1] * 65), "tensors[0] (`weight`).shape: 65 dimensions (at most 64)"),
        (_set(("tensors", 0, 5), 1), "tensors[0] (`weight`).requires_grad: expected a bool, found integer"),
        (_set(("tensors", 1), ["bias", 2, "buffer", [2, 3], "float32", False, True]),
         "tensors[1] (`bias`).kind: tied to `weight` (both are value 2), which has kind parameter, but this entry has buffer"),
        (_set(("tensors", 1), ["bias", 2, "parameter", [2, 3], "float32", False, True]),
         "tensors[1] (`bias`).requires_grad: tied to `weight` (both are value 2), which has requires_grad True"),
        (_set(("tensors", 0, 4), "int64"),
         "tensors[0] (`weight`).requires_grad: a int64 parameter cannot require gradients"),
        (_set(("tensors", 1), ["bias", 5, "buffer", [2], "float32", True, True]),
         "tensors[1] (`bias`).requires_grad: a buffer never requires gradients"),
        (lambda d: d["ops"].append("aten.empty.memory_format"),
         "ops[3]: `aten.empty.memory_format` is listed twice (also ops[0])"),
        (_set(("rng",), "mersenne"), "rng: expected one of ['torch', 'portable'], found 'mersenne'"),
        (_set(("rng",), "portable"), "rng: `portable` recipes are format 1.1 or newer, but this file says 1.0: the file is corrupt"),
        (_set(("producer",), {"initrecipe": 1}), "producer.initrecipe: expected a string, found integer"),
    ],
)
def test_structure_errors_name_their_location(base, edit, message):
    bad = edited(base, edit)
    raises(initrecipe.RecipeFormatError, message, initrecipe.load, bad)
    findings = check(bad, max_bytes=MiB)
    assert len(findings) == 1 and message in findings[0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(("tensors", 0, 3), [3, 2]),
         "tensors[0] (`weight`): declared [3, 2] torch.float32, but the program builds [2, 3] torch.float32"),
        (_set(("program", 1, 1), 1), "program[1].kwargs.device: `aten.detach.default` has no argument `device`"),
        (_set(("program", 1, 4, "memory_format"), -1), "program[1].kwargs.memory_format: `aten.empty.memory_format` "
         "expects a MemoryFormat for `memory_format`, found int -1"),
        (_set(("program", 1, 4, "dtype"), 1000),
         "program[1].kwargs.dtype: `aten.empty.memory_format` expects a ScalarType for `dtype`, found int 1000"),
        (_set(("program", 1, 4, "layout"), "strided"),
         "program[1].kwargs.layout: `aten.empty.memory_format` expects a Layout for `layout`, found str 'strided'"),
        (_set(("program", 1, 3, 0), [2, "x"]), "program[1]: `aten.empty.memory_format` rejects its arguments"),
        (_set(("program", 1, 3, 0), [2, -3]), "program[1]: `aten.empty.memory_format` rejects its arguments: "
         "Trying to create tensor with negative dimension -3: [2, -3]"),
        (lambda d: d["program"].insert(7, [4, 0, 2]), "program[7].after: instruction 2 does not position generator 0"),
        (_set(("program", 7, 4, "from"), "x"), "program[7]: `aten.uniform_.default` rejects its arguments"),
    ],
)
def test_program_errors_name_the_instruction(base, edit, message):
    bad = edited(base, edit)
    raises(initrecipe.RecipeFormatError, message, initrecipe.replay, bad, max_bytes=MiB)
    findings = check(bad, max_bytes=MiB)
    assert len(findings) == 1 and message in findings[0]


def test_views_must_lie_inside_their_storage():
    # `_reshape_alias` does not check bounds on any device: a view past its storage would read
    # (or write) memory that is not the tensor's.
    bad = hand_recipe(
        [Call("aten.empty.memory_format", (0,), ([4],), {}),
         Call("aten._reshape_alias.default", (1,), (Ref(0), [1000], [1]), {})],
        [TensorEntry("w", 1, "buffer", (1000,), torch.float32, False, True)],
    )
    message = ("program[1]: `aten._reshape_alias.default` makes view 1 (shape [1000], stride [1], offset 0) reach "
               "byte 4000 of a storage of 16 bytes: views must lie inside their base's storage")
    raises(initrecipe.RecipeFormatError, message, initrecipe.replay, bad)
    assert check(bad) == [message]
    bad = hand_recipe(
        [Call("aten.empty.memory_format", (0,), ([4],), {}),
         Call("aten.as_strided.default", (1,), (Ref(0), [2], [1], 3), {})],
        [TensorEntry("w", 1, "buffer", (2,), torch.float32, False, True)],
    )
    raises(initrecipe.RecipeFormatError, "program[1]: `aten.as_strided.default` asks for a view (size [2], stride [1], "
           "offset 3) reaching byte 20 of a storage of 16 bytes", initrecipe.replay, bad)
    # A view that fits is fine, overlapping (stride 0) included.
    ok = hand_recipe(
        [Call("aten.zeros.default", (0,), ([4],), {}),
         Call("aten.as_strided.default", (1,), (Ref(0), [3, 4], [0, 1]), {})],
        [TensorEntry("w", 1, "buffer", (3, 4), torch.float32, False, True)],
    )
    assert initrecipe.replay(ok)["w"].stride() == (0, 1)


def test_a_factory_without_a_device_is_checked_on_meta():
    # Without a device argument `aten.zeros` allocates on the CPU: the checks must not.
    bad = hand_recipe(
        [Call("aten.zeros.default", (0,), ([2**40],), {})],
        [TensorEntry("z", 0, "buffer", (2**40,), torch.float32, False, True)],
    )
    start = time.perf_counter()
    raises(initrecipe.ResourceLimitError, "program[0]: `aten.zeros.default` asks for 1099511627776 elements "
           "(at least 1.0 TiB) for tensor `z`",
           initrecipe.replay, bad, max_bytes=MiB)
    assert "`z`" in check(bad, max_bytes=MiB)[0]
    assert time.perf_counter() - start < 1


def _one_call(op, args, kwargs=None, shape=(1,), dtype=torch.float32, setup=None, generators=1):
    program = setup or [Call("aten.zeros.default", (0,), ([2, 3],), {})]
    out = max(v for ins in program for v in getattr(ins, "outs", ()) if v is not None) + 1
    return hand_recipe(program + [Call(op, (out,), args, kwargs or {})],
                       [TensorEntry("t", out, "buffer", shape, dtype, False, True)], generators)


@pytest.mark.parametrize(
    "op, args, kwargs, message",
    [
        # TorchScript list and scalar overloads of allowlisted names: `mul.left_t([..], n)` would
        # build a list of any length in C++.
        ("aten.mul.left_t", ([1, 2], 10**12), {},
         "program[1]: `aten.mul.left_t` does not return tensors; recipes call only tensor operators"),
        ("aten.add.t", ([1], [2]), {}, "program[1]: `aten.add.t` does not return tensors"),
        ("aten.sum.int", ([1, 2],), {}, "program[1]: `aten.sum.int` does not return tensors"),
        # An integer where torch expects an enum reaches C++ unchecked.
        ("aten.randint_like.default", (Ref(0), 5), {"memory_format": -1},
         "program[1].kwargs.memory_format: `aten.randint_like.default` expects a MemoryFormat for `memory_format`, "
         "found int -1"),
        ("aten.view.dtype", (Ref(0), 99), {},
         "program[1].args[1]: `aten.view.dtype` expects a ScalarType for `dtype`, found int 99"),
        ("aten.add.Tensor", (Ref(0), GenRef(0)), {},
         "program[1].args[1]: `aten.add.Tensor` expects a Tensor for `other`, found GenRef"),
        ("aten.add.Tensor", (Ref(0), Ref(0), 1, 2), {},
         "program[1]: `aten.add.Tensor` takes at most 3 arguments, the recipe passes 4"),
        # Kernels that trust their arguments: refused before they run.
        # Random operators draw only from a generator the recipe names, never the process-wide one.
        ("aten.randn.default", ([2],), {}, "program[1]: `aten.randn.default` draws from the process-wide "
         "generator; recipes use the overload that takes a `generator` argument"),
        ("aten.normal_.default", (Ref(0),), {}, "program[1]: `aten.normal_.default` is a random operator and needs "
         "its `generator` argument (a {\"g\": id} value naming the generator it draws from)"),
        ("aten.round.decimals", (Ref(0),), {"decimals": -(2**63)},
         "program[1]: `aten.round.decimals` rejects its arguments: decimals=-9223372036854775808 is out of range"),
        ("aten.random_.from", (Ref(0), 2**63 - 1, None), {"generator": GenRef(0)},
         "program[1]: `aten.random_.from` rejects its arguments: 9223372036854775807 is outside the integers "
         "torch.float32 represents exactly (|n| <= 16777216)"),
        ("aten._weight_norm_interface.default", (Ref(0), Ref(0)), {},
         "program[1]: `aten._weight_norm_interface.default` rejects its arguments: `g` must have one element per "
         "slice of a non-empty `v` along dim 0 (v [2, 3], g [2, 3])"),
    ],
)
def test_operators_are_called_only_as_tensor_operators_with_arguments_of_their_kind(op, args, kwargs, message):
    bad = _one_call(op, args, kwargs)
    raises(initrecipe.RecipeFormatError, message, initrecipe.replay, bad, max_bytes=MiB)


@pytest.mark.parametrize("op, args", [
    ("aten.chunk.default", (Ref(0), 2**31)),
    ("aten.unbind.int", (Ref(0),)),
    ("aten.split.Tensor", (Ref(0), 1)),
])
def test_zero_byte_tensors_cannot_split_into_billions(op, args):
    # A [2**40, 0] tensor holds no bytes, yet unbinding it would make 2**40 tensors, even on meta.
    bad = _one_call(op, args, setup=[Call("aten.empty.memory_format", (0,), ([2**40, 0],), {})])
    start = time.perf_counter()
    with pytest.raises(initrecipe.RecipeFormatError, match=r"^program\[1\]: `.*` returns \d+ values, the program binds 1$"):
        initrecipe.replay(bad, max_bytes=MiB)
    assert time.perf_counter() - start < 1


def test_literals_are_checked():
    def literal_doc(shape, data, dtype="float32"):
        r = hand_recipe([Literal(0, torch.float32, (2,), b"\x00" * 8)],
                        [TensorEntry("c", 0, "buffer", (2,), torch.float32, False, True)])
        doc = doc_of(r)
        doc["program"][0] = [1, 0, dtype, shape, data]
        return pack(doc)

    raises(initrecipe.RecipeFormatError, "program[0].data: 7 bytes, but shape [2] of float32 needs 8",
           initrecipe.load, literal_doc([2], b"\x00" * 7))
    raises(initrecipe.RecipeFormatError, "program[0].data: a bool literal holds bytes other than 0 and 1",
           initrecipe.load, literal_doc([2], b"\x00\x07", "bool"))
    raises(initrecipe.RecipeFormatError, "program[0].data: expected bytes, found string",
           initrecipe.load, literal_doc([2], "x" * 8))


# --------------------------------------------------------------------------- resources
def test_a_recipe_promising_1e15_elements_fails_fast_naming_the_tensor():
    huge = hand_recipe(
        [Call("aten.empty.memory_format", (0,), ([10**15],), {"dtype": torch.float32}),
         Call("aten.detach.default", (1,), (Ref(0),), {}),
         Call("aten.normal_.default", (None,), (Ref(1),), {"generator": GenRef(0)})],
        [TensorEntry("huge.weight", 1, "parameter", (10**15,), torch.float32, True, True)],
        generators=1,
    )
    assert len(huge) < 1024
    start = time.perf_counter()
    err = raises(initrecipe.ResourceLimitError,
                 "program[0]: `aten.empty.memory_format` asks for 1000000000000000 elements (3.6 PiB) for tensor "
                 "`huge.weight`; replaying this recipe needs at least 3.6 PiB, more than the limit of",
                 initrecipe.replay, huge)
    assert "the memory available now" in str(err)
    assert isinstance(err, MemoryError) and isinstance(err, initrecipe.RecipeError)
    assert time.perf_counter() - start < 0.5
    # The same with an explicit limit, for a partial replay, and from `check`.
    raises(initrecipe.ResourceLimitError, "more than the limit of 64.0 MiB (max_bytes=67108864)",
           initrecipe.replay, huge, max_bytes=64 * MiB)
    raises(initrecipe.ResourceLimitError, "the largest is `huge.weight` (3.6 PiB, built by program[0])",
           initrecipe.replay, huge, names=["huge.weight"], max_bytes=64 * MiB)
    assert "`huge.weight`" in check(huge, max_bytes=64 * MiB)[0]
    with pytest.raises(initrecipe.ResourceLimitError):
        list(initrecipe.iter_replay(huge))


def test_max_bytes_overrides_the_default_limit(monkeypatch):
    recipe = initrecipe.record(lambda: nn.Linear(64, 64), seed=0)
    need = 64 * 64 * 4 + 64 * 4
    raises(initrecipe.ResourceLimitError, "program[4]: `aten.empty.memory_format` would allocate 256 bytes "
           "for tensor `bias`; replaying this recipe needs at least 16.2 KiB, more than the limit of 16.2 KiB "
           "(max_bytes=16639)", initrecipe.replay, recipe, max_bytes=need - 1)
    raises(initrecipe.ResourceLimitError, "program[1]: `aten.empty.memory_format` asks for 4096 elements (at least 4.0 KiB) "
           "for tensor `weight`", initrecipe.replay, recipe, max_bytes=1000)
    weights = initrecipe.replay(recipe, max_bytes=need)
    torch.manual_seed(0)
    assert torch.equal(weights["weight"], nn.Linear(64, 64).weight)
    # A partial replay skips the weight's draw (the generator is positioned by arithmetic) and
    # needs only the bias's memory.
    bias = initrecipe.replay(recipe, names=["bias"], max_bytes=64 * 4)["bias"]
    assert torch.equal(bias, weights["bias"])
    # Without the jump-ahead it draws the weight's numbers on scratch memory, which counts too.
    monkeypatch.setattr(initrecipe.rng.torch.generator_state, "available", lambda: False)
    assert torch.equal(initrecipe.replay(recipe, names=["bias"], max_bytes=need)["bias"], weights["bias"])
    raises(initrecipe.ResourceLimitError, "replaying this recipe needs 16.2 KiB, more than the limit of 256 bytes; "
           "the largest is scratch memory for program[7], a random draw into `weight` that this replay needs only "
           "to advance the generator (16.0 KiB) (max_bytes=256)",
           initrecipe.replay, recipe, names=["bias"], max_bytes=64 * 4)
    assert check(recipe, max_bytes=need) == []
    assert check(recipe, max_bytes=need - 1) != []
    with pytest.raises(TypeError):
        initrecipe.replay(recipe, max_bytes=-1)


def test_sizes_beyond_int64_are_a_resource_error():
    bad = hand_recipe(
        [Call("aten.empty.memory_format", (0,), ([2**40, 2**40],), {})],
        [TensorEntry("e", 0, "buffer", (1,), torch.float32, False, True)],
    )
    raises(initrecipe.ResourceLimitError, "program[0]: `aten.empty.memory_format` asks for "
           "1208925819614629174706176 elements (at least 1.0 YiB) for tensor `e`", initrecipe.replay, bad)


def test_resize_growth_counts_toward_the_limit():
    bad = hand_recipe(
        [Call("aten.empty.memory_format", (0,), ([0],), {}),
         Call("aten.resize_.default", (1,), (Ref(0), [10**12]), {})],
        [TensorEntry("r", 1, "buffer", (10**12,), torch.float32, False, True)],
    )
    raises(initrecipe.ResourceLimitError, "program[1]: `aten.resize_.default` would allocate 3.6 TiB for tensor `r`",
           initrecipe.replay, bad, max_bytes=64 * MiB)


def test_a_few_bytes_stretched_to_a_trillion_elements_is_refused_as_hours_of_work():
    # In bounds and in no memory: a stride-0 view of one float, 10**12 elements long, then filled.
    bomb = hand_recipe(
        [Call("aten.zeros.default", (0,), ([1],), {}),
         Call("aten.as_strided.default", (1,), (Ref(0), [10**6, 10**6], [0, 0]), {}),
         Call("aten.fill_.Scalar", (None,), (Ref(1), 1.0), {})],
        [TensorEntry("z", 0, "buffer", (1,), torch.float32, False, True)],
    )
    start = time.perf_counter()
    err = raises(WorkLimitError,
                 "replaying this recipe is estimated at 33.3 min of work on the reference CPU (it runs 3 of its 3 "
                 "instructions; 3.6 TiB of memory traffic), more than the default budget of 60 s (60 s, plus 0.1 µs "
                 "for the 1 element it returns); the costliest instruction is program[2], `aten.fill_.Scalar` "
                 "(33.3 min). Pass a larger `max_work` (seconds; CLI: --max-work) to replay it anyway",
                 initrecipe.replay, bomb)
    assert isinstance(err, initrecipe.ResourceLimitError)
    assert "estimated at 33.3 min of work" in check(bomb)[0]
    assert time.perf_counter() - start < 1


def test_data_dependent_outputs_are_bounded_at_replay():
    recipe = initrecipe.record(
        lambda: _Buffers(r=torch.repeat_interleave(torch.tensor([1, 2, 3]))), seed=0
    )
    assert torch.equal(initrecipe.replay(recipe)["r"], torch.tensor([0, 1, 1, 2, 2, 2]))

    def grow(doc):  # the repeats literal now asks for 2**40 elements; the recorded shape says 6
        ins = next(i for i in doc["program"] if i[0] == 1)
        ins[4] = (2**40).to_bytes(8, "little") * 3

    bad = edited(recipe.to_bytes(), grow)
    start = time.perf_counter()
    with pytest.raises(initrecipe.ReplayError, match="repeat_interleave"):
        initrecipe.replay(bad, max_bytes=64 * MiB)
    assert time.perf_counter() - start < 1


class _Buffers(nn.Module):
    def __init__(self, **tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)


# --------------------------------------------------------------------------- no code execution
PACKAGE = Path(initrecipe.__file__).parent
FORBIDDEN = [
    r"\beval\s*\(", r"\bexec\s*\(", r"\b__import__\s*\(", r"(?<![.\w])compile\s*\(", r"\bimport\s+pickle",
    r"\bfrom\s+pickle\b", r"\bpickle\.", r"\bmarshal\b", r"\bshelve\b", r"\btorch\.load\s*\(", r"\bimportlib\b",
    r"\bpydoc\.locate", r"\bsubprocess\b", r"\bos\.system\b",
]


def test_the_package_has_no_way_to_run_code_from_a_file():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for pattern in FORBIDDEN:
                if re.search(pattern, line):
                    # The CLI imports the user's own constructor named on its command line.
                    if path.name == "cli.py" and "importlib" in pattern:
                        continue
                    offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert offenders == []


def test_only_the_allowlist_resolves_names_read_from_a_file():
    # On the path from a file to tensors (every module of the format, program, analysis and runtime
    # stages), `getattr` appears only in the operator registry's lookup, after the allowlist check.
    lookup = PACKAGE / "program" / "operators" / "__init__.py"
    replay_path = [p for stage in ("format", "program", "analysis", "runtime") for p in (PACKAGE / stage).rglob("*.py")
                   if p != lookup]
    replay_path += [PACKAGE / "errors.py", PACKAGE / "inspect" / "check.py", PACKAGE / "capture" / "generators.py"]
    assert len(replay_path) > 30
    for path in replay_path:
        text = path.read_text()
        assert "getattr(" not in text and "__dict__" not in text and "globals()" not in text, path
    ops_src = lookup.read_text()
    check_at = ops_src.index("packet not in ALLOWED_OPERATORS")
    assert all(m.start() > check_at for m in re.finditer(r"getattr\(torch\.ops\.aten, packet, None\)", ops_src))


# --------------------------------------------------------------------------- check and the CLI
def test_check_finds_nothing_in_valid_recipes(base, tmp_path):
    assert check(base) == []
    assert check(linear_recipe()) == []
    path = tmp_path / "m.recipe"
    path.write_bytes(base)
    assert check(path) == [] and check(str(path)) == []


def test_check_reports_a_rejected_generator_state(base):
    def edit(doc):
        doc["program"][0] = [3, 0, b"\xff" * 5056]

    findings = check(edited(base, edit), max_bytes=MiB)
    assert findings and findings[0].startswith("program[0].state: torch rejects this generator state")


def test_cli_check(tmp_path, base, capsys):
    good = tmp_path / "good.recipe"
    good.write_bytes(base)
    bad = tmp_path / "bad.recipe"
    bad.write_bytes(edited(base, _set(("program", 2, 3, 0, "t"), 99)))
    assert cli_main(["check", str(good)]) == 0
    assert re.fullmatch(re.escape(f"{good}: ok (replay estimated at ") + r"\d+(\.\d+)? µs" + re.escape(
        " of work (it runs 9 of its 9 instructions; 32 bytes of memory traffic), budget 60 s)\n"),
        capsys.readouterr().out)
    assert cli_main(["check", str(bad)]) == 1
    assert capsys.readouterr().out == (
        f"{bad}: program[2].args[0].t: reference to undefined tensor 99 "
        "(a value must be defined by an earlier instruction)\n"
    )
    assert cli_main(["check", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["findings"][0].startswith("program[2].args[0].t: reference")
    assert cli_main(["check", str(good), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    work = doc.pop("work")
    assert doc == {"recipe": str(good), "valid": True, "findings": [], "warnings": []}
    assert work["instructions"] == work["checked_instructions"] == 9 and work["bytes"] == 32
    assert 0 < work["seconds"] < 0.01 and work["budget_seconds"] == pytest.approx(60 + 8e-7)
    assert cli_main(["check", str(tmp_path / "missing.recipe")]) == 1
    assert "does not exist" in capsys.readouterr().out
    assert cli_main(["check", str(good), "--max-bytes", "10"]) == 1
    assert "max_bytes=10" in capsys.readouterr().out

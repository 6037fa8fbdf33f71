"""schema/recipe.schema.json and schema/FORMAT.md against what initrecipe writes and reads.

* recipes recorded from small models validate against the JSON Schema;
* mutated documents (missing field, wrong code, wrong tag, ...) are rejected by the schema and,
  where the format says a reader must refuse them, by ``initrecipe.load`` too;
* the schema, the spec and the implementation name the same operators, dtypes and enums;
* the stand-alone reference reader reads what initrecipe writes;
* format 1.1: rng="portable" recipes (stream keys, a required seed) validate, round-trip and are
  read by the reference reader, and malformed ones are rejected by the schema and the loader.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import initrecipe
from initrecipe.program.operators import ALLOWED_OPERATORS
from initrecipe.program.operators import DRAW_OPERATORS, SUBSTITUTED_OPERATORS
from initrecipe.program.ir import DTYPES, Call, GenRef, Literal, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.format.recipe import Recipe, TensorEntry, encode_for_schema
from initrecipe.format.spec import RNG_MODES

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema" / "recipe.schema.json"
PACKAGED_SCHEMA_PATH = ROOT / "initrecipe" / "schema" / "recipe.schema.json"
FORMAT_MD = ROOT / "schema" / "FORMAT.md"
READER = ROOT / "schema" / "reference_reader.py"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BODY_KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")


def schema_errors(doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in VALIDATOR.iter_errors(doc)]


def assert_schema_valid(doc: Any) -> None:
    errors = schema_errors(doc)
    assert not errors, "\n".join(errors[:10])


def json_form(value: Any) -> Any:
    """A decoded msgpack document in the JSON form of FORMAT.md section 14 (as encode_for_schema)."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list):
        return [json_form(v) for v in value]
    if isinstance(value, dict):
        return {k: json_form(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def repack(doc: dict[str, Any]) -> bytes:
    """Encode a (mutated) document as a file, with a correct content hash for what is left of it."""
    body = {k: v for k, v in doc.items() if k != "hash"}
    out = dict(body)
    out["hash"] = "sha256:" + hashlib.sha256(msgpack.packb(body, use_bin_type=True)).hexdigest()
    return msgpack.packb(out, use_bin_type=True)


def decoded(recipe: Recipe) -> dict[str, Any]:
    return msgpack.unpackb(recipe.to_bytes(), raw=False)


# --------------------------------------------------------------------------- models
def linear() -> torch.nn.Module:
    return torch.nn.Linear(5, 3)


def embedding_with_padding() -> torch.nn.Module:
    return torch.nn.Embedding(10, 4, padding_idx=0)


class TruncNormalTied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(12, 6)
        self.head = torch.nn.Linear(6, 12, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.pos = torch.nn.Parameter(torch.empty(4, 6))
        torch.nn.init.trunc_normal_(self.pos, std=0.02)


class Buffers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)
        self.register_buffer("position_ids", torch.arange(7), persistent=False)  # int64, non-persistent
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))  # 0-d int64
        self.register_buffer("empty", torch.empty(0, 3))
        self.register_buffer("mask", torch.ones(3, dtype=torch.bool))
        self.register_buffer("constant", torch.tensor([1.5, float("inf"), -0.0]))  # a LITERAL


_OTHER_STATE = torch.Generator().manual_seed(11)
torch.randn(5, generator=_OTHER_STATE)
OTHER_STATE = _OTHER_STATE.get_state()  # a state no manual_seed gives: recorded as RNG_SET_STATE


class Generators(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.a = torch.nn.Parameter(torch.randn(3, generator=gen))
        with torch.random.fork_rng():  # recorded as RNG_RESTORE
            self.b = torch.nn.Parameter(torch.randn(3))
        self.c = torch.nn.Parameter(torch.randn(3))
        gen.set_state(OTHER_STATE)
        self.d = torch.nn.Parameter(torch.rand(2, 2, generator=gen))


class DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        scores = torch.randn(6)
        self.register_buffer("keep", torch.nonzero(scores > 0))  # out_meta
        self.register_buffer("z", torch.full((2,), complex(1.0, float("-inf")), dtype=torch.complex64))
        self.register_buffer("low", torch.full((2,), float("-inf")))


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "linear": linear,
    "embedding_padding_idx": embedding_with_padding,
    "trunc_normal_tied": TruncNormalTied,
    "buffers": Buffers,
    "generators": Generators,
    "data_dependent": DataDependent,
}


@pytest.fixture(scope="module")
def recorded() -> dict[str, Recipe]:
    return {name: initrecipe.record(fn, seed=0) for name, fn in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_recorded_recipe_is_schema_valid(recorded: dict[str, Recipe], name: str) -> None:
    assert_schema_valid(encode_for_schema(recorded[name]))


@pytest.mark.parametrize("name", list(MODELS))
def test_recorded_recipe_round_trips(recorded: dict[str, Recipe], name: str, tmp_path: Path) -> None:
    recipe = recorded[name]
    data = recipe.to_bytes()
    assert data[0] == 0x8A  # FORMAT.md section 1: a fixmap of 10 entries
    doc = msgpack.unpackb(data, raw=False)
    assert list(doc) == [*BODY_KEYS, "hash"]
    path = recipe.save(tmp_path / f"{name}.recipe")
    again = initrecipe.load(path)
    assert again.to_bytes() == data
    assert again.content_hash == recipe.content_hash == doc["hash"]
    assert encode_for_schema(again) == encode_for_schema(recipe)


def test_models_cover_the_format(recorded: dict[str, Recipe]) -> None:
    """The recorded models exercise every instruction code and the interesting table features."""
    docs = {name: encode_for_schema(r) for name, r in recorded.items()}
    codes = {ins[0] for doc in docs.values() for ins in doc["program"]}
    assert codes == {0, 1, 2, 3, 4}
    assert any(len(ins) == 6 for ins in docs["data_dependent"]["program"])  # out_meta
    assert recorded["trunc_normal_tied"].tie_groups == [["embed.weight", "head.weight"]]
    entries = recorded["buffers"].entries
    assert entries["position_ids"].persistent is False and entries["position_ids"].dtype == torch.int64
    assert entries["num_batches_tracked"].shape == () and entries["empty"].numel == 0
    text = json.dumps(docs["data_dependent"])
    assert '{"float": "-inf"}' in text and '"complex"' in text


@pytest.mark.parametrize("name", list(MODELS))
def test_recorded_recipe_replays_like_eager(recorded: dict[str, Recipe], name: str) -> None:
    """The spec's claim for rng mode `torch`: replay is eager CPU initialization, bit for bit."""
    weights = initrecipe.replay(initrecipe.load(recorded[name].to_bytes()))
    torch.manual_seed(0)
    module = MODELS[name]()
    eager = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers(remove_duplicate=False))
    assert list(weights) == list(eager)
    for key, tensor in eager.items():
        assert torch.equal(weights[key], tensor), key


# --------------------------------------------------------------------------- a hand-written recipe
_STATE = torch.Generator().manual_seed(3)
torch.randn(7, generator=_STATE)
HAND_STATE = bytes(_STATE.get_state().numpy())


def hand_written() -> Recipe:
    """A recipe built instruction by instruction, touching every code, tag and table feature."""
    cpu, f32 = torch.device("cpu"), torch.float32
    program = [
        RngSeed(0, 0),
        RngSetState(1, HAND_STATE),
        Call("aten.empty.memory_format", (0,), ([2, 3],), {
            "dtype": f32, "layout": torch.strided, "device": cpu, "pin_memory": False,
            "memory_format": torch.contiguous_format}),
        Call("aten.normal_.default", (None,), (Ref(0), 0.0, 1.0), {"generator": GenRef(1)}),
        RngRestore(1, 1),  # generator 1 as right after instruction 1: the same draws again
        Call("aten.randn.generator", (1,), ([2, 3],), {"generator": GenRef(1), "dtype": f32, "device": cpu}),
        Literal(2, f32, (3,), struct.pack("<3f", 1.5, float("inf"), -0.0)),
        Call("aten.full.default", (3,), ([2], complex(1.0, float("-inf"))), {"dtype": torch.complex64, "device": cpu}),
        Call("aten.gt.Scalar", (4,), (Ref(2), 0.0), {}),
        Call("aten.nonzero.default", (5,), (Ref(4),), {}, ((torch.int64, (2, 1)),)),
        Call("aten.split.Tensor", (6, 7), (Ref(0), 1), {}),  # two views of value 0
        Call("aten.mul_.Scalar", (None,), (Ref(6), 2.0), {}),  # in place, through a view
        Call("aten.zeros.default", (8,), ([],), {"dtype": torch.int64, "device": cpu}),
        Call("aten.empty.memory_format", (9,), ([0, 4],), {"device": cpu}),
        Call("aten.empty.memory_format", (10,), ([4],), {"device": cpu}),
        Call("aten.uniform_.default", (None,), (Ref(10), -1.0, 1.0), {"generator": GenRef(0)}),
    ]
    tensors = [
        TensorEntry("a", 0, "parameter", (2, 3), f32, True, True),
        TensorEntry("a_tied", 0, "parameter", (2, 3), f32, True, True),
        TensorEntry("b", 1, "parameter", (2, 3), f32, False, True),
        TensorEntry("u", 10, "parameter", (4,), f32, True, True),
        TensorEntry("lit", 2, "buffer", (3,), f32, False, True),
        TensorEntry("z", 3, "buffer", (2,), torch.complex64, False, True),
        TensorEntry("idx", 5, "buffer", (2, 1), torch.int64, False, False),
        TensorEntry("row1", 7, "buffer", (1, 3), f32, False, False),
        TensorEntry("count", 8, "buffer", (), torch.int64, False, True),
        TensorEntry("nothing", 9, "buffer", (0, 4), f32, False, True),
    ]
    return Recipe(rng="torch", seed=None, generators=2, program=program, tensors=tensors)


def test_hand_written_recipe_is_valid_and_replays_as_specified() -> None:
    recipe = initrecipe.load(hand_written().to_bytes())
    doc = encode_for_schema(recipe)
    assert_schema_valid(doc)
    assert {ins[0] for ins in doc["program"]} == {0, 1, 2, 3, 4}
    w = initrecipe.replay(recipe)
    state = torch.frombuffer(bytearray(HAND_STATE), dtype=torch.uint8)
    draws = torch.randn(2, 3, generator=torch.Generator().set_state(state))
    # RNG_SET_STATE, then RNG_RESTORE to "right after instruction 1": both draws are the same.
    assert torch.equal(w["b"], draws)
    # The in-place mul_ through the split view changed row 0 of `a` only; row1 views row 1.
    assert torch.equal(w["a"][0], draws[0] * 2) and torch.equal(w["a"][1], draws[1])
    assert torch.equal(w["row1"], draws[1:])
    assert w["a"] is w["a_tied"]
    torch.manual_seed(0)
    assert torch.equal(w["u"], torch.empty(4).uniform_(-1.0, 1.0))  # generator 0, RNG_SEED 0
    assert w["lit"].tolist() == [1.5, math.inf, 0.0] and math.copysign(1.0, w["lit"][2].item()) == -1.0
    assert w["idx"].tolist() == [[0], [1]]
    assert w["count"].shape == () and w["nothing"].shape == (0, 4)


# --------------------------------------------------------------------------- mutations
def _first(doc: dict[str, Any], code: int) -> list[Any]:
    return next(ins for ins in doc["program"] if ins[0] == code)


def _first_call_with_kwarg(doc: dict[str, Any], key: str) -> list[Any]:
    return next(ins for ins in doc["program"] if ins[0] == 0 and key in ins[4])


def _set(path: Callable[[dict[str, Any]], Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        container, key = path(doc)
        container[key] = value

    return mutate


def _nest(depth: int, value: Any = 1) -> Any:
    for _ in range(depth):
        value = [value]
    return value


# name -> (mutation of a decoded document, whether `initrecipe.load` must refuse it too)
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], bool]] = {
    "missing tensors": (lambda d: d.pop("tensors"), True),
    "missing hash": (lambda d: d.pop("hash"), True),
    "unknown top-level key": (lambda d: d.__setitem__("comment", "hi"), True),
    "format": (_set(lambda d: (d, "format"), "safetensors"), True),
    "version 1.3": (_set(lambda d: (d, "version"), [1, 3]), True),
    "version 0.9": (_set(lambda d: (d, "version"), [0, 9]), True),
    "version 2.0": (_set(lambda d: (d, "version"), [2, 0]), True),
    "version not a pair": (_set(lambda d: (d, "version"), [1]), True),
    "rng": (_set(lambda d: (d, "rng"), "numpy"), True),
    "seed string": (_set(lambda d: (d, "seed"), "0"), True),
    "generators too many": (_set(lambda d: (d, "generators"), 2**20 + 1), True),
    "hash format": (_set(lambda d: (d, "hash"), "md5:0123"), True),
    "instruction code 5": (lambda d: d["program"][0].__setitem__(0, 5), True),
    "instruction code -1": (lambda d: d["program"][0].__setitem__(0, -1), True),
    "instruction code bool": (lambda d: d["program"][0].__setitem__(0, True), True),
    "instruction code str": (lambda d: d["program"][0].__setitem__(0, "CALL"), True),
    "empty instruction": (lambda d: d["program"].append([]), True),
    "call too short": (lambda d: _first(d, 0).pop(), True),
    "call too long": (lambda d: _first(d, 0).extend([[], []]), True),
    "seed instruction too long": (lambda d: _first(d, 2).append(0), True),
    "rng seed negative": (lambda d: _first(d, 2).__setitem__(2, -1), True),
    "set_state not bytes": (lambda d: _first(d, 3).__setitem__(2, "state"), True),
    "literal data not bytes": (lambda d: _first(d, 1).__setitem__(4, [0, 0]), True),
    "literal dtype": (lambda d: _first(d, 1).__setitem__(2, "float8"), True),
    "negative value id in outs": (lambda d: _first(d, 0).__setitem__(2, [-1]), True),
    "bool value id in outs": (lambda d: _first(d, 0).__setitem__(2, [True]), True),
    "unknown tag": (lambda d: _first(d, 0)[3].append({"x": 1}), True),
    "tag with two keys": (lambda d: _first(d, 0)[3].append({"t": 0, "g": 0}), True),
    "empty tagged map": (lambda d: _first(d, 0)[3].append({}), True),
    "tensor ref not int": (lambda d: _first(d, 0)[3].append({"t": "0"}), True),
    "bytes argument": (lambda d: _first(d, 0)[3].append(b"\x00"), True),
    "unknown dtype tag": (lambda d: _first_call_with_kwarg(d, "dtype")[4].__setitem__("dtype", {"dtype": "float8"}), True),
    "unknown device": (lambda d: _first_call_with_kwarg(d, "device")[4].__setitem__("device", {"device": "tpu"}), True),
    "unknown layout": (lambda d: _first_call_with_kwarg(d, "layout")[4].__setitem__("layout", {"layout": "sparse_coo"}), True),
    "unknown memory format": (
        lambda d: _first_call_with_kwarg(d, "memory_format")[4].__setitem__("memory_format", {"memory_format": "nchw"}), True),
    "complex of three": (lambda d: _first(d, 0)[3].append({"complex": [1.0, 2.0, 3.0]}), True),
    "argument nested 9 deep": (lambda d: _first(d, 0)[3].append(_nest(9)), True),
    "out_meta not a pair": (lambda d: next(i for i in d["program"] if len(i) == 6)[5].__setitem__(0, ["int64"]), True),
    "shape of 65 dims": (lambda d: d["tensors"][0].__setitem__(3, [1] * 65), True),
    "negative dim": (lambda d: d["tensors"][0].__setitem__(3, [-1]), True),
    "tensor entry of 6 fields": (lambda d: d["tensors"][0].pop(), True),
    "tensor kind": (lambda d: d["tensors"][0].__setitem__(2, "weight"), True),
    "tensor dtype": (lambda d: d["tensors"][0].__setitem__(4, "float8"), True),
    "requires_grad not bool": (lambda d: d["tensors"][0].__setitem__(5, 1), True),
    "producer value not str": (lambda d: d["producer"].__setitem__("torch", 2), True),
    "list nested 9 deep": (lambda d: _first(d, 0)[3].append(_nest(8, [])), True),
    "rng state of the wrong size": (lambda d: _first(d, 3).__setitem__(2, _first(d, 3)[2][:-1]), True),
    "bool literal byte 2": (lambda d: _first(d, 1).__setitem__(slice(2, 5), ["bool", [4], b"\x00\x01\x02\x00"]), True),
    "generators over the limit": (_set(lambda d: (d, "generators"), 4097), True),
    "non-persistent parameter": (lambda d: d["tensors"][0].__setitem__(6, False), True),
    "int parameter requires grad": (
        lambda d: next(t for t in d["tensors"] if t[4] == "int64").__setitem__(
            slice(2, 7), ["parameter", [2, 1], "int64", True, True]
        ),
        True,
    ),
    "empty name": (lambda d: d["tensors"][0].__setitem__(0, ""), True),
    "stream key in a torch recipe": (
        lambda d: _first_call_with_kwarg(d, "generator")[4].__setitem__("generator", {"key": ["a", 0]}), True),
    # Rules the schema states and `initrecipe.load` leaves to replay, or does not check (see the spec).
    "operator not allowlisted": (lambda d: d["ops"].__setitem__(0, "aten.system.default"), False),
    "operator not aten": (lambda d: d["ops"].__setitem__(0, "os.system.default"), False),
    "duplicate operator names": (lambda d: d["ops"].append(d["ops"][0]), False),
    "buffer requires grad": (lambda d: next(t for t in d["tensors"] if t[2] == "buffer").__setitem__(5, True), False),
}

# Cross-references a JSON Schema cannot express: readers check them (FORMAT.md section 10).
READER_ONLY: dict[str, Callable[[dict[str, Any]], None]] = {
    "duplicate tensor name": lambda d: d["tensors"].append(list(d["tensors"][0])),
    "tie across kinds": lambda d: d["tensors"].append(
        ["a_buffer", d["tensors"][0][1], "buffer", d["tensors"][0][3], "float32", False, True]
    ),
    "tensor value never defined": lambda d: d["tensors"][0].__setitem__(1, 999),
    "reference to an undefined value": lambda d: _first(d, 0)[3].append({"t": 999}),
    "value defined twice": lambda d: _first(d, 1).__setitem__(1, 0),
    "undeclared generator": lambda d: _first(d, 2).__setitem__(1, d["generators"]),
    "undeclared generator argument": lambda d: _first_call_with_kwarg(d, "generator")[4].__setitem__("generator", {"g": 7}),
    "op index out of range": lambda d: _first(d, 0).__setitem__(1, len(d["ops"])),
    "restore of a later instruction": lambda d: _first(d, 4).__setitem__(2, len(d["program"])),
    "out_meta length differs from outs": lambda d: next(i for i in d["program"] if len(i) == 6)[5].append(["int64", [1]]),
    "literal data length": lambda d: _first(d, 1).__setitem__(4, _first(d, 1)[4] + b"\x00"),
}


@pytest.mark.parametrize("name", list(READER_ONLY))
def test_reader_refuses_what_the_schema_cannot_see(base_doc: dict[str, Any], name: str) -> None:
    doc = copy.deepcopy(base_doc)
    READER_ONLY[name](doc)
    assert not schema_errors(json_form(doc)), "the schema now checks this: move it to MUTATIONS"
    with pytest.raises(initrecipe.RecipeFormatError):
        initrecipe.replay(initrecipe.load(repack(doc)))


@pytest.fixture(scope="module")
def base_doc() -> dict[str, Any]:
    return decoded(hand_written())


def test_base_document_is_valid(base_doc: dict[str, Any]) -> None:
    assert_schema_valid(json_form(base_doc))
    initrecipe.load(repack(base_doc))


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutated_document_is_rejected(base_doc: dict[str, Any], name: str) -> None:
    mutate, load_refuses = MUTATIONS[name]
    doc = copy.deepcopy(base_doc)
    mutate(doc)
    assert schema_errors(json_form(doc)), f"the schema accepts a document with: {name}"
    if load_refuses:
        data = msgpack.packb(doc, use_bin_type=True) if "hash" in name else repack(doc)
        with pytest.raises(initrecipe.RecipeFormatError):
            initrecipe.load(data)


@pytest.mark.parametrize("name", ["operator not allowlisted", "operator not aten"])
def test_operator_outside_allowlist_is_refused_before_running(base_doc: dict[str, Any], name: str) -> None:
    doc = copy.deepcopy(base_doc)
    MUTATIONS[name][0](doc)
    with pytest.raises(initrecipe.RecipeFormatError, match="allowlist|not of the form"):
        initrecipe.replay(initrecipe.load(repack(doc)))


def test_newer_version_message(base_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(base_doc)
    doc["version"] = [1, 7]
    with pytest.raises(initrecipe.UnsupportedVersionError, match=r"^recipe format 1\.7 needs "):
        initrecipe.load(repack(doc))


@given(code=st.integers(min_value=-(2**63), max_value=2**64 - 1).filter(lambda c: c not in range(5)))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_unknown_instruction_code_is_rejected(code: int) -> None:
    doc = decoded(hand_written())
    doc["program"][2][0] = code
    assert schema_errors(json_form(doc))
    with pytest.raises(initrecipe.RecipeFormatError, match="unknown instruction code"):
        initrecipe.load(repack(doc))


KNOWN_TAGS = {"t", "g", "dtype", "device", "layout", "memory_format", "complex", "key"}


@given(tag=st.text(min_size=0, max_size=12).filter(lambda t: t not in KNOWN_TAGS), payload=st.integers(0, 3))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_unknown_tag_is_rejected(tag: str, payload: int) -> None:
    doc = decoded(hand_written())
    _first(doc, 0)[3].append({tag: payload})
    assert schema_errors(json_form(doc))
    with pytest.raises(initrecipe.RecipeFormatError):
        initrecipe.load(repack(doc))


# --------------------------------------------------------------------------- hypothesis: recordings
@given(
    in_features=st.integers(1, 9),
    out_features=st.integers(1, 9),
    bias=st.booleans(),
    seed=st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1)),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_linear_is_schema_valid_and_hash_stable(in_features: int, out_features: int, bias: bool, seed: int | None) -> None:
    recipe = initrecipe.record(lambda: torch.nn.Linear(in_features, out_features, bias=bias), seed=seed, sync_rng=False)
    doc = encode_for_schema(recipe)
    assert_schema_valid(doc)
    data = recipe.to_bytes()
    again = initrecipe.load(data)
    assert again.to_bytes() == data and again.content_hash == recipe.content_hash
    assert initrecipe.load(again.to_bytes()).content_hash == recipe.content_hash
    raw = msgpack.unpackb(data, raw=False)
    assert recipe.content_hash == raw["hash"] == "sha256:" + hashlib.sha256(
        msgpack.packb({k: raw[k] for k in BODY_KEYS}, use_bin_type=True)
    ).hexdigest()


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(fill=st.one_of(finite_or_not, st.integers(-(2**63), 2**64 - 1), st.booleans()), extra=st.lists(finite_or_not, max_size=3))
@settings(max_examples=50, deadline=None)
def test_scalar_arguments_round_trip_exactly(fill: Any, extra: list[float]) -> None:
    """float 64 (NaN and infinities included) and every msgpack integer width survive save/load."""
    values = [fill, *extra]
    program = [Call("aten.full.default", (i,), ([1], v), {"dtype": torch.float64}) for i, v in enumerate(values)]
    recipe = Recipe(rng="torch", seed=None, generators=0, program=program,
                    tensors=[TensorEntry(f"x{i}", i, "buffer", (1,), torch.float64, False, True) for i in range(len(values))])
    data = recipe.to_bytes()
    again = initrecipe.load(data)
    assert again.to_bytes() == data and again.content_hash == recipe.content_hash
    assert_schema_valid(encode_for_schema(again))
    for ins, value in zip(again.program, values):
        stored = ins.args[1]
        assert type(stored) is type(value)
        if isinstance(value, float):
            assert struct.pack(">d", stored) == struct.pack(">d", value)  # the very bits, NaN payloads too
            assert b"\xcb" + struct.pack(">d", value) in data  # FORMAT.md section 1: float 64, never float 32
        else:
            assert stored == value


# --------------------------------------------------------------------------- schema vs implementation
def _schema_operator_names() -> set[str]:
    pattern = SCHEMA["properties"]["ops"]["items"]["pattern"]
    match = re.fullmatch(r"\^aten\\\.\(\?:(.*)\)\\\.\[A-Za-z_\]\[A-Za-z0-9_\]\*\$", pattern)
    assert match, pattern
    return set(match.group(1).split("|"))


def test_schema_allowlist_is_the_implementation_allowlist() -> None:
    assert _schema_operator_names() == set(ALLOWED_OPERATORS)


def test_format_md_lists_every_allowlisted_operator() -> None:
    text = FORMAT_MD.read_text()
    section = text.split("## 9. The operator allowlist", 1)[1].split("## 10.", 1)[0]
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section.split("**Factories and copies.**", 1)[1]))
    assert listed == set(ALLOWED_OPERATORS), (
        f"missing from FORMAT.md: {sorted(set(ALLOWED_OPERATORS) - listed)}; "
        f"not allowlisted: {sorted(listed - set(ALLOWED_OPERATORS))}"
    )


def test_schema_enums_match_the_implementation() -> None:
    from initrecipe.format import spec as recipe_module

    defs = SCHEMA["$defs"]
    assert defs["dtype"]["enum"] == list(DTYPES)
    assert SCHEMA["properties"]["rng"]["enum"] == list(RNG_MODES)
    tags = {next(iter(alt["properties"])): alt["properties"] for alt in defs["tagged"]["oneOf"]}
    assert set(tags) == KNOWN_TAGS - {"key"}  # the stream key (1.1) has its own definition
    assert set(defs["streamKey"]["properties"]) == {"key"}
    assert defs["streamKey"]["properties"]["key"]["prefixItems"][1]["maximum"] == 2**32 - 1
    assert SCHEMA["properties"]["version"]["enum"] == [[1, 0], [1, 1], list(recipe_module.FORMAT_VERSION)]
    assert tags["layout"]["layout"]["enum"] == list(recipe_module.LAYOUTS)
    assert tags["memory_format"]["memory_format"]["enum"] == list(recipe_module.MEMORY_FORMATS)
    assert SCHEMA["required"] == [*recipe_module.TOP_LEVEL_KEYS, "hash"]
    assert defs["tensorEntry"]["prefixItems"][2]["enum"] == list(recipe_module.TENSOR_KINDS)


def test_schema_limits_match_the_reader() -> None:
    from initrecipe.format import spec as recipe_module

    defs, props = SCHEMA["$defs"], SCHEMA["properties"]
    assert props["generators"]["maximum"] == recipe_module.MAX_GENERATORS
    assert defs["generatorId"]["maximum"] == recipe_module.MAX_GENERATORS - 1
    assert props["program"]["maxItems"] == recipe_module.MAX_INSTRUCTIONS
    assert props["tensors"]["maxItems"] == recipe_module.MAX_TENSORS
    assert props["ops"]["maxItems"] == recipe_module.MAX_OPERATOR_NAMES
    assert defs["string"]["maxLength"] == recipe_module.MAX_STRING_CHARS
    assert defs["shape"]["maxItems"] == recipe_module.MAX_DIMS
    assert defs["valueId"]["maximum"] == recipe_module.MAX_ID
    assert defs["arg0"]["anyOf"][1]["maxItems"] == recipe_module.MAX_LIST_ITEMS
    assert f"arg{recipe_module.MAX_ARG_DEPTH}" in defs and f"arg{recipe_module.MAX_ARG_DEPTH + 1}" not in defs
    assert "anyOf" not in defs[f"arg{recipe_module.MAX_ARG_DEPTH}"]  # the deepest level holds no list
    state = defs["rngSetState"]["prefixItems"][2]["properties"]["bytes"]["pattern"]
    assert state == f"^[0-9a-f]{{{2 * recipe_module.RNG_STATE_BYTES}}}$"
    assert len(torch.Generator().get_state()) == recipe_module.RNG_STATE_BYTES


def test_format_md_names_every_dtype_and_code() -> None:
    text = FORMAT_MD.read_text()
    for name in DTYPES:
        assert f"| `{name}` |" in text, name
    for code, name in enumerate(["CALL", "LITERAL", "RNG_SEED", "RNG_SET_STATE", "RNG_RESTORE"]):
        assert f"| {code} | {name} |" in text


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_packaged_schema_is_identical() -> None:
    assert PACKAGED_SCHEMA_PATH.read_bytes() == SCHEMA_PATH.read_bytes()
    resource = importlib.resources.files("initrecipe").joinpath("schema/recipe.schema.json")
    assert resource.read_bytes() == SCHEMA_PATH.read_bytes()


# --------------------------------------------------------------------------- reference reader
def _run_reader(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(READER), str(path)], capture_output=True, text=True, check=False)


def test_reference_reader_reads_a_saved_recipe(recorded: dict[str, Recipe], tmp_path: Path) -> None:
    recipe = recorded["buffers"]
    out = _run_reader(recipe.save(tmp_path / "buffers.recipe"))
    assert out.returncode == 0, out.stderr
    assert recipe.content_hash in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[2:]}
    assert list(lines) == recipe.names
    assert "non-persistent" in lines["position_ids"] and "int64" in lines["position_ids"]
    assert "()" in lines["num_batches_tracked"] and "(0, 3)" in lines["empty"]


def test_reference_reader_does_not_import_initrecipe() -> None:
    source = READER.read_text()
    assert "initrecipe" not in "".join(line for line in source.splitlines() if line.startswith(("import", "from")))
    assert len(source.splitlines()) <= 60


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("seed", 123), "content hash mismatch"),
        (lambda d: d.__setitem__("version", [1, 3]), "recipe format 1.3 needs"),
        (lambda d: d.__setitem__("version", [2, 0]), "recipe format 2.0 needs"),
        (lambda d: d.__setitem__("format", "other"), "not an init recipe"),
    ],
)
def test_reference_reader_refuses_bad_files(base_doc: dict[str, Any], tmp_path: Path, mutate: Callable, message: str) -> None:
    doc = copy.deepcopy(base_doc)
    mutate(doc)
    path = tmp_path / "bad.recipe"
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    out = _run_reader(path)
    assert out.returncode == 1 and message in out.stderr, out.stderr


# --------------------------------------------------------------------------- format 1.1: rng="portable"
class PortableMix(torch.nn.Module):
    """Portable draws (a tie, one draw feeding two tensors, two draws of one tensor, a transposed view,
    a dead draw), pinned draws (a private generator; torch.manual_seed inside fork_rng) and both
    substituted operators (erfinv_; linalg_qr inside orthogonal_)."""

    def __init__(self) -> None:
        super().__init__()
        self.z_embed = torch.nn.Embedding(6, 4)
        self.a_head = torch.nn.Linear(4, 6)
        self.a_head.weight = self.z_embed.weight  # tied: the draw's stream is the smaller name
        shared = torch.randn(4)
        self.p = torch.nn.Parameter(shared[2:].clone())
        self.q = torch.nn.Parameter(shared[:2].clone())  # one draw feeds p and q: stream "p"
        self.r = torch.nn.Parameter(torch.empty(3).uniform_())
        with torch.no_grad():
            self.r.add_(torch.randn(3))  # the second draw of r: position 1
        self.t = torch.nn.Parameter(torch.empty(3, 2).t())  # a non-contiguous view
        with torch.no_grad():
            self.t.uniform_(-1.0, 1.0)
            self.e = torch.nn.Parameter(torch.empty(2, 3).uniform_(0.05, 0.95).erfinv_())
        self.o = torch.nn.Parameter(torch.empty(3, 3))
        torch.nn.init.orthogonal_(self.o)
        gen = torch.Generator().manual_seed(5)
        self.g = torch.nn.Parameter(torch.randn(3, generator=gen))  # pinned: a private generator
        with torch.random.fork_rng():
            torch.manual_seed(7)
            self.s = torch.nn.Parameter(torch.rand(2))  # pinned: the constructor seeded it
        dead = torch.empty(4).normal_()
        dead.fill_(1.0)  # a dead draw: not written
        self.register_buffer("ones", dead)


PORTABLE_MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "linear": lambda: torch.nn.Linear(4, 2),
    "embedding_padding_idx": embedding_with_padding,
    "mix": PortableMix,
}


@pytest.fixture(scope="module")
def portable() -> dict[str, Recipe]:
    return {name: initrecipe.record(fn, seed=123, rng="portable") for name, fn in PORTABLE_MODELS.items()}


@pytest.fixture(scope="module")
def portable_doc(portable: dict[str, Recipe]) -> dict[str, Any]:
    return decoded(portable["mix"])


def _keyed(doc: dict[str, Any]) -> list[list[Any]]:
    return [ins for ins in doc["program"] if ins[0] == 0 and "key" in ins[4].get("generator", {})]


@pytest.mark.parametrize("name", list(PORTABLE_MODELS))
def test_portable_recipe_is_schema_valid(portable: dict[str, Recipe], name: str) -> None:
    doc = encode_for_schema(portable[name])
    assert doc["version"] == [1, 1] and doc["rng"] == "portable" and doc["seed"] == 123
    assert _keyed(doc)
    assert_schema_valid(doc)


@pytest.mark.parametrize("name", list(PORTABLE_MODELS))
def test_portable_recipe_round_trips(portable: dict[str, Recipe], name: str, tmp_path: Path) -> None:
    recipe = portable[name]
    data = recipe.to_bytes()
    doc = msgpack.unpackb(data, raw=False)
    assert list(doc) == [*BODY_KEYS, "hash"] and data[0] == 0x8A
    again = initrecipe.load(recipe.save(tmp_path / f"{name}.recipe"))
    assert again.to_bytes() == data
    assert again.content_hash == recipe.content_hash == doc["hash"]
    assert again.rng == "portable" and again.seed == 123
    assert encode_for_schema(again) == encode_for_schema(recipe)


def test_torch_recipes_are_still_written_as_1_0(recorded: dict[str, Recipe]) -> None:
    assert {tuple(decoded(r)["version"]) for r in recorded.values()} == {(1, 0)}


def test_portable_keys_follow_the_writer_rules(portable: dict[str, Recipe]) -> None:
    """FORMAT.md section 6.5: streams are output names, positions count each stream's live draws."""
    doc = encode_for_schema(portable["mix"])
    keyed = _keyed(doc)
    assert all(doc["ops"][ins[1]] in DRAW_OPERATORS for ins in keyed)
    streams = [ins[4]["generator"]["key"] for ins in keyed]
    assert streams == [
        ["a_head.weight", 0],  # tied to z_embed.weight: the smaller name in code-point order
        ["a_head.bias", 0],  # the head's own weight draw is dead (the tie replaced it): not written
        ["p", 0],  # feeds p and q
        ["r", 0], ["r", 1],
        ["t", 0],
        ["e", 0],
        ["o", 0],
    ]
    pinned = [ins for ins in doc["program"] if ins[0] == 0 and "g" in ins[4].get("generator", {})]
    assert [ins[4]["generator"]["g"] for ins in pinned] == [1, 0]
    # Only the positioning the constructor did itself: no initial seed of generator 0, no restore.
    assert [ins for ins in doc["program"] if ins[0] != 0 and ins[0] != 1] == [[2, 1, 5], [2, 0, 7]]
    assert {"aten.erfinv_.default", "aten.linalg_qr.default"} <= set(doc["ops"])
    torch_doc = encode_for_schema(initrecipe.record(PortableMix, seed=123))
    torch_draws = [ins for ins in torch_doc["program"] if ins[0] == 0 and "generator" in ins[4]]
    assert len(torch_draws) == len(keyed) + len(pinned) + 2  # + the two dead draws
    linear_doc = encode_for_schema(portable["linear"])
    assert all(ins[0] == 0 for ins in linear_doc["program"]) and linear_doc["generators"] == 1


def test_portable_trunc_normal_is_recorded_as_an_inverse_cdf() -> None:
    """FORMAT.md section 6.5: on the unpinned stream trunc_normal_ is uniform_, clamp_ (into the open
    interval), erfinv_, mul_, add_, clamp_ (into [a, b]), in float32 for a float32 tensor."""

    def model() -> torch.nn.Module:
        module = torch.nn.Linear(3, 2)
        torch.nn.init.trunc_normal_(module.weight, std=0.02)
        return module

    doc = encode_for_schema(initrecipe.record(model, seed=0, rng="portable"))
    assert_schema_valid(doc)
    weight = next(t[1] for t in doc["tensors"] if t[0] == "weight")
    calls = [doc["ops"][ins[1]].split(".")[1] for ins in doc["program"]
             if ins[0] == 0 and ins[3] and ins[3][0] == {"t": weight}]
    assert calls == ["uniform_", "clamp_", "erfinv_", "mul_", "add_", "clamp_"]  # kaiming's draw is dead: not written
    assert doc["version"] == [1, 1]  # no operator of format 1.2: readers of 1.1 replay it
    assert [ins[4]["generator"]["key"] for ins in _keyed(doc)] == [["bias", 0], ["weight", 0]]


def test_torch_recipe_labelled_1_1_is_valid(base_doc: dict[str, Any], tmp_path: Path) -> None:
    """A 1.0 file is a 1.1 file (FORMAT.md section 11): schema, loader and reference reader agree."""
    doc = copy.deepcopy(base_doc)
    doc["version"] = [1, 1]
    data = repack(doc)
    assert_schema_valid(json_form(msgpack.unpackb(data, raw=False)))
    recipe = initrecipe.load(data)
    assert recipe.to_bytes() == data and recipe.rng == "torch"
    path = tmp_path / "relabelled.recipe"
    path.write_bytes(data)
    out = _run_reader(path)
    assert out.returncode == 0 and out.stdout.startswith("format 1.1  rng torch"), out.stderr
    relabelled = initrecipe.replay(recipe)
    original = initrecipe.replay(initrecipe.load(repack(base_doc)))
    assert list(relabelled) == list(original)
    assert all(torch.equal(relabelled[k], original[k]) for k in original)


def _generator_of_first_keyed(d: dict[str, Any]) -> dict[str, Any]:
    return _keyed(d)[0][4]


def _set_key(payload: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _generator_of_first_keyed(d).__setitem__("generator", {"key": payload})


# name -> (mutation of a decoded portable document, whether `initrecipe.load` must refuse it too)
PORTABLE_MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], bool]] = {
    "portable with version 1.0": (_set(lambda d: (d, "version"), [1, 0]), True),
    "portable with version 1.3": (_set(lambda d: (d, "version"), [1, 3]), True),
    "portable with seed null": (_set(lambda d: (d, "seed"), None), True),
    "portable with seed -1": (_set(lambda d: (d, "seed"), -1), True),
    "portable with seed float": (_set(lambda d: (d, "seed"), 0.5), True),
    "key in a torch recipe": (_set(lambda d: (d, "rng"), "torch"), True),
    "key position -1": (_set_key(["p", -1]), True),
    "key position 2**32": (_set_key(["p", 2**32]), True),
    "key position float": (_set_key(["p", 0.5]), True),
    "key position bool": (_set_key(["p", False]), True),
    "key stream not a string": (_set_key([0, 0]), True),
    "key stream too long": (_set_key(["x" * 65537, 0]), True),
    "key of one item": (_set_key(["p"]), True),
    "key of three items": (_set_key(["p", 0, 0]), True),
    "key not a list": (_set_key("p"), True),
    "key and another tag": (lambda d: _generator_of_first_keyed(d)["generator"].__setitem__("g", 0), True),
    # Where a key may stand is the replayer's check (FORMAT.md section 10), not the loader's.
    "key as a positional argument": (lambda d: _keyed(d)[0][3].append({"key": ["p", 0]}), False),
    "key under another keyword": (
        lambda d: _first_call_with_kwarg(d, "pin_memory")[4].__setitem__("pin_memory", {"key": ["p", 0]}), False),
    "key inside a list": (lambda d: _first_call_with_kwarg(d, "pin_memory")[3].append([{"key": ["p", 0]}]), False),
}


def test_portable_base_document_is_valid(portable_doc: dict[str, Any]) -> None:
    assert_schema_valid(json_form(portable_doc))
    initrecipe.load(repack(portable_doc))


@pytest.mark.parametrize("name", list(PORTABLE_MUTATIONS))
def test_mutated_portable_document_is_rejected(portable_doc: dict[str, Any], name: str) -> None:
    mutate, load_refuses = PORTABLE_MUTATIONS[name]
    doc = copy.deepcopy(portable_doc)
    mutate(doc)
    assert schema_errors(json_form(doc)), f"the schema accepts a document with: {name}"
    if load_refuses:
        with pytest.raises(initrecipe.RecipeFormatError):
            initrecipe.load(repack(doc))


def test_portable_load_messages(portable_doc: dict[str, Any]) -> None:
    for mutate, message in [
        (_set(lambda d: (d, "version"), [1, 0]), r"^rng: `portable` recipes are format 1\.1 or newer"),
        (_set(lambda d: (d, "seed"), None), r"^seed: a `portable` recipe needs a seed"),
        (_set(lambda d: (d, "rng"), "torch"), r"a portable stream key in an rng='torch' recipe"),
    ]:
        doc = copy.deepcopy(portable_doc)
        mutate(doc)
        with pytest.raises(initrecipe.RecipeFormatError, match=message):
            initrecipe.load(repack(doc))


def test_reference_reader_reads_a_portable_recipe(portable: dict[str, Recipe], tmp_path: Path) -> None:
    recipe = portable["mix"]
    out = _run_reader(recipe.save(tmp_path / "mix.recipe"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("format 1.1  rng portable  seed 123") and recipe.content_hash in out.stdout
    assert [line.split()[0] for line in out.stdout.splitlines()[2:]] == recipe.names


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("version", [1, 0]), "rng `portable` recipes are format 1.1 or newer"),
        (lambda d: d.__setitem__("seed", -1), "need a seed in 0 .. 2**64-1"),
        (lambda d: d.__setitem__("version", [1, 3]), "recipe format 1.3 needs"),
    ],
)
def test_reference_reader_refuses_bad_portable_files(
    portable_doc: dict[str, Any], tmp_path: Path, mutate: Callable, message: str
) -> None:
    doc = copy.deepcopy(portable_doc)
    mutate(doc)
    path = tmp_path / "bad.recipe"
    path.write_bytes(repack(doc))
    out = _run_reader(path)
    assert out.returncode == 1 and message in out.stderr, out.stderr


# Replay-time checks of FORMAT.md sections 6.3 and 10, run by `initrecipe.inspect.check.check`.
def test_portable_recipe_passes_the_replay_checks(portable: dict[str, Recipe]) -> None:
    from initrecipe.inspect.check import check

    for recipe in portable.values():
        assert check(recipe.to_bytes()) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["ops"].__setitem__(d["ops"].index("aten.uniform_.default"), "aten.cauchy.default"),
         "has no portable sampler"),
        (lambda d: next(i for i in _keyed(d) if i[4]["generator"]["key"] == ["t", 0])[3].__setitem__(1, 2.0),
         "uniform needs low <= high"),
        (lambda d: _first_call_with_kwarg(d, "pin_memory")[4].__setitem__("pin_memory", {"key": ["p", 0]}),
         "program[0]"),
    ],
    ids=["operator without a sampler", "uniform from > to", "key under another keyword"],
)
def test_replay_checks_refuse_bad_portable_draws(portable_doc: dict[str, Any], mutate: Callable, message: str) -> None:
    from initrecipe.inspect.check import check

    doc = copy.deepcopy(portable_doc)
    mutate(doc)
    problems = check(repack(doc))
    assert problems and message in problems[0], problems


@pytest.mark.parametrize("name", [name for name, (_, load_refuses) in PORTABLE_MUTATIONS.items() if not load_refuses])
def test_replay_checks_refuse_misplaced_keys(portable_doc: dict[str, Any], name: str) -> None:
    """A key anywhere but the generator argument of a random call: the loader reads it, replay refuses it."""
    from initrecipe.inspect.check import check

    doc = copy.deepcopy(portable_doc)
    PORTABLE_MUTATIONS[name][0](doc)
    assert check(repack(doc))


# --------------------------------------------------------------------------- FORMAT.md vs implementation (1.1)
def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_format_md_lists_the_portable_operators() -> None:
    text = FORMAT_MD.read_text()
    draws = _section(text, "### 6.3 Portable draws (1.1)", "### 6.4")
    assert set(re.findall(r"^\| `(aten\.[a-z_]+\.[A-Za-z_]+)`(?: \*\*\(1\.2\)\*\*)? \|", draws, re.M)) == set(DRAW_OPERATORS)
    substituted = _section(text, "### 6.4 Substituted operators (1.1)", "### 6.5")
    assert set(re.findall(r"`(aten\.[a-z_]+\.[a-z_]+)`", substituted.split("*Non-normative.*")[0])) == set(
        SUBSTITUTED_OPERATORS
    )


def test_format_md_portable_example_is_what_record_writes() -> None:
    """Appendix A.2 is a real recording (producer and hash aside, which follow the versions)."""
    text = FORMAT_MD.read_text()
    block = _section(text, "### A.2 An rng `\"portable\"` recipe (format 1.1)", "Compared with A.1")
    example = json.loads(block.split("```json", 1)[1].split("```", 1)[0])
    recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0, rng="portable")
    actual = encode_for_schema(recipe)
    assert_schema_valid(example)
    for key in BODY_KEYS:
        if key != "producer":
            assert example[key] == actual[key], key
    if actual["producer"] == example["producer"]:
        assert example["hash"] == actual["hash"] and len(recipe.to_bytes()) == 559

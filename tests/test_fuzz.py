"""Property-based fuzzing of the recipe reader and replayer.

Starting from valid recipes of real models (a tiny GPT-2, modules with views, truncated-normal
init, ties, literals, data-dependent operators and several generators), every case mutates one
recipe, at the byte level (truncation, flipped, inserted or deleted bytes) or at the level of the
decoded document (wrong types, missing and extra fields, huge and negative shapes, overlapping and
out-of-bounds views, forward references, unknown operators, deep nesting, enormous strings,
random operator calls), the latter re-encoded with a recomputed valid content hash so that the
mutation gets past the integrity check into the deeper validation.

Every case must end in a successful replay or an :class:`initrecipe.RecipeError`: no other
exception, no hang (a per-case time bound), no memory blow-up (replays run with a 64 MiB limit).
``initrecipe.inspect.check.check`` must agree: when it reports a finding, replay fails too.

The normal run has a fixed set of 3,000 cases; ``python -m pytest -m slow tests/test_fuzz.py`` runs
50,000 new random ones.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import random
import resource
import signal
import threading

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import initrecipe
from initrecipe.program.operators import ALLOWED_OPERATORS
from initrecipe.inspect.check import check

KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")
MAX_BYTES = 64 << 20
CASE_SECONDS = 20


# --------------------------------------------------------------------------- seed recipes
class Zoo(nn.Module):
    """Views, truncated-normal and orthogonal init, ties, literals, data-dependent operators,
    a second generator, buffers persistent or not."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        w = torch.empty(6, 4)
        nn.init.trunc_normal_(w, std=0.02)
        self.w = nn.Parameter(w)
        self.register_buffer("v", torch.zeros(24).view(4, 6).t())
        self.register_buffer("s", torch.arange(12.0).as_strided((3, 3), (3, 1), 1))
        self.register_buffer("ortho", nn.init.orthogonal_(torch.empty(4, 4)))
        self.register_buffer("sel", torch.arange(10)[torch.arange(10) > 4])
        self.register_buffer("lit", torch.tensor([[1.5, -2.0], [3.0, 4.0]]))
        self.register_buffer("ri", torch.repeat_interleave(torch.tensor([1, 2])))
        self.register_buffer("nonp", torch.ones(3), persistent=False)
        g = torch.Generator().manual_seed(5)
        self.register_buffer("gr", torch.randn(3, generator=g))
        self.bn = nn.BatchNorm1d(4)
        self.conv = nn.Conv2d(2, 3, 3)
        self.ln = nn.LayerNorm(4)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


@functools.lru_cache(maxsize=None)
def seeds() -> tuple[bytes, ...]:
    builders = [
        _gpt2,
        Zoo,
        lambda: nn.Sequential(nn.Linear(5, 3), nn.GELU(), nn.Linear(3, 2)),
        lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.Embedding(7, 3, padding_idx=0)),
    ]
    out = []
    for i, build in enumerate(builders):
        for rng in ("torch", "portable"):  # portable seeds bring stream keys and format 1.1
            data = initrecipe.record(build, seed=i, rng=rng).to_bytes()
            initrecipe.replay(data, max_bytes=MAX_BYTES)  # each seed is valid
            out.append(data)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def known_ops() -> tuple[str, ...]:
    names = []
    for packet in sorted(ALLOWED_OPERATORS):
        obj = getattr(torch.ops.aten, packet, None)
        if obj is not None:
            names.extend(f"aten.{packet}.{overload}" for overload in obj.overloads())
    return tuple(names)


# --------------------------------------------------------------------------- hashing as recipe.py does
def content_hash(doc: dict) -> str:
    body = msgpack.packb({k: doc[k] for k in KEYS if k in doc}, use_bin_type=True, use_single_float=False)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def encode(doc: dict, rehash: bool) -> bytes | None:
    doc = dict(doc)
    try:
        if rehash:
            doc["hash"] = content_hash(doc)
        return msgpack.packb(doc, use_bin_type=True, use_single_float=False)
    except (ValueError, TypeError, OverflowError):  # e.g. nesting beyond msgpack's packer limit
        return None


# --------------------------------------------------------------------------- random values
INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 64, 65, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53, 10**12, 10**15,
                    2**62, 2**63 - 1, -(2**63), 2**64 - 1, -(2**31)]
INTERESTING_FLOATS = [0.0, -0.0, 1.5, -1e300, 1e300, float("nan"), float("inf"), float("-inf"), 5e-324]


def random_scalar(rng: random.Random):
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(INTERESTING_INTS)
    if kind == 1:
        return rng.randrange(-5, 100)
    if kind == 2:
        return rng.choice(INTERESTING_FLOATS)
    if kind == 3:
        return rng.choice(["", "x", "float32", "aten.empty.default", "cpu", "cuda:0", "meta", "weight", "\x00\u202e",
                           "t", "g", "dtype", "device", "parameter", "buffer", "torch", "portable"])
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 8, 5056])))
    if kind == 5:
        return rng.choice([None, True, False])
    if kind == 6:
        return rng.choice([{"t": rng.randrange(-2, 200)}, {"g": rng.randrange(-1, 5)}, {"dtype": "int8"},
                           {"device": "cpu"}, {"layout": "sparse_coo"}, {"memory_format": "channels_last"},
                           {"complex": [1, 2]}, {"t": 1, "g": 0}, {}, {"x": None}])
    if kind == 7:
        return [random_scalar(rng) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "t", "format", "out"]): random_scalar(rng)}


def nodes(doc) -> list[tuple[object, object]]:
    """(container, key) of every node below the top level, plus the top-level fields but the hash."""
    out = []
    stack = [doc]
    while stack:
        container = stack.pop()
        keys = [k for k in container if not (container is doc and k == "hash")] if isinstance(container, dict) \
            else range(len(container))
        for k in keys:
            out.append((container, k))
            child = container[k]
            if isinstance(child, (dict, list)):
                stack.append(child)
    return out


def defined_values(doc) -> list[int]:
    vals = []
    for ins in doc.get("program", []) if isinstance(doc.get("program"), list) else []:
        if isinstance(ins, list) and ins and ins[0] == 0 and len(ins) > 2 and isinstance(ins[2], list):
            vals.extend(v for v in ins[2] if isinstance(v, int))
        elif isinstance(ins, list) and ins and ins[0] == 1 and len(ins) > 1 and isinstance(ins[1], int):
            vals.append(ins[1])
    return vals or [0]


# --------------------------------------------------------------------------- document mutations
def m_replace(doc, rng):
    container, key = rng.choice(nodes(doc))
    container[key] = random_scalar(rng)


def m_delete(doc, rng):
    container, key = rng.choice(nodes(doc))
    del container[key]


def m_insert(doc, rng):
    lists = [c[k] for c, k in nodes(doc) if isinstance(c[k], list)] + [doc]
    target = rng.choice(lists)
    if isinstance(target, list):
        target.insert(rng.randrange(len(target) + 1), random_scalar(rng))
    else:
        target[rng.choice(["extra", "format", "hash", "program", "x" * 5])] = random_scalar(rng)


def m_int(doc, rng):
    ints = [(c, k) for c, k in nodes(doc) if type(c[k]) is int]
    if ints:
        container, key = rng.choice(ints)
        container[key] = rng.choice([container[key] + 1, container[key] - 1, rng.choice(INTERESTING_INTS)])


def m_float(doc, rng):
    """A different number where the recipe has a float (an init's bound or std), or a different seed:
    mostly still a valid recipe, so that replays run to the end."""
    floats = [(c, k) for c, k in nodes(doc) if type(c[k]) is float]
    if floats and rng.random() < 0.8:
        container, key = rng.choice(floats)
        container[key] = rng.choice([container[key] * 2, -container[key], 0.0, 1e-3, rng.choice(INTERESTING_FLOATS)])
    elif isinstance(doc.get("program"), list):
        seeds_at = [ins for ins in doc["program"] if isinstance(ins, list) and len(ins) == 3 and ins[0] == 2]
        if seeds_at:
            rng.choice(seeds_at)[2] = rng.choice([0, 1, 2**64 - 1, rng.randrange(2**32)])


def m_shape(doc, rng):
    """Huge, negative, or many dimensions in a shape-like list of ints."""
    shapes = [c[k] for c, k in nodes(doc) if isinstance(c[k], list) and c[k] and all(type(v) is int for v in c[k])]
    if shapes:
        shape = rng.choice(shapes)
        action = rng.randrange(4)
        if action == 0:
            shape[rng.randrange(len(shape))] = rng.choice([10**15, 2**31, 2**40, 4096, 10**6, -1, -(2**63), 2**64 - 1])
        elif action == 1:
            shape.extend([2] * rng.choice([1, 30, 70]))
        elif action == 2:
            shape.clear()
        else:
            shape[:] = [rng.randrange(0, 5000) for _ in shape]


def m_ref(doc, rng):
    """Point a tensor reference anywhere: to a later value (a cycle in program order), nowhere, itself."""
    refs = [c[k] for c, k in nodes(doc) if isinstance(c[k], dict) and set(c[k]) == {"t"}]
    if refs:
        rng.choice(refs)["t"] = rng.choice(defined_values(doc) + [max(defined_values(doc)) + 1, 10**9])


def m_program_order(doc, rng):
    program = doc.get("program")
    if isinstance(program, list) and len(program) > 1:
        i, j = rng.randrange(len(program)), rng.randrange(len(program))
        action = rng.randrange(3)
        if action == 0:
            program[i], program[j] = program[j], program[i]
        elif action == 1:
            program.insert(j, copy.deepcopy(program[i]))
        else:
            program.reverse()


def m_op_name(doc, rng):
    ops = doc.get("ops")
    if isinstance(ops, list) and ops:
        ops[rng.randrange(len(ops))] = rng.choice(
            list(rng.sample(known_ops(), 3)) + ["aten.system.default", "builtins.eval.default", "aten.empty",
                                                "aten.__class__.default", "os.system.x", ""]
        )


def m_deep(doc, rng):
    container, key = rng.choice(nodes(doc))
    value = container[key]
    for _ in range(rng.choice([2, 9, 50, 400, 520])):
        value = [value]
    container[key] = value


def m_string(doc, rng):
    strings = [(c, k) for c, k in nodes(doc) if isinstance(c[k], str)]
    if strings:
        container, key = rng.choice(strings)
        container[key] = rng.choice(["x" * 70_000, "y" * 300_000, "\U0001f600" * 70_000, "z" * 1_100_000])


def m_tensor_entry(doc, rng):
    tensors = doc.get("tensors")
    if isinstance(tensors, list) and tensors and isinstance(tensors[0], list):
        entry = rng.choice(tensors)
        if isinstance(entry, list) and len(entry) == 7:
            field = rng.randrange(7)
            entry[field] = rng.choice([
                random_scalar(rng), rng.choice(tensors)[field] if isinstance(rng.choice(tensors), list) else None,
                rng.choice(defined_values(doc)), "buffer", "parameter", "int64", "bool", [10**15], True, False,
            ])


def _op_index(doc, name: str) -> int:
    ops = doc["ops"]
    if name not in ops:
        ops.append(name)
    return ops.index(name)


def m_view(doc, rng):
    """An as_strided view (in or out of bounds, overlapping or not) written in place, maybe named."""
    if not isinstance(doc.get("program"), list) or not isinstance(doc.get("ops"), list):
        return
    values = defined_values(doc)
    base = rng.choice(values)
    new = max(values) + 1
    size = [rng.choice([0, 1, 2, 3, 5, 100, 10**6]) for _ in range(rng.randrange(1, 3))]
    stride = [rng.choice([0, 1, 2, 7, -1]) for _ in size]
    args = [{"t": base}, size, stride] + ([rng.choice([0, 1, 5, 10**6, -3])] if rng.random() < 0.5 else [])
    doc["program"].append([0, _op_index(doc, rng.choice(["aten.as_strided.default", "aten._reshape_alias.default",
                                                          "aten.as_strided_copy.default"])),
                           [new], args[:3] if "reshape" in doc["ops"][-1] else args, {}])
    inplace = rng.choice(["aten.add_.Tensor", "aten.copy_.default", "aten.normal_.default", "aten.fill_.Scalar",
                          "aten.zero_.default", "aten.mul_.Tensor"])
    other = {"t": rng.choice(values + [new])}
    extra = {"aten.add_.Tensor": [other], "aten.copy_.default": [other], "aten.mul_.Tensor": [other],
             "aten.fill_.Scalar": [2.5], "aten.normal_.default": [], "aten.zero_.default": []}[inplace]
    kwargs = {"generator": {"g": 0}} if inplace == "aten.normal_.default" else {}
    doc["program"].append([0, _op_index(doc, inplace), [None], [{"t": new}] + extra, kwargs])
    if rng.random() < 0.5 and isinstance(doc.get("tensors"), list):
        doc["tensors"].append(["fuzz.view", new, "buffer", size, "float32", False, True])


def _call_target(doc, rng):
    """The program's defined values, and a random allowlisted operator with its schema (None if the
    document is too broken to take a call)."""
    if not isinstance(doc.get("program"), list) or not isinstance(doc.get("ops"), list):
        return None
    name = rng.choice(known_ops())
    schema = getattr(getattr(torch.ops.aten, name.split(".")[1]), name.split(".")[2])._schema
    return defined_values(doc), name, schema


def m_random_call(doc, rng):
    """A call to any allowlisted operator with arguments drawn from the program's values and scalars."""
    target = _call_target(doc, rng)
    if target is None:
        return
    values, name, schema = target
    args, kwargs = [], {}
    for a in schema.arguments:
        if a.kwarg_only and rng.random() < 0.6:
            continue
        text = str(a.type)
        if "Generator" in text:
            value = {"g": 0}
        elif "Tensor" in text and "[]" in text:
            value = [{"t": rng.choice(values)} for _ in range(rng.randrange(1, 3))]
        elif "Tensor" in text:
            value = {"t": rng.choice(values)}
        elif "int[]" in text or "SymInt[]" in text:
            value = [rng.choice([0, 1, 2, 3, -1, 4]) for _ in range(rng.randrange(3))]
        elif "ScalarType" in text:
            value = {"dtype": rng.choice(["float32", "int64", "bool", "complex64"])}
        elif "Device" in text:
            value = {"device": "cpu"}
        else:
            value = random_scalar(rng) if rng.random() < 0.3 else rng.choice([0, 1, 2, -1, 0.5, True, None])
        if a.kwarg_only:
            kwargs[a.name] = value
        else:
            args.append(value)
    outs = [max(values) + 1 + k for k in range(len(schema.returns))]
    doc["program"].append([0, _op_index(doc, name), outs, args, kwargs])
    if rng.random() < 0.5 and isinstance(doc.get("tensors"), list):
        doc["tensors"].append(["fuzz.out", outs[0] if outs else 0, "buffer", [1], "float32", False, True])


def typed_arg(rng: random.Random, kind: str, values: list[int]):
    """A plausible encoded value for an argument of schema type ``kind``."""
    optional = kind.startswith("Optional[")
    base = kind[len("Optional["):-1] if optional else kind
    if optional and rng.random() < 0.3:
        return None
    if base == "Tensor":
        return {"t": rng.choice(values)}
    if base == "List[Tensor]":
        return [{"t": rng.choice(values)} for _ in range(rng.randrange(1, 4))]
    if base == "List[Optional[Tensor]]":
        return [rng.choice([None, {"t": rng.choice(values)}]) for _ in range(rng.randrange(1, 3))]
    if base == "int":
        return rng.choice([0, 1, 2, -1, -2, 3, 4, 100, 2**31, -(2**63), 2**63 - 1])
    if base == "List[int]":
        return [rng.choice([0, 1, 2, -1, 3, 4, 2**31]) for _ in range(rng.randrange(0, 4))]
    if base == "float":
        return rng.choice([0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), 1e30])
    if base in ("number", "complex"):
        return rng.choice([0, 1, -1, 2.5, True, float("nan"), 1e300, 2**63 - 1, {"complex": [1.0, -1.0]}])
    if base == "bool":
        return rng.random() < 0.5
    if base == "ScalarType":
        return {"dtype": rng.choice(["float32", "int64", "bool", "float64", "int32", "uint8", "complex64", "float16",
                                     "bfloat16", "int8"])}
    if base == "Layout":
        return {"layout": "strided"}
    if base == "MemoryFormat":
        return {"memory_format": rng.choice(["contiguous_format", "preserve_format", "channels_last",
                                             "channels_last_3d"])}
    if base == "Device":
        return {"device": rng.choice(["cpu", "cpu", "meta"])}
    if base == "Generator":
        return {"g": 0}
    if base == "str":
        return rng.choice(["floor", "trunc", "sum", "mean", "amax", "ij,jk->ik", "i->", "reflect", "none", "fro",
                           "L", "U", "reduced", "complete", "left", "right", "", "..."])
    if base == "List[float]":
        return [rng.random() for _ in range(rng.randrange(0, 3))]
    if base == "List[bool]":
        return [rng.random() < 0.5 for _ in range(rng.randrange(0, 4))]
    return random_scalar(rng)


def m_typed_call(doc, rng):
    """A call to any allowlisted operator with arguments of the kinds its schema declares, so that
    many calls pass the checks and run for real."""
    target = _call_target(doc, rng)
    if target is None:
        return
    values, name, schema = target
    args, kwargs = [], {}
    for a in schema.arguments:
        kind = str(a.real_type)
        if a.kwarg_only:
            if rng.random() < 0.5:
                kwargs[a.name] = typed_arg(rng, kind, values)
        elif a.default_value is not None and rng.random() < 0.3:
            break
        else:
            args.append(typed_arg(rng, kind, values))
    outs = [max(values) + 1 + k for k in range(max(1, len(schema.returns)))]
    doc["program"].append([0, _op_index(doc, name), outs, args, kwargs])
    if rng.random() < 0.5 and isinstance(doc.get("tensors"), list):
        doc["tensors"].append(["fuzz.typed", outs[0], "buffer", [1], "float32", False, True])


DOC_MUTATIONS = [m_float, m_replace, m_delete, m_insert, m_int, m_shape, m_ref, m_program_order, m_op_name, m_deep,
                 m_string, m_tensor_entry, m_view, m_random_call, m_typed_call, m_typed_call]


# --------------------------------------------------------------------------- byte mutations
def b_truncate(data: bytes, rng) -> bytes:
    return data[: rng.randrange(len(data))]


def b_flip(data: bytes, rng) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 8])):
        pos = rng.randrange(len(out))
        out[pos] ^= rng.randrange(1, 256)
    return bytes(out)


def b_insert(data: bytes, rng) -> bytes:
    pos = rng.randrange(len(data) + 1)
    blob = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16))),
                       b"\xdd\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xc1", b"\x91" * 3000,
                       b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd4\x00\x00"])
    return data[:pos] + blob + data[pos:]


def b_delete(data: bytes, rng) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randrange(1, 32):]


def b_splice(data: bytes, rng) -> bytes:
    other = rng.choice(seeds())
    i, j = rng.randrange(len(data)), rng.randrange(len(other))
    return data[:i] + other[j:]


BYTE_MUTATIONS = [b_truncate, b_flip, b_insert, b_delete, b_splice]


# --------------------------------------------------------------------------- one case
class CaseTimeout(BaseException):
    """Raised by the per-case timer; a BaseException so that no `except Exception` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"a fuzz case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(data: bytes) -> str:
    """Check and replay one candidate; 'ok' or 'error'.  Anything but a RecipeError propagates."""
    with time_limit(CASE_SECONDS):
        findings = check(data, max_bytes=MAX_BYTES)
        assert isinstance(findings, list) and all(isinstance(f, str) and f for f in findings)
        try:
            weights = initrecipe.replay(data, max_bytes=MAX_BYTES)
        except initrecipe.RecipeError as exc:
            assert str(exc)
            return "error"
        assert not findings, f"check found {findings} but replay succeeded"
        assert all(isinstance(t, torch.Tensor) for t in weights.values())
        return "ok"


def mutate(data: st.DataObject) -> bytes | None:
    seed = data.draw(st.sampled_from(seeds()), label="seed recipe")
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    if data.draw(st.booleans(), label="document level"):
        doc = msgpack.unpackb(seed, raw=False)
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            mutation = data.draw(st.sampled_from(DOC_MUTATIONS), label="mutation")
            try:
                mutation(doc, rng)
            except (IndexError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
                pass  # the mutation did not apply to this shape of document
        return encode(doc, rehash=rng.random() < 0.9)
    candidate = seed
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        mutation = data.draw(st.sampled_from(BYTE_MUTATIONS), label="mutation")
        candidate = mutation(candidate, rng) if candidate else candidate
    if rng.random() < 0.5:
        # Past the integrity check: when the damaged bytes still decode to a map, give it a valid hash.
        try:
            doc = msgpack.unpackb(candidate, raw=False, strict_map_key=True)
        except Exception:
            return candidate
        if isinstance(doc, dict):
            return encode(doc, rehash=True) or candidate
    return candidate


OUTCOMES: dict[str, int] = {}


def fuzz_one(data: st.DataObject) -> None:
    candidate = mutate(data)
    if candidate is None:
        return
    outcome = run_case(candidate)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


@settings(max_examples=3000, derandomize=True, **COMMON)
@given(st.data())
def _fuzz_normal(data):
    fuzz_one(data)


@settings(max_examples=50_000, derandomize=False, **COMMON)
@given(st.data())
def _fuzz_slow(data):
    fuzz_one(data)


def _run(test) -> None:
    seeds()  # record outside the measured memory and time
    OUTCOMES.clear()
    before = _max_rss()
    test()
    assert _max_rss() - before < 1536 << 20, "fuzzing grew the peak RSS by more than 1.5 GiB"
    # The mutations must reach both outcomes: a fuzzer whose every case fails early tests little.
    assert OUTCOMES.get("error", 0) > 0 and OUTCOMES.get("ok", 0) > 0, OUTCOMES


def test_seed_recipes_are_valid():
    for data in seeds():
        assert check(data, max_bytes=MAX_BYTES) == []
        assert run_case(data) == "ok"


def test_fuzz_hostile_recipes():
    """3,000 fixed cases (derandomized): replay succeeds or raises a RecipeError, within bounds."""
    _run(_fuzz_normal)


@pytest.mark.slow
def test_fuzz_hostile_recipes_slow():
    """50,000 new random cases: `python -m pytest -m slow tests/test_fuzz.py`."""
    _run(_fuzz_slow)


def test_deep_nesting_at_the_byte_level():
    seed = seeds()[4]
    doc = msgpack.unpackb(seed, raw=False)
    for depth in (100, 510, 1000, 5000, 100_000):
        # Nesting msgpack's packer refuses to write: splice the bytes by hand.
        nested = b"\x91" * depth + b"\x00"
        body = msgpack.packb({**doc, "producer": "P"}, use_bin_type=True)
        data = body.replace(msgpack.packb("P"), nested, 1)
        assert run_case(data) == "error"

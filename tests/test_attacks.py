"""The crafted-attack corpus (tests/attacks/, written by tools/make_attacks.py): every file gets
the outcome tests/attacks/outcomes.json gives it, from `check` and from `replay` alike.

A case either ``raises`` (the exact exception class, and every message fragment) or ``replays``
(check finds nothing; the replayed tensors hash to ``values_sha256``).  Files too large to commit
are built here by the generator and must hash to the table's ``sha256``.  Cases marked ``passes``
also run the file through every pass that walks the program (load, check, show, sliceable_names,
planning, sharded planning) under a generous time guard: the passes are linear, and a 1 MB file
takes about a second in each (docs/BENCHMARKS.md); the guard fails only when one is ~20x slower.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch

import initrecipe
from initrecipe import Shard
from initrecipe.runtime.replay import iter_replay, sliceable_names
from initrecipe.runtime.replay_plan import prepare_replay
from initrecipe.inspect.show import summarize
from initrecipe.inspect.check import check, check_report

ATTACKS = Path(__file__).parent / "attacks"
TABLE = json.loads((ATTACKS / "outcomes.json").read_text())
MAX_BYTES = 4 << 30  # the memory limit for every case unless it says otherwise: machine-independent outcomes
PASS_GUARD_SECONDS = 20.0  # ~20x what a pass takes on a 1 MB file here
FORMAT_GUARD_SECONDS = 1.0  # msgpack-level refusals take milliseconds


def _generator():
    spec = importlib.util.spec_from_file_location("make_attacks", Path(__file__).parent.parent / "tools" / "make_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
_BUILT: dict[str, bytes] = {}


def attack_bytes(name: str) -> bytes:
    """The committed file, or the one the generator builds (pinned by its sha256)."""
    if name not in _BUILT:
        path = ATTACKS / f"{name}.recipe"
        data = path.read_bytes() if path.exists() else GENERATOR.build(name)
        if "sha256" in TABLE[name]:
            assert len(data) > GENERATOR.COMMIT_LIMIT
            assert hashlib.sha256(data).hexdigest() == TABLE[name]["sha256"], f"{name}: the generator's output changed"
        _BUILT.clear()  # keep one large file in memory at a time
        _BUILT[name] = data
    return _BUILT[name]


def values_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def exception_class(name: str) -> type:
    return getattr(initrecipe, name)


def _cases():
    for name, entry in TABLE.items():
        for k, case in enumerate(entry["cases"]):
            marks = [pytest.mark.slow] if case.get("slow") else []
            yield pytest.param(name, case, id=f"{name}-{k}", marks=marks)


@pytest.mark.parametrize("name, case", _cases())
def test_every_attack_gets_its_outcome(name, case):
    data = attack_bytes(name)
    kwargs = {"max_bytes": MAX_BYTES, **case.get("kwargs", {})}
    start = time.perf_counter()
    findings = check(data, **kwargs)
    checked = time.perf_counter() - start
    if "raises" in case:
        cls = exception_class(case["raises"])
        with pytest.raises(cls) as info:
            initrecipe.replay(data, **kwargs)
        assert type(info.value) is cls, f"{name}: {type(info.value).__name__}: {info.value}"
        for fragment in case["messages"]:
            assert fragment in str(info.value), str(info.value)
            assert findings and fragment in findings[0], findings
        assert len(findings) == 1, findings
        if cls is initrecipe.RecipeFormatError:
            assert checked < FORMAT_GUARD_SECONDS, f"{name}: refused in {checked:.2f} s"
    else:
        assert case["replays"] and findings == [], findings
        out = initrecipe.replay(data, **kwargs)
        if "values_sha256" in case:
            assert values_sha256(out) == case["values_sha256"], f"{name}: replayed values changed"


def test_committed_files_are_what_the_generator_writes():
    names = set(GENERATOR.ATTACKS)
    assert names == set(TABLE), "every attack has an outcome and every outcome an attack"
    for name in sorted(names):
        path = ATTACKS / f"{name}.recipe"
        if "sha256" in TABLE[name]:  # built by the test (attack_bytes checks the hash and the size)
            assert not path.exists(), f"{path} is too large to commit"
            continue
        data = GENERATOR.build(name)
        assert len(data) <= GENERATOR.COMMIT_LIMIT, f"{name}: too large to commit; pin its sha256 instead"
        assert path.read_bytes() == data, f"{path} is stale: run tools/make_attacks.py"
    on_disk = {p.stem for p in ATTACKS.glob("*.recipe")}
    assert on_disk <= names, on_disk - names


def test_control_values_are_the_eager_ones():
    out = initrecipe.replay(attack_bytes("mm_small_chain"))
    assert torch.equal(out["out"], torch.ones(64, 64))
    out = initrecipe.replay(attack_bytes("tied_entries"))
    assert len(out) == 28_000 and all(torch.equal(t, torch.full((16,), 99.0)) for t in out.values())
    # Tied names are one tensor, as eager's tied parameters are.
    assert len({t.untyped_storage().data_ptr() for t in out.values()}) == 1
    out = initrecipe.replay(attack_bytes("views_of_one_storage"))
    assert torch.equal(torch.stack([out[f"v.{k}"] for k in range(16_000)]), torch.arange(16_000, dtype=torch.float32))


def test_a_dead_storage_buys_no_budget():
    # With the 100 GiB `empty` dead (never allocated, never returned) the budget is the default
    # minute plus one element's allowance, exactly as without it.
    data = attack_bytes("dead_empty_100gib")
    report = check_report(data, max_bytes=2**50)
    assert report.work is not None and report.work.output_elements == 1
    assert report.work.budget == pytest.approx(60.0 + 1e-7)
    assert report.work.instructions == 3 and report.work.checked == 4


def test_the_work_budget_is_overridable_and_printed(tmp_path, capsys):
    data = attack_bytes("linalg_svd")
    plan = prepare_replay(data, max_work=math.inf)  # plans (allocates nothing) with no limit
    assert plan.work.seconds == pytest.approx(171.8, rel=0.01) and plan.work.budget == math.inf
    path = tmp_path / "svd.recipe"
    path.write_bytes(data)
    from initrecipe.cli import main

    assert main(["check", str(path)]) == 1
    err = capsys.readouterr()
    assert "estimated at 2.86 min of work" in err.out + err.err
    assert main(["check", "--max-work", "200", str(path)]) == 0
    out = capsys.readouterr()
    assert "replay estimated at 2.86 min of work" in out.out + out.err and "budget 3.33 min" in out.out + out.err


PASSES = [name for name, entry in TABLE.items() if any(c.get("passes") for c in entry["cases"])]


@pytest.mark.parametrize("name", PASSES)
def test_every_pass_is_linear_on_a_1mb_file(name):
    data = attack_bytes(name)
    assert 800_000 < len(data) < 1_500_000
    timings = {}

    def timed(label, fn):
        start = time.perf_counter()
        result = fn()
        timings[label] = time.perf_counter() - start
        return result

    recipe = timed("load", lambda: initrecipe.load(data))
    assert timed("check", lambda: check(data, max_bytes=MAX_BYTES)) == []
    summary = timed("show", lambda: summarize(recipe))
    text = timed("show text", summary.text)
    timed("show json", summary.to_json)
    assert str(len(recipe.tensors)) in text
    sliceable = timed("sliceable_names", lambda: sliceable_names(recipe))
    timed("plan", lambda: prepare_replay(recipe, max_bytes=MAX_BYTES))
    shards = {e.name: Shard(0, 0, 1) for e in recipe.tensors if e.shape}
    if shards:
        timed("sharded plan", lambda: iter_replay(recipe, shards=shards, max_bytes=MAX_BYTES))
    if recipe.rng == "portable" and name.startswith("tied"):
        assert len(sliceable) == len(recipe.tensors)
    slow = {k: round(v, 2) for k, v in timings.items() if v > PASS_GUARD_SECONDS}
    assert not slow, f"{name}: passes over the {PASS_GUARD_SECONDS} s guard: {slow} (all: {timings})"

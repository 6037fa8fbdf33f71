"""Huge pages for replay's fresh outputs (initrecipe.support.hugepages): where advised, values unchanged,
peak memory unchanged, silently off where the system or INITRECIPE_HUGE_PAGES says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import initrecipe
from initrecipe.support import hugepages
from initrecipe.program.operators import op_info

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that contains ``address`` (Linux)."""
    with open("/proc/self/smaps", encoding="ascii") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def advised(t: torch.Tensor) -> bool:
    """Whether the kernel marked the middle of ``t`` for huge pages (VmFlags ``hg``)."""
    middle = t.data_ptr() + t.numel() * t.element_size() // 2
    return "hg" in vm_flags(middle)


def expect_advice() -> bool:
    """Whether INITRECIPE_HUGE_PAGES=1 gets advice on this system."""
    return sys.platform.startswith("linux") and hugepages.thp_mode() in ("always", "madvise")


@pytest.fixture
def huge_on(monkeypatch):
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "1")


def test_thp_mode_reads_the_kernel_setting():
    mode = hugepages.thp_mode()
    if not sys.platform.startswith("linux"):
        assert mode == "unavailable"
        return
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            text = f.read()
    except OSError:
        assert mode == "unavailable"
        return
    assert f"[{mode}]" in text


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**47), nbytes=st.integers(0, 64 * MiB))
def test_aligned_interior_stays_inside_and_is_aligned(start, nbytes):
    lo, hi = hugepages.aligned_interior(start, nbytes)
    assert lo % hugepages.HUGE_PAGE == 0 and hi % hugepages.HUGE_PAGE == 0
    if hi > lo:
        assert start <= lo and hi <= start + nbytes
    # Nothing whole is left out: less than a huge page at either end.
    assert lo - start < hugepages.HUGE_PAGE
    assert start + nbytes - max(hi, lo) < hugepages.HUGE_PAGE or hi <= lo
    if nbytes >= hugepages.MIN_BYTES:
        assert hi - lo >= hugepages.HUGE_PAGE


def test_large_fresh_tensor_is_advised_and_unchanged(huge_on):
    # 40 MiB: above glibc's largest dynamic mmap threshold (32 MiB), so a mapping of its own.
    t = hugepages.empty_strided((10 * MiB,), (1,), torch.float32)
    assert advised(t) == expect_advice() == hugepages.enabled()
    t.fill_(0.5)
    assert torch.equal(t, torch.full((10 * MiB,), 0.5))


def test_switch_off_small_tensors_and_other_devices(monkeypatch):
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "0")
    assert not hugepages.enabled()
    t = hugepages.empty_strided((10 * MiB,), (1,), torch.float32)
    assert not hugepages.advise(t) and not advised(t)
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "1")
    assert not hugepages.advise(torch.empty(hugepages.MIN_BYTES // 4 - 1))
    assert not hugepages.advise(torch.empty(10 * MiB, device="meta"))
    assert hugepages.advise(torch.empty(10 * MiB)) == expect_advice()


def test_auto_setting_and_bad_values(monkeypatch):
    system_allows = expect_advice()
    for value in (None, "", "auto", " auto "):
        if value is None:
            monkeypatch.delenv("INITRECIPE_HUGE_PAGES", raising=False)
        else:
            monkeypatch.setenv("INITRECIPE_HUGE_PAGES", value)
        assert hugepages.enabled() == (system_allows and not hugepages.free_page_reporting()), value
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "yes")
    with pytest.raises(initrecipe.RecipeError, match=r"^INITRECIPE_HUGE_PAGES=yes: use 1 \(huge pages for replay's "
                       r"fresh outputs\), 0 \(none\) or auto \(the default: huge pages unless the hypervisor takes "
                       r"freed memory back\)$"):
        hugepages.empty_strided((10 * MiB,), (1,), torch.float32)


def test_free_page_reporting_reads_the_balloon_feature_bit(tmp_path, monkeypatch):
    for name, bits, expected in [("a", "0110010100", True), ("b", "0110000100", False), ("c", "01", False)]:
        device = tmp_path / name / "virtio0"
        device.mkdir(parents=True)
        (device / "features").write_text(bits + "\n")
        monkeypatch.setattr(hugepages, "_BALLOON_FEATURES", str(tmp_path / name / "virtio*" / "features"))
        hugepages.free_page_reporting.cache_clear()
        try:
            assert hugepages.free_page_reporting() is expected, name
        finally:
            hugepages.free_page_reporting.cache_clear()


def test_only_the_empty_factories_are_uninitialized():
    assert op_info("aten.empty.memory_format").uninitialized_factory
    assert op_info("aten.empty_strided.default").uninitialized_factory
    assert op_info("aten.new_empty.default").uninitialized_factory
    assert not op_info("aten.zeros.default").uninitialized_factory
    assert not op_info("aten.normal_.default").uninitialized_factory


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4096, 2304)  # 36 MiB of float32 weight
        self.emb = nn.Embedding(1000, 16)


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_replay_advises_its_outputs_and_keeps_their_bits(rng, monkeypatch):
    recipe = initrecipe.record(Wide, seed=3, rng=rng)
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "0")
    plain = initrecipe.replay(recipe)
    assert not advised(plain["proj.weight"])
    monkeypatch.setenv("INITRECIPE_HUGE_PAGES", "1")
    huge = initrecipe.replay(recipe)
    assert advised(huge["proj.weight"]) == expect_advice()
    assert plain.keys() == huge.keys()
    for name in plain:
        assert torch.equal(plain[name].view(torch.int32), huge[name].view(torch.int32)), name
    if rng == "torch":
        torch.manual_seed(3)
        eager = Wide()
        assert torch.equal(eager.proj.weight.detach().view(torch.int32), huge["proj.weight"].view(torch.int32))


_PEAK = """
import gc, json, sys, torch, initrecipe

def hwm_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

recipe = initrecipe.load(sys.argv[1])
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
before = hwm_kib()
out = initrecipe.replay(recipe)
w = out["proj.weight"]
print(json.dumps({"before": before, "after": hwm_kib(), "sum": float(w.double().sum())}))
"""


@pytest.mark.parametrize("rng", ["torch", "portable"])
def test_huge_pages_do_not_raise_peak_memory(rng, tmp_path):
    path = tmp_path / "wide.recipe"
    initrecipe.record(Wide, seed=5, rng=rng).save(path)
    runs = {}
    for setting in ("1", "0"):
        env = {**os.environ, "INITRECIPE_HUGE_PAGES": setting, "PYTHONPATH": ROOT}
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, env=env,
                              check=True)
        runs[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["1"]["sum"] == runs["0"]["sum"]
    grown = {s: (r["after"] - r["before"]) / 1024 for s, r in runs.items()}  # MiB
    weights = 4096 * 2304 * 4 / MiB
    assert grown["0"] >= weights * 0.9  # the measurement sees the weights at all
    assert grown["1"] <= grown["0"] + 4, grown  # at most two huge pages of rounding

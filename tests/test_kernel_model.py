"""tools/kernel_model.py's pure parts on canned assembly and llvm-mca reports (no gcc, no llvm-mca needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_tool():
    spec = importlib.util.spec_from_file_location("kernel_model", ROOT / "tools" / "kernel_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


km = _load_tool()

# GCC-style AT&T output: a function with a frame, an outer loop of 2 and an inner loop of 3.
NESTED_ASM = """\
\t.p2align 4
\t.globl\tmca_demo_avx2
\t.type\tmca_demo_avx2, @function
mca_demo_avx2:
\tpushq\t%rbp
\tmovq\t%rsp, %rbp
\tandq\t$-32, %rsp
\tsubq\t$96, %rsp
\tvmovdqa\t%ymm0, 32(%rsp)
.L2:
\tvpaddd\t%ymm1, %ymm1, %ymm1
.L3:
\tvpmuludq\t%ymm2, %ymm1, %ymm3   # a comment
\tvmovdqu\t%ymm3, (%rdi)
\taddq\t$32, %rdi
\tcmpq\t%rdi, %rax
\tjne\t.L3
\tvmovss\t%xmm3, 4(%rsi)
\tdecl\t%ecx
\tjne\t.L2
\tvzeroupper
\tleave
\tret
\t.size\tmca_demo_avx2, .-mca_demo_avx2
other:
\tret
\t.size\tother, .-other
"""

MCA_REPORT = """\
Iterations:        200
Instructions:      12000
Total Cycles:      4020
Total uOps:        14000

Dispatch Width:    6
uOps Per Cycle:    3.48
IPC:               2.99
Block RThroughput: 20.0


Instruction Info:
[1]: #uOps
[2]: Latency
[3]: RThroughput
[4]: MayLoad
[5]: MayStore
[6]: HasSideEffects (U)

[1]    [2]    [3]    [4]    [5]    [6]    Instructions:
 1      7     0.50    *                   vmovdqu\t(%rdi), %zmm4
 1      100   0.25                        vbroadcastss\t%xmm0, %ymm2
 1      1     0.50           *            vmovups\t%zmm0, (%rsi)


Resources:
[0]   - SKXDivider
[1]   - SKXPort0
[2]   - SKXPort1
[3]   - SKXPort5


Resource pressure per iteration:
[0]    [1]    [2]    [3]
 -     2.00   1.50   3.00

Resource pressure by instruction:
[0]    [1]    [2]    [3]    Instructions:
 -     1.00   0.50    -     vpternlogq\t$150, %zmm1, %zmm2, %zmm3
 -      -     1.00   1.00   vpaddd\t%ymm1, %ymm2, %ymm3
 -     1.00    -     2.00   vpmuludq\t%zmm1, %zmm2, %zmm3
"""

ZEN_REPORT = MCA_REPORT.replace("SKXPort0", "Zn3FPP0").replace("SKXPort1", "Zn3FPP1").replace("SKXPort5", "Zn3FPP2")


def test_function_body_keeps_instructions_and_labels_only():
    body = km.function_body(NESTED_ASM, "mca_demo_avx2")
    assert body[0] == "\tpushq\t%rbp"
    assert body[-1] == "\tret"
    assert ".L2:" in body and ".L3:" in body
    assert all(".size" not in line and ".p2align" not in line and "#" not in line for line in body)
    assert km.function_body(NESTED_ASM, "other") == ["\tret"]
    with pytest.raises(km.ModelError, match="not found"):
        km.function_body(NESTED_ASM, "missing")


def test_strip_frame_removes_prologue_epilogue_and_ret():
    body, removed = km.strip_frame(km.function_body(NESTED_ASM, "mca_demo_avx2"))
    assert [line.split()[0] for line in removed] == ["pushq", "movq", "andq", "subq", "vzeroupper", "leave", "ret"]
    assert "\tvmovdqa\t%ymm0, 32(%rsp)" in body  # a spill is work, not frame
    assert "\taddq\t$32, %rdi" in body


def test_operands_keep_commas_inside_memory_references():
    assert km.operands("\tvmovups\t%ymm0, 32(%rdi,%rax,4)") == ["%ymm0", "32(%rdi,%rax,4)"]
    assert km.operands("\tret") == []


def test_loops_are_found_and_written_out_with_their_trip_counts():
    body, _ = km.strip_frame(km.function_body(NESTED_ASM, "mca_demo_avx2"))
    loops = km.find_loops(body)
    assert [(body[loop.start], body[loop.end].split()[0]) for loop in loops] == [(".L2:", "jne"), (".L3:", "jne")]
    trace = km.unroll_loops(body, (2, 3))
    assert sum("vpmuludq" in line for line in trace) == 6
    assert sum("vpaddd" in line for line in trace) == 2
    assert sum("decl" in line for line in trace) == 2
    assert not any(km.LABEL.match(line) for line in trace)
    assert trace[0] == "\tvmovdqa\t%ymm0, 32(%rsp)"
    with pytest.raises(km.ModelError, match="expected 1 loop"):
        km.unroll_loops(body, (2,))


def test_straight_line_code_needs_no_trips_and_forward_jumps_are_refused():
    assert km.unroll_loops(["\tvpaddd\t%ymm1, %ymm1, %ymm1", ".L9:", "\tvmovdqu\t%ymm1, (%rdi)"], ()) == [
        "\tvpaddd\t%ymm1, %ymm1, %ymm1", "\tvmovdqu\t%ymm1, (%rdi)"]
    with pytest.raises(km.ModelError, match="forward jump"):
        km.find_loops(["\tje\t.L7", "\tvpaddd\t%ymm1, %ymm1, %ymm1", ".L7:"])
    with pytest.raises(km.ModelError, match="indirect jump"):
        km.find_loops(["\tjmp\t*%rax"])


def test_output_bytes_count_stores_outside_the_stack_frame():
    body, _ = km.strip_frame(km.function_body(NESTED_ASM, "mca_demo_avx2"))
    assert km.output_bytes(km.unroll_loops(body, (2, 3))) == 6 * 32 + 2 * 4
    assert km.store_bytes("\tvmovdqu64\t%zmm4, 832(%rdx)") == 64
    assert km.store_bytes("\tmovups\t%xmm1, -48(%rax)") == 16
    assert km.store_bytes("\tvmovaps\t%ymm1, 64(%rsp)") == 0  # spill
    assert km.store_bytes("\tvmovdqu\t(%rdi), %ymm4") == 0  # load
    with pytest.raises(km.ModelError, match="cannot size"):
        km.store_bytes("\tmovw\t%ax, (%rdi)")


def test_parse_mca_summary():
    summary = km.parse_mca_summary(MCA_REPORT)
    assert summary == km.McaSummary(iterations=200, instructions=12000, total_cycles=4020, total_uops=14000,
                                    block_rthroughput=20.0)
    assert summary.cycles_per_iteration == pytest.approx(20.1)
    with pytest.raises(km.ModelError, match="lacks"):
        km.parse_mca_summary("Iterations: 10\n")


def test_placeholder_latencies_are_reported():
    assert km.unmodelled_instructions(MCA_REPORT) == ["vbroadcastss %xmm0, %ymm2"]
    assert km.instruction_text(" 1      7     0.50    *      *      U     vmovdqu\t(%rdi), %zmm4") == "vmovdqu (%rdi), %zmm4"


def test_resource_pressure_and_the_port1_closed_bound():
    assert km.resources(MCA_REPORT) == {0: "SKXDivider", 1: "SKXPort0", 2: "SKXPort1", 3: "SKXPort5"}
    rows = km.pressure_by_instruction(MCA_REPORT)
    assert rows[0] == ([0.0, 1.0, 0.5, 0.0], "vpternlogq\t$150, %zmm1, %zmm2, %zmm3")
    assert km.wide_ops_on_port1(MCA_REPORT) == pytest.approx(0.5)
    # ports 0 and 5 (1 + 0 + 1 + 1 + 0 + 2) plus the 512-bit port-1 work (0.5), over two ports
    assert km.port05_bound(MCA_REPORT) == pytest.approx(2.75)
    assert km.wide_ops_on_port1(ZEN_REPORT) is None
    assert km.port05_bound(ZEN_REPORT) is None


def test_piece_model_per_word_figures():
    piece = km.PIECES[0]
    model = km.model_piece(MCA_REPORT, piece, instructions=60, loops=0)
    assert model.cycles_per_word == pytest.approx(20.1 / piece.words)
    assert model.port1_closed_cycles_per_word == pytest.approx(20.1 / piece.words)  # the bound is lower
    slower = km.PieceModel("philox", 256, 1, 0, 100.0, 50.0, (), 10.0, 130.0)
    assert slower.port1_closed_cycles_per_word == pytest.approx(130.0 / 256)


def test_totals_and_ratios():
    per_word = {"philox": 1.0, "central": 2.0, "uniform": 0.5}
    totals = km.path_totals(per_word)
    assert totals == {"philox": 1.0, "central": 2.0, "tf_uniform": 0.5, "normal": 3.0, "uniform": 1.5}
    doubled = km.path_totals({name: 2 * value for name, value in per_word.items()})
    assert km.avx2_ratios({"avx512f": totals, "avx2": doubled}) == {"normal": 2.0, "uniform": 2.0}
    assert km.avx2_ratios({"avx2": doubled}) == {}


def test_harness_wraps_every_piece_of_every_define_variant_line():
    source = "#define DEFINE_VARIANT(A, B, C, D, E) x\nDEFINE_VARIANT(avx2, IR_AVX2, pg_avx2, pq_avx2, central_v8)\n"
    variants = km.read_variants(source)
    assert variants == [km.Variant("avx2", "IR_AVX2", "pq_avx2", "central_v8")]
    harness = km.harness_source(Path("/k/kernel.c"), variants)
    assert '#include "/k/kernel.c"' in harness
    assert "IR_AVX2 IR_NOINLINE void mca_philox_avx2(" in harness and "pq_avx2(b0, ks, out);" in harness
    assert "central_v8(w, out, mean, std, 384);" in harness
    assert "tf_uniform(w, out, low, range);" in harness
    with pytest.raises(km.ModelError, match="DEFINE_VARIANT"):
        km.read_variants("nothing here")


def test_the_kernel_source_and_setup_py_are_read_as_the_tool_expects():
    names = [variant.name for variant in km.read_variants(km.KERNEL_SOURCE.read_text())]
    assert set(names) == {"generic", "avx2", "avx512f"}
    flags = km.setup_py_flags(km.SETUP_PY)
    assert "-O3" in flags and "-ffp-contract=off" in flags


def test_missing_tools_fail_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(km.shutil, "which", lambda name: None)
    assert km.main(["--cpus", "znver3"]) == 1
    assert "gcc not found on PATH" in capsys.readouterr().err

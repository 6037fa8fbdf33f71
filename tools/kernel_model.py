"""A static throughput model of the portable kernel's x86 paths on CPUs we cannot run, from llvm-mca.

    python tools/kernel_model.py [--cpus skylake-avx512,znver3] [--iterations 200] [--json OUT] [--keep DIR]

Everything this prints is a *model* (llvm-mca's scheduling tables), not a measurement.  It builds a
small harness that includes ``initrecipe/rng/portable/_portable_kernel.c`` and defines, per kernel
path (the ``DEFINE_VARIANT`` lines of the source: generic, avx2, avx512f), one out-of-line function
per piece of the superblock drivers' work:

* philox: the Philox words of one quad (``philox_quad_<path>``, 256 words);
* central: the normal transform's central pass over 384 words (the path's central function,
  ``normal_central_n_wide`` or ``normal_central_n_v8``; 384 is a multiple of both batch sizes,
  128 and 96 lanes, so neither path runs its remainder code, as in a whole superblock);
* uniform: the uniform transform of one group (``tf_uniform``, 64 words).

The harness is compiled to assembly with setup.py's flags; each function's body, less its stack
frame set-up, ``vzeroupper`` and ``ret``, goes through ``llvm-mca -mcpu=CPU -iterations=N``, and
"Total Cycles" / (N * words) is the predicted cycles per output word.  A loop the compiler kept
(GCC 12 keeps ``philox_quad_avx2``'s four groups and the generic Philox as loops) is written out
as many times as it runs (``LOOP_TRIPS``); a check that the modelled instructions store exactly the
piece's output bytes guards those counts.  The totals are normal = philox + central (the rare tail
fix-up, about 2% of 16-lane blocks, is left out) and uniform = philox + uniform.  The avx512f path
is modelled only where llvm-mca's CPU accepts AVX-512 instructions.

Warnings: instructions a CPU model gives LLVM's placeholder latency (100, "not modelled") are
named, since they inflate that piece.  LLVM's Intel models let some 512-bit uops issue on port 1,
which real Skylake-SP / Ice Lake cores close while 512-bit uops are in flight; for those the tool
also prints the avx512f figures re-bounded by ports 0 and 5 alone ("port 1 closed").
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
KERNEL_SOURCE = REPO / "initrecipe" / "rng" / "portable" / "_portable_kernel.c"
SETUP_PY = REPO / "setup.py"

DEFAULT_CPUS = ("skylake-avx512", "cascadelake", "icelake-server", "sapphirerapids", "znver2", "znver3")
DEFAULT_ITERATIONS = 200
# As setuptools adds for an extension module; the rest comes from setup.py's UNIX_FLAGS.
EXTRA_FLAGS = ("-fPIC", "-S", "-fno-asynchronous-unwind-tables")
AVX512_PROBE = "vpaddd %zmm0, %zmm1, %zmm2\n"


class ModelError(RuntimeError):
    """The model cannot be built or run (missing tool, unexpected assembly, llvm-mca failure)."""


# ---------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One kernel path as its DEFINE_VARIANT line instantiates it."""

    name: str
    attribute: str
    philox_quad: str
    central: str


@dataclass(frozen=True)
class Piece:
    """A straight-line piece of the superblock drivers' work, wrapped in one harness function."""

    name: str
    words: int
    parameters: str
    call: str  # a format string over a Variant's fields

    def function(self, variant: Variant) -> str:
        return f"mca_{self.name}_{variant.name}"


PIECES = (
    Piece("philox", 256, "uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict out",
          "{philox_quad}(b0, ks, out);"),
    Piece("central", 384, "const uint32_t *restrict w, float *restrict out, float mean, float std",
          "{central}(w, out, mean, std, 384);"),
    Piece("uniform", 64, "const uint32_t *restrict w, float *restrict out, float low, float range",
          "tf_uniform(w, out, low, range);"),
)

# Loops GCC 12 keeps in a harness function, outermost first in source order, with their trip
# counts: philox_quad_avx2 and philox_quad_generic run four groups in a loop, and the generic
# group's 16 blocks are vectorised four (SSE2 lanes) per iteration; the central pass over 384
# words runs 128 lanes per iteration (avx512f, generic) or 96 (avx2).
LOOP_TRIPS: dict[tuple[str, str], tuple[int, ...]] = {
    ("philox", "avx2"): (4,),
    ("philox", "generic"): (4, 4),
    ("central", "avx512f"): (3,),
    ("central", "avx2"): (4,),
    ("central", "generic"): (3,),
}

DEFINE_VARIANT_LINE = re.compile(r"^DEFINE_VARIANT\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)",
                                 re.MULTILINE)


def read_variants(source: str) -> list[Variant]:
    """The kernel paths the source instantiates, from its DEFINE_VARIANT lines."""
    variants = [Variant(name, attribute, philox_quad, central)
                for name, attribute, _philox, philox_quad, central in DEFINE_VARIANT_LINE.findall(source)]
    if not variants:
        raise ModelError("no DEFINE_VARIANT(...) line found in the kernel source")
    return variants


def harness_source(kernel: Path, variants: Iterable[Variant]) -> str:
    """C source that includes the kernel and wraps every piece of every path in a noinline function."""
    lines = [f'#include "{kernel.resolve()}"', ""]
    for variant in variants:
        for piece in PIECES:
            call = piece.call.format(**asdict(variant))
            lines.append(f"{variant.attribute} IR_NOINLINE void {piece.function(variant)}({piece.parameters})")
            lines.append(f"{{ {call} }}")
        lines.append("")
    return "\n".join(lines)


def setup_py_flags(setup_py: Path) -> list[str]:
    """setup.py's UNIX_FLAGS, read without running setup.py."""
    for node in ast.parse(setup_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "UNIX_FLAGS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ModelError(f"no UNIX_FLAGS assignment in {setup_py}")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ModelError(f"{name} not found on PATH: the model needs gcc (to build the harness) and llvm-mca")
    return path


def compile_to_assembly(c_file: Path, asm_file: Path, flags: Sequence[str]) -> None:
    include = sysconfig.get_paths()["include"]
    command = [require_tool("gcc"), *flags, *EXTRA_FLAGS, f"-I{include}", str(c_file), "-o", str(asm_file)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelError(f"compiling the harness failed: {' '.join(command)}\n{done.stderr}")


def gcc_version() -> str:
    return subprocess.run([require_tool("gcc"), "--version"], capture_output=True, text=True).stdout.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# Assembly bodies (AT&T syntax, as GCC writes it)
# ---------------------------------------------------------------------------------------------

LABEL = re.compile(r"^\s*([.\w$]+):\s*$")
JUMP = re.compile(r"^\s*(j[a-z]+)\s+([.\w$]+)\s*$")
FRAME_REGISTERS = ("%rsp", "%rbp")


def function_body(assembly: str, name: str) -> list[str]:
    """The instruction and label lines of function ``name``, from its label to its ``.size``."""
    lines = assembly.splitlines()
    try:
        start = lines.index(f"{name}:")
    except ValueError:
        raise ModelError(f"function {name} not found in the assembly") from None
    body = []
    for line in lines[start + 1:]:
        text = line.split("#", 1)[0].rstrip()
        if text.strip().startswith(".size"):
            return body
        if not text.strip() or (text.strip().startswith(".") and not LABEL.match(text)):
            continue  # blank, comment or directive
        body.append(text)
    raise ModelError(f"function {name} has no .size directive: truncated assembly?")


def mnemonic(line: str) -> str:
    parts = line.split()
    return parts[0] if parts else ""


def operands(line: str) -> list[str]:
    """The comma-separated operands of an AT&T instruction (commas inside parentheses kept)."""
    rest = line.strip()[len(mnemonic(line)):].strip()
    found, depth, current = [], 0, ""
    for char in rest:
        if char == "," and depth == 0:
            found.append(current.strip())
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    if current.strip():
        found.append(current.strip())
    return found


def is_frame_instruction(line: str) -> bool:
    """Stack-frame set-up and tear-down, the return, and vzeroupper: call overhead, not work."""
    op = mnemonic(line)
    if op in ("ret", "retq", "leave", "leaveq", "vzeroupper") or op.startswith(("push", "pop")):
        return True
    args = operands(line)
    if op.startswith(("sub", "add", "and")) and args and args[-1] == "%rsp":
        return True
    return op.startswith("mov") and args == ["%rsp", "%rbp"]


def strip_frame(body: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the body without its frame instructions, the frame instructions removed)."""
    kept = [line for line in body if not is_frame_instruction(line)]
    removed = [line for line in body if is_frame_instruction(line)]
    return kept, removed


@dataclass(frozen=True)
class Loop:
    """Lines start (the loop's label) to end (its backward jump), inclusive."""

    start: int
    end: int


def find_loops(body: Sequence[str]) -> list[Loop]:
    """Every backward jump's loop, in order of their labels; any other jump is an error."""
    labels: dict[str, int] = {}
    loops = []
    for index, line in enumerate(body):
        label = LABEL.match(line)
        if label:
            labels[label.group(1)] = index
            continue
        jump = JUMP.match(line)
        if jump is None and mnemonic(line).startswith("j"):
            raise ModelError(f"indirect jump, the body is not straight-line: {line.strip()}")
        if jump is not None:
            target = jump.group(2)
            if target not in labels:
                raise ModelError(f"forward jump, the body is not straight-line: {line.strip()}")
            loops.append(Loop(labels[target], index))
    loops.sort(key=lambda loop: loop.start)
    for index, outer in enumerate(loops):
        for inner in loops[index + 1:]:
            if inner.start == outer.start or outer.start < inner.start <= outer.end < inner.end:
                raise ModelError(f"loops that share a label or overlap: lines {outer.start}-{outer.end} "
                                 f"and {inner.start}-{inner.end}")
    return loops


def unroll_loops(body: Sequence[str], trips: Sequence[int]) -> list[str]:
    """The instructions as they execute: every loop written out ``trips`` times, labels dropped.

    ``trips`` holds one count per loop, outermost first in source order (the order of the loops'
    labels).  Straight-line code, with no loops and no trips, comes back without its labels.
    """
    loops = find_loops(body)
    if len(loops) != len(trips):
        found = ", ".join(f"lines {loop.start}-{loop.end}" for loop in loops) or "none"
        raise ModelError(f"expected {len(trips)} loop(s), found {len(loops)} ({found})")
    trip_of = {loop.start: (loop, trip) for loop, trip in zip(loops, trips)}

    def expand(first: int, last: int) -> list[str]:
        out: list[str] = []
        index = first
        while index <= last:
            if index in trip_of:
                loop, trip = trip_of[index]
                out.extend(expand(loop.start + 1, loop.end) * trip)
                index = loop.end + 1
                continue
            if not LABEL.match(body[index]):
                out.append(body[index])
            index += 1
        return out

    return expand(0, len(body) - 1)


STORE_BYTES_BY_REGISTER = {"%xmm": 16, "%ymm": 32, "%zmm": 64}
SCALAR_STORE_BYTES = {"movss": 4, "vmovss": 4, "movd": 4, "vmovd": 4, "movl": 4, "movsd": 8, "vmovsd": 8,
                      "movq": 8, "vmovq": 8}


def store_bytes(line: str) -> int:
    """Bytes a store instruction writes outside the stack frame (0 for anything else)."""
    op = mnemonic(line)
    args = operands(line)
    if not op.startswith(("mov", "vmov")) or len(args) < 2 or "(" not in args[-1]:
        return 0
    if any(register in args[-1] for register in FRAME_REGISTERS):
        return 0  # a spill
    if op in SCALAR_STORE_BYTES:
        return SCALAR_STORE_BYTES[op]
    for prefix, size in STORE_BYTES_BY_REGISTER.items():
        if args[-2].startswith(prefix):
            return size
    raise ModelError(f"cannot size the store {line.strip()}")


def output_bytes(instructions: Iterable[str]) -> int:
    """Bytes stored through pointers other than the stack and frame pointers."""
    return sum(store_bytes(line) for line in instructions)


def modelled_instructions(assembly: str, piece: Piece, variant: Variant) -> tuple[list[str], int]:
    """(the piece's instructions as they execute, without the frame; the number of loops written out)."""
    body, _frame = strip_frame(function_body(assembly, piece.function(variant)))
    trips = LOOP_TRIPS.get((piece.name, variant.name), ())
    instructions = unroll_loops(body, trips)
    stored = output_bytes(instructions)
    if stored != 4 * piece.words:
        raise ModelError(f"{piece.function(variant)}: the modelled instructions store {stored} bytes of output, "
                         f"not {4 * piece.words}: do LOOP_TRIPS {trips} still match the compiler's loops?")
    return instructions, len(trips)


# ---------------------------------------------------------------------------------------------
# llvm-mca
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McaSummary:
    """The summary block of one llvm-mca report."""

    iterations: int
    instructions: int
    total_cycles: int
    total_uops: int
    block_rthroughput: float

    @property
    def cycles_per_iteration(self) -> float:
        return self.total_cycles / self.iterations


SUMMARY_FIELDS = {
    "Iterations": "iterations",
    "Instructions": "instructions",
    "Total Cycles": "total_cycles",
    "Total uOps": "total_uops",
    "Block RThroughput": "block_rthroughput",
}


def parse_mca_summary(report: str) -> McaSummary:
    """The summary of an llvm-mca report (the first of each field, i.e. of the first code region)."""
    found: dict[str, float] = {}
    for line in report.splitlines():
        key, _, value = line.partition(":")
        field = SUMMARY_FIELDS.get(key.strip())
        if field is not None and field not in found and value.strip():
            found[field] = float(value.strip())
    missing = sorted(set(SUMMARY_FIELDS.values()) - set(found))
    if missing:
        raise ModelError(f"llvm-mca's report lacks {', '.join(missing)}")
    return McaSummary(
        iterations=int(found["iterations"]),
        instructions=int(found["instructions"]),
        total_cycles=int(found["total_cycles"]),
        total_uops=int(found["total_uops"]),
        block_rthroughput=found["block_rthroughput"],
    )


UNMODELLED_LATENCY = 100  # the latency LLVM's scheduling models give an instruction they do not model
RESOURCE_LINE = re.compile(r"^\[(\d+)\]\s+-\s+(\S+)\s*$")


def table_rows(report: str, title: str) -> list[str]:
    """The rows of the llvm-mca table headed ``title``: after its "... Instructions:" column line, up to a blank line."""
    lines = report.splitlines()
    if title not in lines:
        return []
    start = lines.index(title)
    header = next((index for index in range(start + 1, len(lines)) if lines[index].rstrip().endswith("Instructions:")),
                  None)
    if header is None:
        return []
    rows = []
    for line in lines[header + 1:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def instruction_text(row: str) -> str:
    """The instruction at the end of an Instruction Info row (after the numeric and flag columns)."""
    fields = row.split()
    index = 3
    while index < len(fields) and fields[index] in ("*", "U"):
        index += 1
    return " ".join(fields[index:])


def unmodelled_instructions(report: str) -> list[str]:
    """Instructions the report's Instruction Info gives LLVM's placeholder latency (not modelled)."""
    found = []
    for row in table_rows(report, "Instruction Info:"):
        fields = row.split()
        if len(fields) > 3 and fields[1].isdigit() and int(fields[1]) >= UNMODELLED_LATENCY:
            found.append(instruction_text(row))
    return found


def resources(report: str) -> dict[int, str]:
    """llvm-mca's resource (port) names by column index."""
    names = {}
    for line in report.splitlines():
        match = RESOURCE_LINE.match(line)
        if match:
            names[int(match.group(1))] = match.group(2)
    return names


def pressure_by_instruction(report: str) -> list[tuple[list[float], str]]:
    """(pressure per resource column, instruction) for every row of 'Resource pressure by instruction'."""
    width = len(resources(report))
    rows = []
    for row in table_rows(report, "Resource pressure by instruction:"):
        fields = row.split(None, width)
        if len(fields) <= width:
            continue
        pressure = [0.0 if value == "-" else float(value) for value in fields[:width]]
        rows.append((pressure, fields[width].strip()))
    return rows


def port_column(names: dict[int, str], port: str) -> int | None:
    """The column of the resource named like ``...Port1`` (Intel models), or None."""
    return next((index for index, name in names.items() if name.endswith(port)), None)


def wide_ops_on_port1(report: str) -> float | None:
    """Per iteration, the port-1 pressure the model gives instructions on 512-bit registers.

    Real Skylake-SP / Ice Lake cores close port 1 to vector work while 512-bit uops are in flight;
    None where the model has no Port0/Port1/Port5 (non-Intel models).
    """
    names = resources(report)
    port1 = port_column(names, "Port1")
    if port1 is None or port_column(names, "Port0") is None or port_column(names, "Port5") is None:
        return None
    return sum(pressure[port1] for pressure, text in pressure_by_instruction(report) if "%zmm" in text)


def port05_bound(report: str) -> float | None:
    """Cycles per iteration if the 512-bit work the model puts on port 1 went to ports 0 and 5 instead."""
    names = resources(report)
    columns = [port_column(names, port) for port in ("Port0", "Port1", "Port5")]
    if None in columns:
        return None
    port0, port1, port5 = (column for column in columns if column is not None)
    load = 0.0
    for pressure, text in pressure_by_instruction(report):
        load += pressure[port0] + pressure[port5] + (pressure[port1] if "%zmm" in text else 0.0)
    return load / 2


def run_mca(asm_file: Path, cpu: str, iterations: int) -> subprocess.CompletedProcess[str]:
    command = [require_tool("llvm-mca"), f"-mcpu={cpu}", f"-iterations={iterations}", str(asm_file)]
    return subprocess.run(command, capture_output=True, text=True)


def mca_report(asm_file: Path, cpu: str, iterations: int) -> str:
    done = run_mca(asm_file, cpu, iterations)
    if done.returncode != 0:
        raise ModelError(f"llvm-mca -mcpu={cpu} failed on {asm_file}:\n{done.stderr.strip()}")
    return done.stdout


def cpu_has_avx512(cpu: str, workdir: Path) -> bool:
    """Whether llvm-mca's model of ``cpu`` accepts an AVX-512 instruction."""
    probe = workdir / "avx512_probe.s"
    probe.write_text(AVX512_PROBE)
    return run_mca(probe, cpu, 1).returncode == 0


def mca_version() -> str:
    done = subprocess.run([require_tool("llvm-mca"), "--version"], capture_output=True, text=True)
    version = [line.strip() for line in done.stdout.splitlines() if "version" in line.lower()]
    return version[0] if version else done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PieceModel:
    """One piece of one path on one CPU model."""

    piece: str
    words: int
    instructions: int
    loops_written_out: int
    cycles_per_call: float
    block_rthroughput: float
    unmodelled: tuple[str, ...]  # instructions with LLVM's placeholder latency
    zmm_port1_per_call: float | None  # Intel models only
    port05_cycles_per_call: float | None  # Intel models only: the port 0 + port 5 bound with port 1 closed

    @property
    def cycles_per_word(self) -> float:
        return self.cycles_per_call / self.words

    @property
    def port1_closed_cycles_per_word(self) -> float:
        """Cycles per word with the model's 512-bit port-1 work moved to ports 0 and 5 (at least the model's)."""
        bound = self.port05_cycles_per_call if self.zmm_port1_per_call else None
        return max(self.cycles_per_call, bound or 0.0) / self.words


def model_piece(report: str, piece: Piece, instructions: int, loops: int) -> PieceModel:
    summary = parse_mca_summary(report)
    return PieceModel(
        piece=piece.name, words=piece.words, instructions=instructions, loops_written_out=loops,
        cycles_per_call=summary.cycles_per_iteration, block_rthroughput=summary.block_rthroughput,
        unmodelled=tuple(unmodelled_instructions(report)),
        zmm_port1_per_call=wide_ops_on_port1(report), port05_cycles_per_call=port05_bound(report),
    )


def path_totals(per_word: dict[str, float]) -> dict[str, float]:
    """Cycles per word: philox, central, tf_uniform, normal = philox + central, uniform = philox + tf_uniform."""
    return {
        "philox": per_word["philox"],
        "central": per_word["central"],
        "tf_uniform": per_word["uniform"],
        "normal": per_word["philox"] + per_word["central"],
        "uniform": per_word["philox"] + per_word["uniform"],
    }


def avx2_ratios(paths: dict[str, dict[str, float]]) -> dict[str, float]:
    """avx2 cycles per word over avx512f's (= avx512f samples/s over avx2's), normal and uniform."""
    if "avx2" not in paths or "avx512f" not in paths:
        return {}
    return {kind: paths["avx2"][kind] / paths["avx512f"][kind] for kind in ("normal", "uniform")}


@dataclass
class CpuModel:
    """Every modelled path on one -mcpu."""

    cpu: str
    avx512: bool
    pieces: dict[str, dict[str, PieceModel]]

    def cycles_per_word(self, port1_closed: bool = False) -> dict[str, dict[str, float]]:
        def figure(model: PieceModel) -> float:
            return model.port1_closed_cycles_per_word if port1_closed else model.cycles_per_word

        return {variant: path_totals({name: figure(m) for name, m in by_piece.items()})
                for variant, by_piece in self.pieces.items()}

    def port1_matters(self) -> bool:
        return any(m.zmm_port1_per_call for by_piece in self.pieces.values() for m in by_piece.values())

    def to_json(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "avx512": self.avx512,
            "cycles_per_word": self.cycles_per_word(),
            "avx2_over_avx512f": avx2_ratios(self.cycles_per_word()),
            "cycles_per_word_port1_closed": self.cycles_per_word(port1_closed=True) if self.port1_matters() else None,
            "avx2_over_avx512f_port1_closed": (avx2_ratios(self.cycles_per_word(port1_closed=True))
                                               if self.port1_matters() else None),
            "pieces": {variant: {name: {**asdict(m), "cycles_per_word": m.cycles_per_word}
                                 for name, m in by_piece.items()}
                       for variant, by_piece in self.pieces.items()},
        }


@dataclass(frozen=True)
class PreparedPiece:
    """A piece's modelled instructions, written to their own .s file."""

    path: Path
    instructions: int
    loops: int


def prepare_pieces(workdir: Path) -> dict[str, dict[str, PreparedPiece]]:
    """Build the harness, and write each piece's modelled instructions to its own .s file."""
    variants = read_variants(KERNEL_SOURCE.read_text())
    c_file, asm_file = workdir / "harness.c", workdir / "harness.s"
    c_file.write_text(harness_source(KERNEL_SOURCE, variants))
    compile_to_assembly(c_file, asm_file, setup_py_flags(SETUP_PY))
    assembly = asm_file.read_text()
    prepared: dict[str, dict[str, PreparedPiece]] = {}
    for variant in variants:
        prepared[variant.name] = {}
        for piece in PIECES:
            instructions, loops = modelled_instructions(assembly, piece, variant)
            path = workdir / f"{piece.function(variant)}.s"
            path.write_text("\n".join(instructions) + "\n")
            prepared[variant.name][piece.name] = PreparedPiece(path, len(instructions), loops)
    return prepared


def model_cpu(cpu: str, prepared: dict[str, dict[str, PreparedPiece]], iterations: int, workdir: Path) -> CpuModel:
    """Every path's pieces through llvm-mca's model of one CPU (avx512f only where it has AVX-512)."""
    avx512 = cpu_has_avx512(cpu, workdir)
    pieces: dict[str, dict[str, PieceModel]] = {}
    for variant, by_piece in prepared.items():
        if variant == "avx512f" and not avx512:
            continue
        pieces[variant] = {}
        for piece in PIECES:
            ready = by_piece[piece.name]
            report = mca_report(ready.path, cpu, iterations)
            pieces[variant][piece.name] = model_piece(report, piece, ready.instructions, ready.loops)
    return CpuModel(cpu, avx512, pieces)


PATH_ORDER = ("avx512f", "avx2", "generic")


def format_table(paths: dict[str, dict[str, float]]) -> list[str]:
    rows = [f"  {'path':<8} {'philox':>8} {'central':>8} {'tf_unif':>8} {'normal':>8} {'uniform':>8}   cycles/word"]
    for variant in PATH_ORDER:
        if variant in paths:
            c = paths[variant]
            rows.append(f"  {variant:<8} {c['philox']:8.3f} {c['central']:8.3f} {c['tf_uniform']:8.3f} "
                        f"{c['normal']:8.3f} {c['uniform']:8.3f}")
    return rows


def format_ratios(label: str, ratios: dict[str, float]) -> str:
    return f"  {label}: normal {ratios['normal']:.2f}x, uniform {ratios['uniform']:.2f}x"


def format_cpu(model: CpuModel) -> str:
    """One CPU's table, ratios and warnings."""
    rows = [f"-mcpu={model.cpu} (model)"] + format_table(model.cycles_per_word())
    ratios = avx2_ratios(model.cycles_per_word())
    rows.append(format_ratios("avx2/avx512f", ratios) if ratios else "  avx2/avx512f: no AVX-512 in this CPU model")
    if model.port1_matters():
        closed = model.cycles_per_word(port1_closed=True)["avx512f"]
        rows.append(f"  with port 1 closed to 512-bit uops (as on real Skylake-SP/Ice Lake): avx512f philox "
                    f"{closed['philox']:.3f}, normal {closed['normal']:.3f}, uniform {closed['uniform']:.3f}")
        rows.append(format_ratios("avx2/avx512f, port 1 closed", avx2_ratios(model.cycles_per_word(port1_closed=True))))
    for variant in PATH_ORDER:
        for name, piece in model.pieces.get(variant, {}).items():
            if piece.unmodelled:
                rows.append(f"  WARNING {variant} {name}: latency-{UNMODELLED_LATENCY} placeholder (not modelled) "
                            f"for {'; '.join(sorted(set(piece.unmodelled)))}: its figure is inflated")
    return "\n".join(rows)


def format_loops(prepared: dict[str, dict[str, PreparedPiece]]) -> str:
    kept = [f"{piece} ({variant}): trips {LOOP_TRIPS[(piece, variant)]}"
            for variant, by_piece in prepared.items() for piece, ready in by_piece.items() if ready.loops]
    return "; ".join(kept) if kept else "none: every piece is straight-line"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="comma-separated llvm-mca -mcpu names")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="llvm-mca -iterations")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    parser.add_argument("--keep", metavar="DIR", help="keep the harness, its assembly and the pieces' .s files here")
    args = parser.parse_args(argv)
    cpus = [cpu.strip() for cpu in args.cpus.split(",") if cpu.strip()]
    try:
        require_tool("gcc")
        require_tool("llvm-mca")
        with tempfile.TemporaryDirectory(prefix="kernel_model_") as scratch:
            workdir = Path(args.keep) if args.keep else Path(scratch)
            workdir.mkdir(parents=True, exist_ok=True)
            prepared = prepare_pieces(workdir)
            print(f"MODEL, not a measurement: llvm-mca ({mca_version()}), -iterations={args.iterations}; "
                  f"harness built by {gcc_version()} with setup.py's flags")
            print(f"loops the compiler kept, written out: {format_loops(prepared)}")
            print("normal = philox + central (the ~2% tail fix-up is left out), uniform = philox + tf_uniform")
            models = []
            for cpu in cpus:
                models.append(model_cpu(cpu, prepared, args.iterations, workdir))
                print()
                print(format_cpu(models[-1]))
    except ModelError as error:
        print(f"kernel_model: {error}", file=sys.stderr)
        return 1
    if args.json:
        report = {"kind": "model (llvm-mca), not a measurement", "llvm_mca_version": mca_version(),
                  "compiler": gcc_version(), "iterations": args.iterations,
                  "loop_trips": {f"{piece}/{variant}": trips for (piece, variant), trips in LOOP_TRIPS.items()},
                  "cpus": [model.to_json() for model in models]}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

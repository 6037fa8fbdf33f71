"""Write ``tests/attacks/``: one crafted (hostile) recipe per attack class.

Usage: python tools/make_attacks.py [--out tests/attacks] [--check]

Every file is built by hand, the way an attacker would write it: the document is assembled field by
field, the content hash is recomputed as ``schema/FORMAT.md`` section 8 specifies (sha256 of the
canonical msgpack of the nine body fields) with plain ``msgpack`` and ``hashlib``, and the bytes are
packed with plain ``msgpack`` (or, for the msgpack-level attacks, written byte by byte).  Nothing
here uses initrecipe's writer, so the corpus tests the reader, not the writer.

The outcome each file must get (an exception class and a message fragment, or ``replays``) is in
``tests/attacks/outcomes.json``, which ``tests/test_attacks.py`` asserts.  Files larger than
:data:`COMMIT_LIMIT` bytes (the 10^6-instruction program, the ~1 MB tie and view files) are not
committed: the test builds them with :func:`build` and checks their sha256 against
``outcomes.json``, so they are pinned as exactly as the committed ones.

``--check`` rebuilds every file and fails if any differs from what is on disk (or pinned).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

import msgpack

KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")
COMMIT_LIMIT = 64 * 1024
"""Files up to this size are committed under tests/attacks/; larger ones are built by the test."""
PRODUCER = {"attacker": "tools/make_attacks.py"}
CPU = {"device": {"device": "cpu"}}
F32 = {"dtype": "float32"}


def pack(obj: Any) -> bytes:
    """Canonical msgpack (``schema/FORMAT.md`` section 1): bin type for bytes, float64 for floats."""
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False)


def finish(body: dict[str, Any]) -> bytes:
    """The file for a document body: the hash recomputed as FORMAT.md section 8 says, appended last."""
    body = {k: body[k] for k in KEYS}
    digest = "sha256:" + hashlib.sha256(pack(body)).hexdigest()
    return pack({**body, "hash": digest})


class Program:
    """A recipe document assembled instruction by instruction (values are numbered in order)."""

    def __init__(self, *, rng: str = "torch", seed: int | None = 0, generators: int = 1) -> None:
        self.rng, self.seed, self.generators = rng, seed, generators
        self.ops: list[str] = []
        self.program: list[list[Any]] = []
        self.tensors: list[list[Any]] = []
        self.next_value = 0

    def op(self, name: str) -> int:
        if name not in self.ops:
            self.ops.append(name)
        return self.ops.index(name)

    def call(self, op: str, args: list[Any], kwargs: dict[str, Any] | None = None, outs: int = 1) -> Any:
        """Append a CALL; returns the ``{"t": id}`` of its output (a list of them if ``outs > 1``;
        None for ``outs=0``, an in-place operator that returns its own ``self``)."""
        ids = list(range(self.next_value, self.next_value + outs))
        self.next_value += outs
        self.program.append([0, self.op(op), ids if outs else [None], args, kwargs or {}])
        refs = [{"t": v} for v in ids]
        return refs[0] if outs == 1 else refs if outs else None

    def seed_gen(self, gen: int = 0, seed: int = 0) -> None:
        self.program.append([2, gen, seed])

    def entry(self, name: str, ref: dict[str, int], shape: list[int], dtype: str = "float32",
              kind: str = "buffer") -> None:
        self.tensors.append([name, ref["t"], kind, shape, dtype, False, True])

    def zeros(self, shape: list[int], dtype: str = "float32") -> dict[str, int]:
        return self.call("aten.zeros.default", [shape], {"dtype": {"dtype": dtype}, **CPU})

    def strided(self, base: dict[str, int], size: list[int], stride: list[int]) -> dict[str, int]:
        return self.call("aten.as_strided.default", [base, size, stride])

    def body(self) -> dict[str, Any]:
        return {"format": "initrecipe", "version": [1, 0] if self.rng == "torch" else [1, 1], "rng": self.rng,
                "seed": self.seed, "generators": self.generators, "ops": self.ops, "program": self.program,
                "tensors": self.tensors, "producer": dict(PRODUCER)}

    def file(self) -> bytes:
        return finish(self.body())


ATTACKS: dict[str, Callable[[], bytes]] = {}


def attack(fn: Callable[[], bytes]) -> Callable[[], bytes]:
    ATTACKS[fn.__name__] = fn
    return fn


# --------------------------------------------------------------------------- time bombs under the memory cap
@attack
def mm_chain() -> bytes:
    """Eight chained ``mm`` of 64x64 results whose inner dimension is 2^34 long (stride-0 views of the
    previous 16 KiB result): 1.4e14 FLOP each, in 128 KiB of memory."""
    p = Program()
    k = 2**34
    x = p.zeros([64, 64])
    for _ in range(8):
        left = p.strided(x, [64, k], [1, 0])
        right = p.strided(x, [k, 64], [0, 1])
        x = p.call("aten.mm.default", [left, right])
    p.entry("out", x, [64, 64])
    return p.file()


@attack
def bmm_chain() -> bytes:
    """Four chained ``bmm`` over a batch of 16 with an inner dimension of 2^30 (stride-0 views)."""
    p = Program()
    k = 2**30
    x = p.zeros([16, 32, 32])
    for _ in range(4):
        left = p.strided(x, [16, 32, k], [1024, 1, 0])
        right = p.strided(x, [16, k, 32], [1024, 0, 1])
        x = p.call("aten.bmm.default", [left, right])
    p.entry("out", x, [16, 32, 32])
    return p.file()


@attack
def mm_small_chain() -> bytes:
    """The control: eight chained 64x64 products, a few MFLOP: it replays."""
    p = Program()
    x = p.call("aten.ones.default", [[64, 64]], {"dtype": F32, **CPU})
    eye = p.call("aten.eye.default", [64], {"dtype": F32, **CPU})
    for _ in range(8):
        x = p.call("aten.mm.default", [x, eye])
    p.entry("out", x, [64, 64])
    return p.file()


def _square_view(p: Program, n: int) -> dict[str, int]:
    """An n x n matrix viewing one float: diagonally dominant enough for every decomposition's meta kernel."""
    return p.strided(p.zeros([1]), [n, n], [0, 0])


@attack
def linalg_qr() -> bytes:
    """QR of an 8192 x 8192 matrix (a stride-0 view of one float): 5.5e11 multiply-adds, 512 MiB of output."""
    p = Program()
    q, r = p.call("aten.linalg_qr.default", [_square_view(p, 8192)], outs=2)
    p.entry("r", r, [8192, 8192])
    return p.file()


@attack
def linalg_svd() -> bytes:
    """SVD of a 4096 x 4096 matrix: 6.9e10 per textbook count, at SVD's rate minutes of work."""
    p = Program()
    u, s, vh = p.call("aten._linalg_svd.default", [_square_view(p, 4096)], outs=3)
    p.entry("s", s, [4096])
    return p.file()


@attack
def linalg_eigh() -> bytes:
    """``eigh`` of a 4096 x 4096 matrix."""
    p = Program()
    w, v = p.call("aten._linalg_eigh.default", [_square_view(p, 4096)], outs=2)
    p.entry("w", w, [4096])
    return p.file()


@attack
def linalg_solve() -> bytes:
    """Two triangular solves with an 8192 x 8192 matrix and 8192 right-hand sides."""
    p = Program()
    a = _square_view(p, 8192)
    b = p.strided(p.zeros([1]), [8192, 8192], [0, 0])
    x = None
    for _ in range(2):
        x = p.call("aten.linalg_solve_triangular.default", [a, b], {"upper": True})
    p.entry("x", x, [8192, 8192])
    return p.file()


@attack
def sort_huge() -> bytes:
    """``kthvalue`` (a sort) along 2^40 elements that view one float: a scalar out, hours of comparisons."""
    p = Program()
    values, indices = p.call("aten.kthvalue.default", [p.strided(p.zeros([1]), [2**40], [0]), 1], outs=2)
    p.entry("v", values, [])
    return p.file()


@attack
def cumsum_repeated() -> bytes:
    """2000 in-place ``cumsum_`` over the same 64 MiB tensor: one storage, minutes of scans."""
    p = Program()
    x = p.zeros([2**24])
    for _ in range(2000):
        p.call("aten.cumsum_.default", [x, 0], outs=0)
    p.entry("x", x, [2**24])
    return p.file()


@attack
def randperm_huge() -> bytes:
    """``randperm(2^40)``: 8 TiB of int64, refused by the memory limit before the analysis allocates."""
    p = Program()
    p.seed_gen()
    x = p.call("aten.randperm.generator", [2**40], {"generator": {"g": 0}, "dtype": {"dtype": "int64"}, **CPU})
    p.entry("perm", x, [2**40], "int64")
    return p.file()


@attack
def randperm_many() -> bytes:
    """10 000 ``randperm(60000)`` calls into int32, dead but the last (rng='torch' still draws them:
    the generator must advance): 6e8 random swaps, half a minute; checking them costs no swaps."""
    p = Program()
    p.seed_gen()
    x = None
    for _ in range(10_000):
        x = p.call("aten.randperm.generator", [60000], {"generator": {"g": 0}, "dtype": {"dtype": "int32"}, **CPU})
    p.entry("perm", x, [60000], "int32")
    return p.file()


@attack
def million_instructions() -> bytes:
    """10^6 instructions (12 MB), each a ``fill_`` of one float: half a minute of checking on the
    reference CPU, under the default budget, so it replays (the last fill is the only live one);
    a caller's ``max_work=10`` refuses it from its length alone, before any analysis."""
    p = Program()
    x = p.zeros([1])
    op = p.op("aten.fill_.Scalar")
    p.program.extend([0, op, [None], [x, 1], {}] for _ in range(1_000_000))
    p.entry("x", x, [1])
    return p.file()


@attack
def dead_empty_100gib() -> bytes:
    """A dead 100 GiB ``empty`` beside half an hour of ``fill_`` on one float stretched to 10^12
    elements: the dead storage must not buy budget (it is never allocated, never returned)."""
    p = Program()
    p.call("aten.empty.memory_format", [[25 * 2**30]], {"dtype": F32, **CPU})
    x = p.zeros([1])
    big = p.strided(x, [10**6, 10**6], [0, 0])
    p.call("aten.fill_.Scalar", [big, 1.0], outs=0)
    p.entry("x", x, [1])
    return p.file()


# --------------------------------------------------------------------------- super-linear passes
@attack
def tied_entries(n: int = 28_000) -> bytes:
    """One storage written by 100 ``fill_`` and named by 28 000 tied entries (~1 MB)."""
    p = Program()
    x = p.zeros([16])
    for k in range(100):
        p.call("aten.fill_.Scalar", [x, float(k)], outs=0)
    for k in range(n):
        p.entry(f"layers.{k}.w", x, [16])
    return p.file()


@attack
def views_of_one_storage(n: int = 16_000) -> bytes:
    """16 000 views of one storage, each written in place (``fill_``) and each named (~1 MB): every
    name's program is every write into the storage."""
    p = Program()
    x = p.zeros([n])
    views = []
    for k in range(n):
        v = p.call("aten.select.int", [x, 0, k])
        p.call("aten.fill_.Scalar", [v, k], outs=0)
        views.append(v)
    for k, v in enumerate(views):
        p.entry(f"v.{k}", v, [])
    return p.file()


@attack
def tied_entries_portable(n: int = 25_000) -> bytes:
    """rng='portable': one [1024] storage drawn with ``uniform_`` under one key, named by 25 000 tied
    entries (~1 MB): sliceable, so each shard request plans a slice-only program."""
    p = Program(rng="portable", seed=0, generators=0)
    x = p.call("aten.empty.memory_format", [[1024]], {"dtype": F32, **CPU})
    p.call("aten.uniform_.default", [x, -1.0, 1.0], {"generator": {"key": ["layers.0.w", 0]}}, outs=0)
    for k in range(n):
        p.entry(f"layers.{k}.w", x, [1024])
    return p.file()


@attack
def views_of_one_storage_portable(n: int = 8_000) -> bytes:
    """rng='portable': 8 000 row views ([8]) of one [8000, 8] storage, each drawn under its own key
    and named (~1 MB)."""
    p = Program(rng="portable", seed=0, generators=0)
    x = p.call("aten.empty.memory_format", [[n, 8]], {"dtype": F32, **CPU})
    views = []
    for k in range(n):
        v = p.call("aten.select.int", [x, 0, k])
        p.call("aten.uniform_.default", [v, -1.0, 1.0], {"generator": {"key": [f"rows.{k}", 0]}}, outs=0)
        views.append(v)
    for k, v in enumerate(views):
        p.entry(f"rows.{k}", v, [8])
    return p.file()


# --------------------------------------------------------------------------- msgpack-level edge cases
def _valid_small() -> dict[str, Any]:
    p = Program()
    x = p.zeros([2])
    p.entry("x", x, [2])
    return p.body()


@attack
def msgpack_deep_nesting() -> bytes:
    """A 50 000-deep array nesting in ``producer``'s place (50 KB of ``0x91`` bytes)."""
    body = pack({k: v for k, v in _valid_small().items() if k != "producer"})
    depth = 50_000
    return b"\x8a" + body[1:] + pack("producer") + b"\x91" * depth + b"\xc0" + pack("hash") + pack("sha256:" + "0" * 64)


@attack
def msgpack_huge_declared_array() -> bytes:
    """An array header declaring 2^32-1 items (``0xdd ffffffff``) followed by three bytes."""
    return b"\x81" + pack("program") + b"\xdd\xff\xff\xff\xff" + b"\x90\x90\x90"


@attack
def msgpack_huge_declared_string() -> bytes:
    """A str32 header declaring 4 GiB of characters, with ten bytes of data."""
    return b"\x81" + pack("format") + b"\xdb\xff\xff\xff\xff" + b"initrecipe"


@attack
def msgpack_huge_declared_bytes() -> bytes:
    """A LITERAL whose bin32 data declares 4 GiB, with ten bytes of data."""
    body = pack({k: v for k, v in _valid_small().items() if k not in ("program", "tensors", "producer")})
    return (b"\x8a" + body[1:] + pack("program") + b"\x91\x95\x01\x00" + pack("float32") + pack([2])
            + b"\xc6\xff\xff\xff\xff" + b"0123456789")


@attack
def msgpack_huge_declared_map() -> bytes:
    """A map32 header declaring 2^32-1 entries, with one."""
    return b"\xdf\xff\xff\xff\xff" + pack("format") + pack("initrecipe")


@attack
def msgpack_integer_key() -> bytes:
    """A valid recipe whose ``kwargs`` map has an integer key; the hash recomputed over it."""
    p = Program()
    x = p.call("aten.zeros.default", [[2]], {**CPU})
    p.program[-1][4][7] = {"dtype": "float32"}
    p.entry("x", x, [2])
    body = p.body()
    packed = msgpack.packb({k: body[k] for k in KEYS}, use_bin_type=True, use_single_float=False,
                           strict_types=False)
    return b"\x8a" + packed[1:] + pack("hash") + pack("sha256:" + hashlib.sha256(packed).hexdigest())


@attack
def msgpack_bytes_key() -> bytes:
    """A valid recipe whose ``producer`` map has a bytes key (bin 8), hash recomputed."""
    body = _valid_small()
    body["producer"] = {b"attacker": "tools/make_attacks.py"}
    return finish(body)


@attack
def msgpack_ext_type() -> bytes:
    """An ext type (code 42, ``fixext 4``) as an instruction argument, hash recomputed over it."""
    body = _valid_small()
    body["program"][0][3][0] = msgpack.ExtType(42, b"\x00\x00\x00\x02")
    return finish(body)


@attack
def msgpack_timestamp() -> bytes:
    """msgpack's one predefined ext type (a timestamp, code -1) as ``seed``."""
    body = _valid_small()
    body["seed"] = msgpack.Timestamp(0)
    return finish(body)


@attack
def msgpack_repeated_key() -> bytes:
    """A top-level map that holds ``program`` twice: a reader keeping the first value sees a valid
    recipe, one keeping the last sees another.  Its hash is valid for the last value."""
    body = _valid_small()
    decoy = [[0, 0, [0], [[2 ** 20]], {"dtype": F32, **CPU}]]
    items = [pack(k) + pack(body[k]) for k in KEYS]
    digest = "sha256:" + hashlib.sha256(pack({k: body[k] for k in KEYS})).hexdigest()
    first_program = pack("program") + pack(decoy)
    return b"\x8b" + first_program + b"".join(items) + pack("hash") + pack(digest)


@attack
def msgpack_repeated_nested_key() -> bytes:
    """A ``kwargs`` map with ``dtype`` twice (float32, then int64), hash recomputed over the exact bytes."""
    body = _valid_small()
    body["program"][0][4] = {"dtype": {"dtype": "float32"}, **CPU}
    packed = bytearray(pack({k: body[k] for k in KEYS}))
    # Rewrite the 2-entry kwargs map as a 3-entry map whose last entry repeats `dtype`.
    kwargs = pack(body["program"][0][4])
    start = packed.index(kwargs)
    tampered = b"\x83" + kwargs[1:] + pack("dtype") + pack({"dtype": "int64"})
    packed[start:start + len(kwargs)] = tampered
    return b"\x8a" + bytes(packed[1:]) + pack("hash") + pack("sha256:" + hashlib.sha256(bytes(packed)).hexdigest())


@attack
def msgpack_trailing_recipe() -> bytes:
    """A valid recipe followed by a second one (a reader that stops at the first map sees only it)."""
    one = finish(_valid_small())
    return one + one


# --------------------------------------------------------------------------- building the corpus
def build(name: str) -> bytes:
    """The bytes of attack ``name``."""
    return ATTACKS[name]()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "attacks")
    parser.add_argument("--check", action="store_true", help="fail if a file on disk differs from what is built")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    sizes = {}
    for name in ATTACKS:
        data = build(name)
        sizes[name] = (len(data), digest(data))
        path = args.out / f"{name}.recipe"
        if len(data) > COMMIT_LIMIT:
            if path.exists():
                stale.append(f"{path} (too large to commit; delete it)")
            continue
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(str(path))
        else:
            path.write_bytes(data)
    for name, (size, sha) in sizes.items():
        where = "committed" if size <= COMMIT_LIMIT else "built by the test"
        print(f"{name:36} {size:>10} bytes  sha256 {sha[:16]}  {where}")
    if stale:
        print("stale:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

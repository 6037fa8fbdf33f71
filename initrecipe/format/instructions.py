"""Decoding a recipe's ``program``: each instruction's fields and arguments checked, every tensor
reference resolved against the values earlier instructions define (``schema/FORMAT.md`` section 5)."""

from __future__ import annotations

import math
from typing import Any

import torch

from initrecipe.errors import RecipeFormatError
from initrecipe.format.spec import (
    LAYOUTS,
    MAX_ARG_DEPTH,
    MAX_ID,
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    MEMORY_FORMATS,
    OP_CALL,
    OP_LITERAL,
    OP_RESTORE,
    OP_SEED,
    OP_SET_STATE,
    RNG_STATE_BYTES,
)
from initrecipe.format.validate import decode_dtype, decode_shape, expect, expect_int, expect_str, short, type_name
from initrecipe.program.ir import (
    Call,
    GenRef,
    Instruction,
    Literal,
    PortableKey,
    Ref,
    RngRestore,
    RngSeed,
    RngSetState,
    dtype_name,
)


class ArgDecoder:
    """Decodes instruction arguments, checking tensor references against the values defined so far."""

    __slots__ = ("generators", "portable", "defined")

    def __init__(self, generators: int, portable: bool = False) -> None:
        self.generators = generators
        self.portable = portable
        self.defined: dict[int, int] = {}  # value id -> index of the instruction defining it

    def ref(self, payload: Any, where: str) -> Ref:
        """A reference to a value an earlier instruction defined."""
        vid = expect_int(payload, where)
        if vid not in self.defined:
            raise RecipeFormatError(
                f"{where}: reference to undefined tensor {vid} (a value must be defined by an earlier instruction)"
            )
        return Ref(vid)

    def arg(self, value: Any, where: str, depth: int = 0) -> Any:
        """An argument: a number, string, list (at most :data:`MAX_ARG_DEPTH` deep) or tagged value."""
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return expect_str(value, where)
        if isinstance(value, list):
            if depth >= MAX_ARG_DEPTH:
                raise RecipeFormatError(f"{where}: arguments nested deeper than {MAX_ARG_DEPTH} levels")
            if len(value) > MAX_LIST_ITEMS:
                raise RecipeFormatError(f"{where}: a list of {len(value)} items (at most {MAX_LIST_ITEMS})")
            if all(type(v) is int for v in value):  # the common case: a shape
                return value
            return [self.arg(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if len(value) != 1:
                raise RecipeFormatError(f"{where}: a tagged value must have exactly one key, found {len(value)}")
            ((tag, payload),) = value.items()
            if tag == "t":
                return self.ref(payload, f"{where}.t")
            if tag == "g":
                gid = expect_int(payload, f"{where}.g")
                if gid >= self.generators:
                    raise RecipeFormatError(
                        f"{where}.g: generator {gid} is not declared (the recipe declares {self.generators})"
                    )
                return GenRef(gid)
            if tag == "key":
                return self.portable_key(payload, f"{where}.key")
            if tag == "dtype":
                return decode_dtype(payload, where)
            if tag == "device":
                if not isinstance(payload, str) or payload.split(":")[0] not in ("cpu", "cuda", "meta"):
                    raise RecipeFormatError(f"{where}: unknown device {short(payload)}")
                try:
                    return torch.device(payload)
                except (RuntimeError, ValueError):
                    raise RecipeFormatError(f"{where}: malformed device {short(payload)}") from None
            if tag == "layout":
                if not isinstance(payload, str) or payload not in LAYOUTS:
                    raise RecipeFormatError(f"{where}: unknown layout {short(payload)}")
                return LAYOUTS[payload]
            if tag == "memory_format":
                if not isinstance(payload, str) or payload not in MEMORY_FORMATS:
                    raise RecipeFormatError(f"{where}: unknown memory format {short(payload)}")
                return MEMORY_FORMATS[payload]
            if tag == "complex":
                if (
                    not isinstance(payload, list)
                    or len(payload) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in payload)
                ):
                    raise RecipeFormatError(f"{where}: a complex value is a list of two numbers")
                return complex(payload[0], payload[1])
            raise RecipeFormatError(f"{where}: unknown tag {short(tag)}")
        raise RecipeFormatError(f"{where}: values of type {type_name(value)} are not allowed in arguments")

    def portable_key(self, payload: Any, where: str) -> PortableKey:
        """A portable stream key ``[tensor name, position]`` (only ``rng='portable'`` recipes have them)."""
        if not self.portable:
            raise RecipeFormatError(
                f"{where}: a portable stream key in an rng='torch' recipe (keys exist only in rng='portable' recipes)"
            )
        if not (isinstance(payload, list) and len(payload) == 2):
            raise RecipeFormatError(f"{where}: a stream key is [tensor name, position], found {short(payload)}")
        stream = expect_str(payload[0], f"{where}[0]", "a tensor name")
        position = expect_int(payload[1], f"{where}[1]", hi=2**32 - 1)
        return PortableKey(stream, position)

    def define(self, vid: int, index: int, where: str) -> None:
        """Record that instruction ``index`` defines value ``vid`` (each value is defined once)."""
        previous = self.defined.get(vid)
        if previous is not None:
            raise RecipeFormatError(
                f"{where}: value {vid} is defined twice (first by program[{previous}]); values are defined once"
            )
        self.defined[vid] = index

_EXPECTED_LEN = {OP_CALL: (5, 6), OP_LITERAL: (5,), OP_SEED: (3,), OP_SET_STATE: (3,), OP_RESTORE: (3,)}


def _check_gen(value: object, where: str, generators: int) -> int:
    gid = expect_int(value, where)
    if gid >= generators:
        raise RecipeFormatError(f"{where}: generator {gid} is not declared (the recipe declares {generators})")
    return gid


def _fast_call(item: list, i: int, ops: list[str], dec: ArgDecoder) -> Call | None:
    """A CALL whose every field is of the common, plainly valid kinds (tensor references to
    defined values, numbers, shapes, short strings; keyword values of any kind), decoded without
    building location strings; None for anything else, which :func:`decode_instruction` then
    decodes carefully and reports."""
    if len(item) != 5:
        return None
    _, op_idx, outs_raw, args, kwargs = item
    if (type(op_idx) is not int or not 0 <= op_idx < len(ops) or type(outs_raw) is not list
            or type(args) is not list or type(kwargs) is not dict or len(outs_raw) > MAX_LIST_ITEMS):
        return None
    defined = dec.defined
    decoded: list[Any] = []
    for a in args:
        kind = type(a)
        if kind is dict:
            ref = a.get("t") if len(a) == 1 else None
            if type(ref) is not int or ref not in defined:
                return None
            decoded.append(Ref(ref))
        elif a is None or kind is int or kind is float or kind is bool:
            decoded.append(a)
        elif kind is list:
            if len(a) > MAX_LIST_ITEMS or not all(type(v) is int for v in a):
                return None
            decoded.append(a)
        elif kind is str and len(a) <= MAX_STRING_CHARS:
            decoded.append(a)
        else:
            return None
    dec_kwargs = {}
    if kwargs:
        where = f"program[{i}]"
        for k, v in kwargs.items():
            if type(k) is not str or len(k) > MAX_STRING_CHARS:
                return None
            dec_kwargs[k] = dec.arg(v, f"{where}.kwargs.{k}")
    outs: list[int | None] = []
    for o in outs_raw:
        if o is None:
            outs.append(None)
        elif type(o) is int and 0 <= o <= MAX_ID and o not in defined:
            outs.append(o)
        else:
            return None
    fresh = [o for o in outs if o is not None]
    if len(set(fresh)) != len(fresh):
        return None
    for o in fresh:
        defined[o] = i
    return Call(ops[op_idx], tuple(outs), tuple(decoded), dec_kwargs, None)


def decode_instruction(item: Any, i: int, ops: list[str], dec: ArgDecoder) -> Instruction:
    """Instruction ``i`` of the program, its fields checked; ``ops`` is the operator table and
    ``dec`` records the values it defines."""
    if type(item) is list and item and item[0] == 0 and type(item[0]) is int:
        call = _fast_call(item, i, ops, dec)
        if call is not None:
            return call
    where = f"program[{i}]"
    expect(item, list, where, "an instruction (a list)")
    if not item:
        raise RecipeFormatError(f"{where}: empty instruction")
    code = item[0]
    if type(code) is not int or code not in _EXPECTED_LEN:
        raise RecipeFormatError(f"{where}[0]: unknown instruction code {short(code)}")
    if len(item) not in _EXPECTED_LEN[code]:
        raise RecipeFormatError(
            f"{where}: instruction code {code} takes {' or '.join(map(str, _EXPECTED_LEN[code]))} fields, "
            f"found {len(item)}"
        )
    if code == OP_CALL:
        return _decode_call(item, i, ops, dec, where)
    if code == OP_LITERAL:
        return _decode_literal(item, i, dec, where)
    gen = _check_gen(item[1], f"{where}.gen", dec.generators)
    if code == OP_SEED:
        return RngSeed(gen, expect_int(item[2], f"{where}.seed", hi=2**64 - 1))
    if code == OP_SET_STATE:
        state = expect(item[2], bytes, f"{where}.state", "bytes")
        if len(state) != RNG_STATE_BYTES:
            raise RecipeFormatError(
                f"{where}.state: {len(state)} bytes, but a torch CPU generator state has {RNG_STATE_BYTES}"
            )
        return RngSetState(gen, state)
    return RngRestore(gen, expect_int(item[2], f"{where}.after", hi=i - 1))


def _decode_call(item: list, i: int, ops: list[str], dec: ArgDecoder, where: str) -> Call:
    """A CALL instruction whose length is checked, decoded field by field."""
    op_idx = expect_int(item[1], f"{where}[1]", hi=len(ops) - 1)
    outs_raw = expect(item[2], list, f"{where}.outs", "a list of output ids")
    if len(outs_raw) > MAX_LIST_ITEMS:
        raise RecipeFormatError(f"{where}.outs: {len(outs_raw)} outputs (at most {MAX_LIST_ITEMS})")
    args = expect(item[3], list, f"{where}.args", "a list of arguments")
    kwargs = expect(item[4], dict, f"{where}.kwargs", "a map of keyword arguments")
    dec_args = tuple(dec.arg(a, f"{where}.args[{j}]") for j, a in enumerate(args))
    dec_kwargs = {}
    for k, v in kwargs.items():
        expect_str(k, f"{where}.kwargs", "string keys")
        dec_kwargs[k] = dec.arg(v, f"{where}.kwargs.{k}")
    out_meta = _decode_out_meta(item[5], len(outs_raw), where) if len(item) == 6 else None
    outs = []
    for j, o in enumerate(outs_raw):
        if o is None:
            outs.append(None)
            continue
        vid = expect_int(o, f"{where}.outs[{j}]")
        dec.define(vid, i, f"{where}.outs[{j}]")
        outs.append(vid)
    return Call(ops[op_idx], tuple(outs), dec_args, dec_kwargs, out_meta)


def _decode_out_meta(raw: object, outputs: int, where: str) -> tuple[tuple[torch.dtype, tuple[int, ...]], ...]:
    """A CALL's optional ``out_meta``: one ``[dtype, shape]`` pair per output."""
    metas = expect(raw, list, f"{where}.out_meta", "a list of [dtype, shape] pairs")
    if len(metas) != outputs:
        raise RecipeFormatError(
            f"{where}.out_meta: {len(metas)} entries for {outputs} outputs"
        )
    decoded = []
    for j, m in enumerate(metas):
        w = f"{where}.out_meta[{j}]"
        if not isinstance(m, list) or len(m) != 2:
            raise RecipeFormatError(f"{w}: expected a [dtype, shape] pair")
        d = decode_dtype(m[0], w)
        decoded.append((d, decode_shape(m[1], w, d)))
    return tuple(decoded)


def _decode_literal(item: list, i: int, dec: ArgDecoder, where: str) -> Literal:
    """A LITERAL instruction: its data must fill its shape and dtype exactly."""
    out = expect_int(item[1], f"{where}.out")
    dtype = decode_dtype(item[2], f"{where}.dtype")
    shape = decode_shape(item[3], f"{where}.shape", dtype)
    data = expect(item[4], bytes, f"{where}.data", "bytes")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise RecipeFormatError(
            f"{where}.data: {len(data)} bytes, but shape {list(shape)} of {dtype_name(dtype)} needs "
            f"{math.prod(shape) * dtype.itemsize}"
        )
    if dtype == torch.bool and data.translate(None, b"\x00\x01"):
        raise RecipeFormatError(f"{where}.data: a bool literal holds bytes other than 0 and 1")
    dec.define(out, i, f"{where}.out")
    return Literal(out, dtype, shape, data)

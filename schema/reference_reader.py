#!/usr/bin/env python3
"""Stand-alone reader of init-recipe files (schema/FORMAT.md, formats 1.0, 1.1 and 1.2): checks one and
prints its tensor table.  Needs only msgpack and the standard library; it does not import
initrecipe and does not replay (building the tensors means running the program with PyTorch).
Usage: python reference_reader.py MODEL.recipe
"""
import hashlib
import sys

import msgpack

READS = (1, 2)  # the newest format version this reader implements (and every older 1.x)
BODY = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")


def unique_keys(pairs: list) -> dict:  # a repeated key would let two readers read one file two ways
    if len({k for k, _ in pairs}) != len(pairs) or not all(type(k) is str for k, _ in pairs):
        raise ValueError("a map has a repeated or non-string key")
    return dict(pairs)


def read(data: bytes) -> dict:  # trailing bytes raise ExtraData, ext types exceed max_ext_len
    doc = msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=unique_keys, max_ext_len=0)
    if not isinstance(doc, dict) or doc.get("format") != "initrecipe":
        raise ValueError("not an init recipe")
    version = doc.get("version")
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version)):
        raise ValueError(f"malformed version {version!r}")
    if version[0] != READS[0] or version[1] > READS[1]:
        raise ValueError(f"recipe format {version[0]}.{version[1]} needs a newer reader "
                         f"(this one reads {READS[0]}.0 to {READS[0]}.{READS[1]})")
    if set(doc) != set(BODY) | {"hash"}:
        raise ValueError(f"fields {sorted(set(doc) ^ (set(BODY) | {'hash'}))} missing or unknown")
    body = msgpack.packb({k: doc[k] for k in BODY}, use_bin_type=True)  # canonical re-encoding
    if doc["hash"] != "sha256:" + hashlib.sha256(body).hexdigest():
        raise ValueError("content hash mismatch: the file is corrupt or was edited")
    seed = doc["seed"]
    if doc["rng"] == "portable" and (version < [1, 1] or type(seed) is not int or not 0 <= seed < 2**64):
        raise ValueError("rng `portable` recipes are format 1.1 or newer and need a seed in 0 .. 2**64-1")
    return doc


def main(argv: list) -> int:
    try:
        with open(argv[1], "rb") as handle:
            doc = read(handle.read())
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"format {doc['version'][0]}.{doc['version'][1]}  rng {doc['rng']}  seed {doc['seed']}  "
          f"{len(doc['program'])} instructions  {doc['hash']}")
    print(f"{'name':<40} {'kind':<9} {'dtype':<10} {'shape':<16} {'value':>5}  flags")
    for name, value, kind, shape, dtype, requires_grad, persistent in doc["tensors"]:
        flags = ("requires_grad " if requires_grad else "") + ("" if persistent else "non-persistent")
        print(f"{name:<40} {kind:<9} {dtype:<10} {str(tuple(shape)):<16} {value:>5}  {flags}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""What initrecipe writes, and where: planted symbolic links, hostile tensor names, interrupts.

Every output (``convert``'s checkpoint folder, ``replay -o``, ``record -o`` / ``Recipe.save``)
is written under a fresh hidden temporary name in the destination folder and renamed into place
when complete.  These tests pin what that must guarantee:

* a symbolic link planted at a final name, at a stale shard's name or at a temporary name is
  never written through: its target keeps its bytes, and the new file replaces the link;
* tensor names go into safetensors headers and the index's ``weight_map``, never into a path;
* SIGINT, SIGTERM and SIGHUP, sent for real while tensors are being written, end the command
  with one line and no traceback, leave no file under a final name and no temporary file, and
  leave an earlier output at the final names as it was.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

import initrecipe
from initrecipe import OutputExistsError, OutputWriteError
from initrecipe.support import output_files
from initrecipe.export import safetensors_writer as safetensors_stream
from initrecipe.cli import main
from initrecipe.export.convert import to_safetensors
from initrecipe.format.envelope import compute_hash


@pytest.fixture(autouse=True)
def _signals_as_in_a_terminal():
    """Give SIGINT, SIGTERM and SIGHUP the dispositions of a terminal session.  A test run started
    in the background (`cmd &`, `nohup`) inherits them ignored, and initrecipe rightly leaves
    ignored signals alone; these tests are about a user's Ctrl-C and kill.  Child processes inherit
    the defaults."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# --------------------------------------------------------------------------- helpers
def small_recipe(n: int = 3) -> initrecipe.Recipe:
    def build() -> nn.Module:
        m = nn.Module()
        for i in range(n):
            m.register_parameter(f"p{i}", nn.Parameter(torch.randn(4, 8)))
        return m

    return initrecipe.record(build, seed=0)


def renamed(recipe: initrecipe.Recipe, names: list[str]) -> initrecipe.Recipe:
    """``recipe`` with its tensors renamed to ``names``, re-hashed as the spec says (a crafted file)."""
    doc = copy.deepcopy(msgpack.unpackb(recipe.to_bytes(), raw=False))
    assert len(doc["tensors"]) == len(names)
    for entry, name in zip(doc["tensors"], names):
        entry[0] = name
    doc["hash"] = compute_hash(doc)
    return initrecipe.load(msgpack.packb(doc, use_bin_type=True, use_single_float=False))


def tree(root: Path) -> list[str]:
    """Every path below ``root`` (links not followed), relative, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the output folder that a planted link points at."""
    path = tmp_path / "elsewhere" / "victim"
    path.parent.mkdir()
    path.write_bytes(b"precious bytes")
    return path


# --------------------------------------------------------------------------- symbolic links
def test_a_link_at_the_final_name_is_refused_without_force_and_replaced_with_it(tmp_path, victim):
    recipe = small_recipe()
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").symlink_to(victim)
    with pytest.raises(OutputExistsError, match="already holds `model.safetensors`; pass --force"):
        to_safetensors(recipe, out)
    assert os.readlink(out / "model.safetensors") == str(victim)
    (path,) = to_safetensors(recipe, out, force=True)
    assert victim.read_bytes() == b"precious bytes"
    assert not path.is_symlink() and path.is_file()
    assert os.listdir(out) == ["model.safetensors"]
    expected = initrecipe.replay(recipe)
    assert {k: v.tolist() for k, v in load_file(path).items()} == {k: v.tolist() for k, v in expected.items()}


def test_a_dangling_link_at_the_final_name_does_not_create_its_target(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere" / "created-through-the-link"
    (out / "model.safetensors").symlink_to(target)
    with pytest.raises(OutputExistsError):
        to_safetensors(small_recipe(), out)
    to_safetensors(small_recipe(), out, force=True)
    assert not target.exists() and not target.parent.exists()
    assert not (out / "model.safetensors").is_symlink()


def test_links_at_shard_index_and_config_names_are_replaced_not_followed(tmp_path, victim):
    recipe = small_recipe(3)
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "x"}')
    out = tmp_path / "out"
    out.mkdir()
    finals = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
              "model-00003-of-00003.safetensors", "model.safetensors.index.json", "config.json"]
    for name in finals:
        (out / name).symlink_to(victim)
    paths = to_safetensors(recipe, out, force=True, max_shard_size=200, config=config)
    assert [p.name for p in paths] == finals[:3] + ["config.json", "model.safetensors.index.json"]
    assert victim.read_bytes() == b"precious bytes"
    assert sorted(os.listdir(out)) == sorted(finals)
    assert not any((out / name).is_symlink() for name in finals)
    assert json.loads((out / "config.json").read_text()) == {"model_type": "x"}
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"p0": finals[0], "p1": finals[1], "p2": finals[2]}


def test_a_stale_shard_that_is_a_link_is_removed_not_its_target(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00002-of-00009.safetensors").symlink_to(victim)
    (out / "model.safetensors.index.json").symlink_to(victim)
    to_safetensors(small_recipe(), out, force=True)
    assert os.listdir(out) == ["model.safetensors"]
    assert victim.read_bytes() == b"precious bytes"


def test_a_link_planted_at_the_temporary_name_is_never_opened(tmp_path, victim, monkeypatch):
    """Temporary names are unguessable; if one is taken anyway (here: the random source is
    rigged), O_EXCL refuses it and another name is drawn."""
    out = tmp_path / "out"
    out.mkdir()
    draws = iter(["0" * 16, "1" * 16])
    monkeypatch.setattr(output_files.secrets, "token_hex", lambda n: next(draws))
    planted = out / f".model.safetensors.{'0' * 16}.tmp"
    planted.symlink_to(victim)
    (path,) = to_safetensors(small_recipe(), out)
    assert victim.read_bytes() == b"precious bytes"
    assert os.readlink(planted) == str(victim)  # not ours: left exactly as found
    assert sorted(os.listdir(out)) == sorted(["model.safetensors", planted.name])
    assert load_file(path).keys() == {"p0", "p1", "p2"}


def test_every_temporary_name_taken_is_a_clear_error(tmp_path, monkeypatch, victim):
    monkeypatch.setattr(output_files.secrets, "token_hex", lambda n: "f" * 16)
    (tmp_path / f".x.safetensors.{'f' * 16}.tmp").symlink_to(victim)
    with pytest.raises(OutputWriteError, match="cannot create a temporary file in .*every name tried exists"):
        output_files.create_temp(tmp_path / "x.safetensors")
    assert victim.read_bytes() == b"precious bytes"


def test_temporary_names_are_fresh_and_hidden(tmp_path):
    names = {output_files.temp_path_for(tmp_path / "model.safetensors").name for _ in range(1000)}
    assert len(names) == 1000
    assert all(n.startswith(".model.safetensors.") and n.endswith(".tmp") and len(n) == 39 for n in names)


def test_an_output_folder_given_as_a_link_is_followed(tmp_path):
    """The folder the user names may be a link (to a bigger disk, say): it is written through."""
    real = tmp_path / "disk" / "ckpt"
    real.mkdir(parents=True)
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    to_safetensors(small_recipe(), tmp_path / "out")
    assert os.listdir(real) == ["model.safetensors"]
    assert (tmp_path / "out").is_symlink()


def test_a_folder_at_a_final_name_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    (out / "model-00002-of-00003.safetensors").mkdir(parents=True)
    with pytest.raises(OutputWriteError, match=r"model-00002-of-00003.safetensors` is a folder; remove it"):
        to_safetensors(small_recipe(3), out, max_shard_size=200, force=True)
    assert tree(out) == ["model-00002-of-00003.safetensors"]


def test_replay_and_record_outputs_replace_a_link(tmp_path, victim, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small_recipe().save("m.recipe")
    Path("w.safetensors").symlink_to(victim)
    Path("copy.recipe").symlink_to(victim)
    assert main(["replay", "m.recipe", "-o", "w.safetensors"]) == 0
    initrecipe.load("m.recipe").save("copy.recipe")
    assert victim.read_bytes() == b"precious bytes"
    assert not Path("w.safetensors").is_symlink() and load_file("w.safetensors").keys() == {"p0", "p1", "p2"}
    assert not Path("copy.recipe").is_symlink() and Path("copy.recipe").read_bytes() == Path("m.recipe").read_bytes()
    assert temporaries(tmp_path) == []


def test_recipe_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        small_recipe().save(tmp_path / "m.recipe")
    finally:
        os.umask(old)
    assert (tmp_path / "m.recipe").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "output, message",
    [
        ("missing/w.safetensors", "cannot write `missing/w.safetensors`: `missing` does not exist; create it first"),
        ("m.recipe/w.safetensors", "cannot write `m.recipe/w.safetensors`: `m.recipe` is not a folder; choose another path"),
        ("sub", "`sub` is a folder; remove it or write to another name"),
    ],
)
def test_unwritable_outputs_are_one_line_errors_before_any_work(tmp_path, monkeypatch, capsys, output, message):
    monkeypatch.chdir(tmp_path)
    small_recipe().save("m.recipe")
    Path("sub").mkdir()
    assert main(["replay", "m.recipe", "-o", output]) == 1
    assert capsys.readouterr().err == f"initrecipe: error: {message}\n"
    with pytest.raises(OutputWriteError, match="is a folder"):
        initrecipe.load("m.recipe").save("sub")
    assert tree(tmp_path) == ["m.recipe", "sub"]


# --------------------------------------------------------------------------- tensor names are not paths
HOSTILE_NAMES = [
    "../../x", "/abs", "a/b", "..", ".", "~", "$HOME", "a\\b", "C:\\evil", "\n", " ", "-rf",
    "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
    "config.json", ".model.safetensors.0000000000000000.tmp", "名前/重み", "%s%n", "x" * 300,
]


def test_hostile_tensor_names_stay_inside_the_files(tmp_path):
    recipe = renamed(small_recipe(len(HOSTILE_NAMES)), HOSTILE_NAMES)
    expected = initrecipe.replay(recipe)
    out = tmp_path / "a" / "b" / "out"
    to_safetensors(recipe, out)
    assert tree(tmp_path) == ["a", "a/b", "a/b/out", "a/b/out/model.safetensors"]
    stored = load_file(out / "model.safetensors")
    assert sorted(stored) == sorted(HOSTILE_NAMES)
    assert all(torch.equal(stored[n], expected[n]) for n in HOSTILE_NAMES)
    assert not os.path.exists("/abs")

    n = len(HOSTILE_NAMES)
    shards = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    to_safetensors(recipe, out, max_shard_size=128, force=True)
    assert sorted(os.listdir(out)) == sorted(shards + ["model.safetensors.index.json"])
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == dict(zip(HOSTILE_NAMES, shards))
    assert tree(tmp_path) == ["a", "a/b", "a/b/out"] + sorted(f"a/b/out/{f}" for f in os.listdir(out))


def test_hostile_tensor_names_with_replay_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    renamed(small_recipe(len(HOSTILE_NAMES)), HOSTILE_NAMES).save("m.recipe")
    assert main(["replay", "m.recipe", "-o", "w.safetensors"]) == 0
    assert tree(tmp_path) == ["m.recipe", "w.safetensors"]
    assert sorted(load_file("w.safetensors")) == sorted(HOSTILE_NAMES)


def test_the_reserved_safetensors_key_is_refused_as_a_tensor_name(tmp_path):
    recipe = renamed(small_recipe(2), ["__metadata__", "w"])
    with pytest.raises(initrecipe.RecipeError, match="a tensor named `__metadata__` cannot be stored"):
        to_safetensors(recipe, tmp_path / "out")
    assert tree(tmp_path) == []


_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(_NAME, min_size=1, max_size=4, unique=True).filter(lambda ns: "__metadata__" not in ns),
       sharded=st.booleans())
def test_any_tensor_names_write_only_the_planned_files(tmp_path_factory, names, sharded):
    root = tmp_path_factory.mktemp("names")
    recipe = renamed(small_recipe(len(names)), names)
    out = root / "out"
    to_safetensors(recipe, out, max_shard_size=128 if sharded else "5GB")
    n = len(names)
    if sharded and n > 1:
        files = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"] == dict(zip(names, files))
        files.append("model.safetensors.index.json")
    else:
        files = ["model.safetensors"]
    assert tree(root) == ["out"] + sorted(f"out/{f}" for f in files)
    stored = {}
    for f in files:
        if f.endswith(".safetensors"):
            stored.update(load_file(out / f))
    assert sorted(stored) == sorted(names)


# --------------------------------------------------------------------------- signals, in process
def test_deferred_signals_hold_an_interrupt_until_the_block_ends():
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with output_files.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _signal_from_the_writer_thread(monkeypatch, sig: int, after_chunks: int = 3) -> dict:
    """Make the writer thread send ``sig`` to this process while it writes, then keep writing slowly
    (the headers, written by the main thread when the files are created, do not count)."""
    real = safetensors_stream._pwrite
    seen = {"chunks": 0, "after": 0, "threads": set()}

    def pwrite(fd, data, offset):
        seen["threads"].add(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            return real(fd, data, offset)
        seen["chunks"] += 1
        if seen["chunks"] == after_chunks:
            os.kill(os.getpid(), sig)
        elif seen["chunks"] > after_chunks:
            seen["after"] += 1
            time.sleep(0.002)
        return real(fd, data, offset)

    monkeypatch.setattr(safetensors_stream, "_CHUNK", 4096)
    monkeypatch.setattr(safetensors_stream, "_pwrite", pwrite)
    return seen


def _big_enough_recipe() -> initrecipe.Recipe:
    """Four 1 MiB tensors: 1024 chunks of 4 KiB, several seconds at the throttled rate."""
    return initrecipe.record(lambda: nn.Sequential(*[nn.Linear(512, 512, bias=False) for _ in range(4)]), seed=0)


def test_an_interrupt_mid_write_stops_the_writer_thread_and_leaves_the_earlier_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "out"
    to_safetensors(small_recipe(), out)
    before = (out / "model.safetensors").read_bytes()
    seen = _signal_from_the_writer_thread(monkeypatch, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        to_safetensors(_big_enough_recipe(), out, force=True, max_shard_size="1MiB")
    assert seen["chunks"] >= 3 and any(t.startswith("initrecipe-write") for t in seen["threads"])
    assert seen["after"] < 100, "the writer thread kept writing after the interrupt"
    assert os.listdir(out) == ["model.safetensors"] and (out / "model.safetensors").read_bytes() == before
    assert not any(t.name.startswith("initrecipe-write") for t in threading.enumerate())


def test_sigterm_in_the_cli_takes_the_interrupt_path_and_restores_the_handler(tmp_path, monkeypatch, capsys):
    _big_enough_recipe().save(tmp_path / "m.recipe")
    _signal_from_the_writer_thread(monkeypatch, signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert main(["convert", str(tmp_path / "m.recipe"), str(tmp_path / "out")]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "initrecipe: interrupted by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert tree(tmp_path) == ["m.recipe"]


# --------------------------------------------------------------------------- signals, a real process
def _default_sigint() -> None:
    """The child gets Python's KeyboardInterrupt even if this test runs with SIGINT ignored (``cmd &``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _bytes_written(pid: int) -> int:
    """Bytes the process has passed to write/pwrite so far (Linux); 0 where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/io") as handle:
            for line in handle:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# A slow disk for the child: 1 MiB per write call, 20 ms each.  The CLI code is the real one.
_SLOW_DISK = textwrap.dedent("""
    import sys, time
    from initrecipe.export import safetensors_writer as s
    real = s._pwrite
    def slow(fd, data, offset):
        time.sleep(0.02)
        return real(fd, data, offset)
    s._CHUNK, s._pwrite = 1 << 20, slow
    from initrecipe.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _interrupt_mid_write(args: list[str], cwd: Path, folder: Path, sig: int, *, slow_disk: bool,
                         min_written: int) -> tuple[int, str, list[str]]:
    """Run the CLI, send ``sig`` once a temporary file exists and ``min_written`` bytes were written."""
    prefix = [sys.executable, "-c", _SLOW_DISK] if slow_disk else [sys.executable, "-m", "initrecipe"]
    proc = subprocess.Popen(prefix + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the command ended (exit {proc.returncode}) before it could be interrupted: "
                            f"{proc.stderr.read().decode()!r}")
            seen = temporaries(folder) if folder.is_dir() else []
            if seen and _bytes_written(proc.pid) >= min_written:
                break
            time.sleep(0.001)
        else:
            pytest.fail("no temporary file appeared within 120 s")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode(), seen


def _saved_linear_stack(factory, width: int, count: int) -> Path:
    path = factory.mktemp("recipes") / f"linear-{width}x{count}.recipe"
    initrecipe.record(lambda: nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(count)]),
                      seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def big_recipe(tmp_path_factory) -> Path:
    """256 MiB of weights in 16 tensors: writing takes a while."""
    return _saved_linear_stack(tmp_path_factory, 2048, 16)


@pytest.fixture(scope="module")
def medium_recipe(tmp_path_factory) -> Path:
    """32 MiB in 8 tensors, for the slowed-down disk."""
    return _saved_linear_stack(tmp_path_factory, 1024, 8)


def _earlier_checkpoint(folder: Path) -> bytes:
    to_safetensors(small_recipe(), folder)
    return (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize("shard", ["5GB", "68MB"])
def test_sigint_during_convert_of_a_large_recipe(tmp_path, big_recipe, shard):
    out = tmp_path / "out"
    before = _earlier_checkpoint(out)
    rc, err, seen = _interrupt_mid_write(
        ["convert", str(big_recipe), str(out), "--force", "--max-shard-size", shard],
        tmp_path, out, signal.SIGINT, slow_disk=False, min_written=8 << 20,
    )
    assert (rc, err) == (130, "initrecipe: interrupted by SIGINT\n")
    assert len(seen) == (1 if shard == "5GB" else 4)  # 16 MiB tensors, four to a 68 MB shard
    assert os.listdir(out) == ["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_during_convert(tmp_path, medium_recipe, sig):
    out = tmp_path / "out"
    rc, err, seen = _interrupt_mid_write(["convert", str(medium_recipe), str(out), "--max-shard-size", "9MB"],
                                         tmp_path, out, sig, slow_disk=True, min_written=2 << 20)
    assert (rc, err) == (128 + sig, f"initrecipe: interrupted by {signal.Signals(sig).name}\n")
    assert len(seen) == 4
    assert not out.exists()  # convert created it, and nothing was committed


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_replay_output(tmp_path, medium_recipe, sig):
    (tmp_path / "w.safetensors").write_bytes(b"earlier output")
    rc, err, seen = _interrupt_mid_write(["replay", str(medium_recipe), "-o", "w.safetensors"],
                                         tmp_path, tmp_path, sig, slow_disk=True, min_written=2 << 20)
    assert (rc, err) == (128 + sig, f"initrecipe: interrupted by {signal.Signals(sig).name}\n")
    assert len(seen) == 1
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]
    assert (tmp_path / "w.safetensors").read_bytes() == b"earlier output"

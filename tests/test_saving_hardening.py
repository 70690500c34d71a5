"""Hostile and damaged model files: ValueError, at a cost bounded by the model they describe;
killed saves cleaned up; the umask respected."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import nnx

GiB = 1 << 30


# -- building files ----------------------------------------------------------------------------
def _model(compiled=True):
    nnx.seed(0)
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(5, activation="relu"), nnx.Dense(2)])
    if compiled:
        model.compile(optimizer="adam", loss="mse")
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(16, 4)), rng.normal(size=(16, 2)), epochs=1, verbose=0)
    return model


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.nnx"
    _model().save(path)
    return path


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _npy(array) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    return f.getvalue()


def _header_of(members) -> dict:
    return json.loads(np.load(io.BytesIO(members["__nnx__.npy"])).tobytes())


def _with_header(members, header) -> dict[str, bytes]:
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    data = text.encode("utf-8") if isinstance(text, str) else text
    return {**members, "__nnx__.npy": _npy(np.frombuffer(data, dtype=np.uint8))}


def _zip(members: dict[str, bytes]) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def _entry(name, data, method=zipfile.ZIP_STORED, usize=None, crc=None, flags=0):
    return {"name": name, "data": data, "method": method, "csize": len(data),
            "usize": len(data) if usize is None else usize, "crc": zlib.crc32(data) if crc is None else crc,
            "flags": flags}


def _raw_zip(entries, claim_entries=None) -> bytes:
    """A zip written byte by byte, so that its declared sizes, flags and methods are whatever the
    test says (zip64 extra fields for sizes of 4 GiB and more)."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e["name"].encode()
        big = e["usize"] >= 0xFFFFFFFF or e["csize"] >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, e["usize"], e["csize"]) if big else b""
        usize, csize = (0xFFFFFFFF, 0xFFFFFFFF) if big else (e["usize"], e["csize"])
        version = 45 if big else 20
        offset = len(out)
        out += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", version, 0, e["flags"], e["method"], 0, 0x21, e["crc"],
                           csize, usize, len(name), len(extra)) + name + extra + e["data"]
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", version, 3, version, 0, e["flags"], e["method"], 0,
                               0x21, e["crc"], csize, usize, len(name), len(extra), 0, 0, 0, 0o644 << 16,
                               offset) + name + extra
    cd_offset, count = len(out), len(entries)
    out += central
    if claim_entries is not None:  # a zip64 end record claiming that many entries
        z64 = len(out)
        out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, claim_entries, claim_entries,
                           len(central), cd_offset)
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1)
        count = 0xFFFF
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)


def _stored(members) -> list[dict]:
    return [_entry(name, data) for name, data in members.items()]


def _deflated_zeros(total: int, chunk: int = 1 << 20) -> bytes:
    """A raw deflate stream of ``total`` zero bytes, made without compressing them all: after a
    full flush every chunk of zeros compresses to the same independent block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block
    return block * (total // chunk) + c.flush()


def _write(tmp_path, data: bytes, name="bad.nnx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path, match=None, seconds=2.0, peak_mb=50):
    """load_model raises ValueError, quickly and without allocating much."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            nnx.load_model(path)
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < peak_mb * 2**20, f"allocated {peak / 2**20:.0f} MB"
    return info.value


def test_the_deflate_helper_makes_zeros():
    assert zlib.decompress(_deflated_zeros(8 << 20), -15) == bytes(8 << 20)


# -- huge declared members ---------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import resource, sys, time
    import nnx
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        nnx.load_model(sys.argv[1])
        outcome = "loaded"
    except ValueError as e:
        outcome = "ValueError: " + str(e)
    except BaseException as e:
        outcome = type(e).__name__ + ": " + str(e)
    elapsed = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    scale = 1 if sys.platform == "darwin" else 1024
    print(repr((outcome, elapsed, grown * scale)))
""")


def _load_in_child(path) -> tuple[str, float, int]:
    pytest.importorskip("resource")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's repr of a tuple


@pytest.mark.parametrize("name", ["bomb.npy", "weight_9.npy", "weight_0.npy"])
def test_valid_model_plus_an_8_gib_deflated_member(good, tmp_path, name):
    """An ~8 MiB file: a valid model and a deflated member that inflates to 8 GiB (unknown, an
    index beyond the header's count, or in place of a real weight)."""
    members = _members(good)
    bomb = _entry(name, _deflated_zeros(8 * GiB), zipfile.ZIP_DEFLATED, usize=8 * GiB, crc=0)
    entries = [e for e in _stored(members) if e["name"] != name] + [bomb]
    path = _write(tmp_path, _raw_zip(entries))
    assert 7 << 20 < path.stat().st_size < 10 << 20
    outcome, elapsed, grown = _load_in_child(path)
    assert outcome.startswith("ValueError"), outcome
    assert elapsed < 5.0, elapsed
    assert grown < 300 << 20, f"peak memory grew by {grown / 2**20:.0f} MB"
    _refused(path)  # and the same in this process, measured by tracemalloc


def test_member_claiming_more_than_the_file_holds(good, tmp_path):
    members = _members(good)
    entries = _stored(members)
    for e in entries:
        if e["name"] == "weight_0.npy":
            e["usize"] = e["csize"] = 8 * GiB  # stored: its data would run far past the end of the file
    _refused(_write(tmp_path, _raw_zip(entries)), "truncated|corrupted")
    entries = _stored(members)
    entries[0]["usize"] = entries[0]["csize"] + 1  # stored, yet sizes differ
    _refused(_write(tmp_path, _raw_zip(entries)), "corrupted")


def test_a_directory_claiming_a_million_members(good, tmp_path):
    path = _write(tmp_path, _raw_zip(_stored(_members(good)), claim_entries=10**6))
    _refused(path, "members")


def test_duplicate_members(good, tmp_path):
    members = _members(good)
    entries = _stored(members) + [_entry("weight_0.npy", members["weight_0.npy"])]
    _refused(_write(tmp_path, _raw_zip(entries)), "twice")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 99])
def test_unknown_compression_method(good, tmp_path, method):
    entries = _stored(_members(good))
    entries[1]["method"] = method
    _refused(_write(tmp_path, _raw_zip(entries)), "compression method")


@pytest.mark.parametrize("flag", [0x1, 0x40])
def test_encrypted_member(good, tmp_path, flag):
    entries = _stored(_members(good))
    entries[0]["flags"] = flag
    _refused(_write(tmp_path, _raw_zip(entries)), "encrypted")


def test_deflated_files_load(good, tmp_path):
    """Stored or deflated, as any zip tool may rewrite the file."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in _members(good).items():
            z.writestr(name, data)
    path = _write(tmp_path, f.getvalue())
    loaded, original = nnx.load_model(path), nnx.load_model(good)
    for a, b in zip(loaded.get_weights(), original.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unknown_member(good, tmp_path):
    members = {**_members(good), "notes.txt": b"hello"}
    _refused(_write(tmp_path, _zip(members)), "unexpected member")
    members = {**_members(good), "slot_9_0.npy": _npy(np.zeros(3, "float32"))}
    _refused(_write(tmp_path, _zip(members)), "unexpected member")


def test_missing_member(good, tmp_path):
    members = _members(good)
    del members["slot_1_0.npy"]
    _refused(_write(tmp_path, _zip(members)), "incomplete: missing slot_1_0")


# -- architecture against arrays ---------------------------------------------------------------
def _uncompiled(tmp_path):
    path = tmp_path / "small.nnx"
    nnx.Sequential([nnx.Input(2), nnx.Dense(2)]).save(path)
    return _members(path)


def test_huge_architecture_with_small_arrays(tmp_path):
    """A 4 KiB file declaring Input(20000) -> Dense(20000), 400M parameters, holding 2x2 arrays."""
    members = _uncompiled(tmp_path)
    header = _header_of(members)
    header["config"]["input_shape"] = [20000]
    header["config"]["layers"][0]["config"]["units"] = 20000
    path = _write(tmp_path, _zip(_with_header(members, header)))
    assert path.stat().st_size < 8 << 10
    _refused(path, "do not match the architecture", peak_mb=5)


def test_huge_architecture_with_arrays_declaring_it(tmp_path):
    """The .npy headers agree with the config, the data is not there."""
    members = _uncompiled(tmp_path)
    header = _header_of(members)
    header["config"]["input_shape"] = [20000]
    header["config"]["layers"][0]["config"]["units"] = 20000
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (20000, 20000)})
    members = {**_with_header(members, header), "weight_0.npy": f.getvalue() + bytes(64),
               "weight_1.npy": _npy(np.zeros(20000, "float32"))}
    _refused(_write(tmp_path, _zip(members)), "do not match the architecture", peak_mb=5)


def test_array_shapes_checked_against_the_config(tmp_path):
    members = _uncompiled(tmp_path)
    bigger = {**members, "weight_0.npy": _npy(np.zeros((2, 3), "float32"))}
    _refused(_write(tmp_path, _zip(bigger)), r"do not match the architecture: weight 0 holds a \(2, 3\)")
    ints = {**members, "weight_0.npy": _npy(np.zeros((2, 2), "int64"))}
    _refused(_write(tmp_path, _zip(ints)), "do not match the architecture")
    header = _header_of(members)
    header["weights"] = 1
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "do not match the architecture")


def test_npy_headers_that_lie(tmp_path):
    members = _uncompiled(tmp_path)
    real = members["weight_0.npy"]
    _refused(_write(tmp_path, _zip({**members, "weight_0.npy": real[:-4]})), "corrupted")  # data short of its shape
    _refused(_write(tmp_path, _zip({**members, "weight_0.npy": real + bytes(8)})), "corrupted")
    v3 = real.replace(b"\x93NUMPY\x01\x00", b"\x93NUMPY\x03\x00", 1)
    _refused(_write(tmp_path, _zip({**members, "weight_0.npy": v3})), "ValueError|format version")
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2, 2)})
    _refused(_write(tmp_path, _zip({**members, "weight_0.npy": f.getvalue() + bytes(32)})), "dtype object")


def test_optimizer_slots_checked_against_the_weights(good, tmp_path):
    members = _members(good)
    wrong = {**members, "slot_0_1.npy": _npy(np.zeros((5, 4), "float32"))}
    _refused(_write(tmp_path, _zip(wrong)), "do not match the architecture")
    header = _header_of(members)
    header["compile"]["slots"] = [2, 2, 2, 2, 2]  # more slot lists than weights
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "slots")


def test_input_of_a_million_units(tmp_path):
    """Input(10**6) alone allocates nothing; followed by a Dense layer it needs arrays the file lacks."""
    path = tmp_path / "wide.nnx"
    nnx.Sequential([nnx.Input(10**6)]).save(path)
    assert nnx.load_model(path).input_shape == (10**6,)
    members = _uncompiled(tmp_path)
    header = _header_of(members)
    header["config"]["input_shape"] = [10**6]
    header["config"]["layers"][0]["config"]["units"] = 10**6
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "do not match the architecture", peak_mb=5)
    header["config"]["input_shape"] = [10**6, 10**6, 10**6]
    header["config"]["layers"][0] = {"class_name": "Flatten", "config": {}}
    header["config"]["layers"].append({"class_name": "Dense", "config": {"units": 3}})
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "do not match the architecture", peak_mb=5)


def test_user_layers_still_load(tmp_path):
    @nnx.layers.register
    class Doubler(nnx.layers.Layer):
        weight_names = ("w",)

        def build(self, input_shape):
            super().build(input_shape)
            self.add_weight("w", (input_shape[-1],), "ones")

        def forward(self, x, training=False):
            return x * self.w

    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4), Doubler(), nnx.Dense(2)])
    model.compile("sgd", "mse")
    model.save(tmp_path / "u.nnx")
    loaded = nnx.load_model(tmp_path / "u.nnx")
    assert [w.shape for w in loaded.get_weights()] == [(3, 4), (4,), (4,), (4, 2), (2,)]
    members = _members(tmp_path / "u.nnx")
    header = _header_of(members)
    header["config"]["layers"][2]["config"]["units"] = 10**9  # a Dense after the user layer
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "do not match the architecture", peak_mb=5)
    wrong = {**members, "weight_0.npy": _npy(np.zeros((4, 4), "float32"))}  # before the user layer: checked
    _refused(_write(tmp_path, _zip(wrong)), "do not match the architecture")


# -- the JSON header ---------------------------------------------------------------------------
_BAD_FIELDS = [
    ("version", "1"), ("version", None), ("version", [1]), ("version", True), ("version", 1.0), ("version", 0),
    ("weights", None), ("weights", -1), ("weights", "2"), ("weights", True), ("weights", 10**9),
    ("config", None), ("config", []), ("config", "Sequential"),
    ("dtype", "int8"), ("dtype", None), ("dtype", ["float32"]),
    ("shuffle_rng", "x"), ("shuffle_rng", []), ("shuffle_rng", {"bit_generator": 5}),
    ("shuffle_rng", {"bit_generator": "PCG64", "state": "nope"}),
    ("shuffle_rng", {"bit_generator": "Nope", "state": {"state": 1, "inc": 1}}),
    ("shuffle_rng", {"bit_generator": "PCG64", "state": {"state": 1.5, "inc": 1}, "has_uint32": 0, "uinteger": 0}),
    ("compile", "adam"), ("compile", []),
]


@pytest.mark.parametrize("field, value", _BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in _BAD_FIELDS])
def test_header_field_of_the_wrong_type(good, tmp_path, field, value):
    members = _members(good)
    header = _header_of(members)
    header[field] = value
    _refused(_write(tmp_path, _zip(_with_header(members, header))))


_BAD_CONFIGS = [
    ("layers", None), ("layers", "Dense"), ("layers", [1]), ("layers", [{"class_name": 3}]),
    ("input_shape", {}), ("input_shape", [0]), ("input_shape", [-2]), ("input_shape", [True]),
    ("input_shape", "4"), ("input_shape", []), ("input_shape", [4.0]), ("name", 5),
]


@pytest.mark.parametrize("field, value", _BAD_CONFIGS, ids=[f"{f}={v!r}"[:40] for f, v in _BAD_CONFIGS])
def test_config_field_of_the_wrong_type(good, tmp_path, field, value):
    members = _members(good)
    header = _header_of(members)
    header["config"][field] = value
    _refused(_write(tmp_path, _zip(_with_header(members, header))))


@pytest.mark.parametrize("layer", [
    {"class_name": "Dense", "config": {"units": "5"}}, {"class_name": "Dense", "config": {"units": -5}},
    {"class_name": "Dense", "config": {"units": 2, "surprise": 1}}, {"class_name": "Nope", "config": {}},
    {"class_name": "Dense", "config": []}, {"class_name": "Input", "config": {"shape": [4]}},
])
def test_bad_layer_config(good, tmp_path, layer):
    members = _members(good)
    header = _header_of(members)
    header["config"]["layers"][1] = layer
    _refused(_write(tmp_path, _zip(_with_header(members, header))))


@pytest.mark.parametrize("compile_cfg", [
    {"optimizer": 3, "loss": "mse", "metrics": [], "iterations": 1, "slots": [2, 2, 2, 2]},
    {"optimizer": "adam", "loss": "mse", "metrics": "accuracy", "iterations": 1, "slots": [2, 2, 2, 2]},
    {"optimizer": "adam", "loss": "mse", "metrics": [], "iterations": -1, "slots": [2, 2, 2, 2]},
    {"optimizer": "adam", "loss": "mse", "metrics": [], "iterations": True, "slots": [2, 2, 2, 2]},
    {"optimizer": "adam", "loss": "mse", "metrics": [], "iterations": 1, "slots": None},
    {"optimizer": "adam", "loss": "mse", "metrics": [], "iterations": 1, "slots": [2, 2, 2, 99]},
    {"optimizer": {"class_name": "adam", "config": {"learning_rate": "fast"}}, "loss": "mse", "metrics": [],
     "iterations": 1, "slots": [2, 2, 2, 2]},
    {"optimizer": "adam", "loss": "no_such_loss", "metrics": [], "iterations": 1, "slots": [2, 2, 2, 2]},
])
def test_bad_compile_config(good, tmp_path, compile_cfg):
    members = _members(good)
    header = _header_of(members)
    header["compile"] = compile_cfg
    _refused(_write(tmp_path, _zip(_with_header(members, header))))


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 100_000 + "1" + "}" * 100_000,
    '{"format": "nnx-model", "version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"format": "nnx-model", "version": NaN}',
    b'{"format": "nnx-model", "version": 1, "name": "\xff\xfe"}',
    '{"format": "nnx-model"',
    '"just a string"',
])
def test_malformed_json(good, tmp_path, text):
    members = _members(good)
    _refused(_write(tmp_path, _zip(_with_header(members, text))))


def test_header_larger_than_the_limit(good, tmp_path):
    members = _members(good)
    header = _header_of(members)
    header["padding"] = "x" * (2 << 20)
    _refused(_write(tmp_path, _zip(_with_header(members, header))), "header")


def test_save_refuses_a_config_larger_than_load_reads(tmp_path, monkeypatch):
    from nnx import saving

    monkeypatch.setattr(saving, "MAX_HEADER_BYTES", 200)
    with pytest.raises(ValueError, match="JSON"):
        _model(compiled=False).save(tmp_path / "m.nnx")
    assert os.listdir(tmp_path) == []


def test_load_model_keeps_the_callers_floatx(tmp_path):
    with nnx.backend.use_floatx("float64"):
        model = nnx.Sequential([nnx.Input(3), nnx.Dense(2)])
    model.save(tmp_path / "m64.nnx")
    before = nnx.floatx()
    loaded = nnx.load_model(tmp_path / "m64.nnx")
    assert loaded.get_weights()[0].dtype == np.float64 and nnx.floatx() == before
    bad = _members(tmp_path / "m64.nnx")
    _refused(_write(tmp_path, _zip({**bad, "weight_0.npy": _npy(np.zeros((3, 3)))})))
    assert nnx.floatx() == before


# -- weights files -----------------------------------------------------------------------------
def test_weights_file_checked_like_model_files(tmp_path):
    model = _model(compiled=False)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    members = _members(path)
    before = model.get_weights()
    cases = {
        "shape": {**members, "weight_0.npy": _npy(np.zeros((4, 6), "float32"))},
        "extra": {**members, "extra.npy": _npy(np.zeros(1))},
        "huge": _with_header(members, {**_header_of(members), "weights": 10**12}),
        "type": _with_header(members, {**_header_of(members), "weights": "4"}),
        "deep": _with_header(members, "[" * 100_000 + "]" * 100_000),
    }
    for name, bad in cases.items():
        with pytest.raises(ValueError):
            model.load_weights(_write(tmp_path, _zip(bad), f"{name}.npz"))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# -- saving: temporaries and permissions -------------------------------------------------------
_SLOW_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    import nnx
    model = nnx.Sequential([nnx.Input(4), nnx.Dense(3)])
    real_savez = np.savez
    def savez_slowly(f, **arrays):
        real_savez(f, **dict(list(arrays.items())[:1]))  # part of the file is written ...
        f.flush()
        print("writing", flush=True)
        time.sleep(120)  # ... and the process is killed here
    np.savez = savez_slowly
    model.save(sys.argv[1])
""")


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="SIGKILL is POSIX")
def test_save_after_a_killed_save_removes_its_temporary(tmp_path):
    target = tmp_path / "m.nnx"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()  # SIGKILL: no cleanup runs in the child
        child.wait(30)
    left = os.listdir(tmp_path)
    assert len(left) == 1 and re.fullmatch(rf"\.m\.nnx\.{child.pid}\.[0-9a-f]+\.tmp", left[0]), left
    assert not target.exists()
    other = tmp_path / ".other.nnx.12345.0123456789ab.tmp"  # another target's temporary: not ours to remove
    other.write_bytes(b"x")
    os.utime(other, (1, 1))
    _model(compiled=False).save(target)
    assert sorted(os.listdir(tmp_path)) == [".other.nnx.12345.0123456789ab.tmp", "m.nnx"]
    nnx.load_model(target)


@pytest.mark.skipif(os.name != "posix", reason="process probing is POSIX")
def test_stale_temporaries_of_live_or_newer_writers_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".m.nnx.{sleeper.pid}.0123456789ab.tmp"  # a live writer, maybe mid-save
        newer = tmp_path / ".m.nnx.999999999.0123456789ab.tmp"  # started after ours
        legacy = tmp_path / ".m.nnx.abc_1234.tmp"  # tempfile.mkstemp's name, from an older nnx
        mine = tmp_path / f".m.nnx.{os.getpid()}.0123456789ab.tmp"  # another thread of this process
        ancient = tmp_path / f".m.nnx.{sleeper.pid}.ba9876543210.tmp"  # two days old: a recycled process id's
        now = time.time()
        for path, when in ((live, now - 60), (newer, now + 3600), (legacy, now - 60), (mine, now - 60),
                           (ancient, now - 2 * 86400)):
            path.write_bytes(b"partial")
            os.utime(path, (when, when))
        _model(compiled=False).save(tmp_path / "m.nnx")
        assert sorted(os.listdir(tmp_path)) == sorted(["m.nnx", live.name, newer.name, mine.name])
    finally:
        sleeper.kill()
        sleeper.wait(30)
    _model(compiled=False).save(tmp_path / "m.nnx")  # the live writer is gone now
    assert sorted(os.listdir(tmp_path)) == sorted(["m.nnx", newer.name, mine.name])


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_saved_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        model = _model(compiled=False)
        model.save(tmp_path / "m.nnx")
        model.save_weights(tmp_path / "w.npz")
        model.save(tmp_path / "m.nnx")  # replacing an existing file too
    finally:
        os.umask(old)
    assert (tmp_path / "m.nnx").stat().st_mode & 0o777 == mode
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == mode


def test_random_damage_gives_value_error_or_a_model(good, tmp_path):
    """Bytes overwritten, files cut short, sizes set to extremes: ValueError, or a model when the
    damage missed everything that matters (zip timestamps, say); never another exception."""
    import random

    rng = random.Random(0)
    data = good.read_bytes()
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for name, member in _members(good).items():
            z.writestr(name, member)
    sources = [data, f.getvalue()]
    path = tmp_path / "damaged.nnx"
    start = time.perf_counter()
    for _ in range(300):
        b = bytearray(rng.choice(sources))
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:
            b = b[:rng.randrange(len(b))]
        elif kind == 2:
            i = rng.randrange(len(b))
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f"])
        else:
            b[rng.randrange(len(b) - 22, len(b))] = rng.randrange(256)  # the end-of-directory record
        path.write_bytes(bytes(b))
        try:
            nnx.load_model(path)
        except ValueError:
            pass
    assert time.perf_counter() - start < 20


def test_frozen_layers_roundtrip_with_their_optimizer_state(tmp_path):
    """Slots belong to the trainable weights only: the check follows each layer's trainable flag."""
    nnx.seed(1)
    model = nnx.Sequential([nnx.Input(3), nnx.Dense(4, trainable=False), nnx.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), epochs=2, verbose=0)
    model.save(tmp_path / "m.nnx")
    loaded = nnx.load_model(tmp_path / "m.nnx")
    ours, theirs = model.optimizer.get_state(nnx.to_numpy), loaded.optimizer.get_state(nnx.to_numpy)
    assert len(theirs["slots"]) == 2 and theirs["iterations"] == ours["iterations"]
    for a, b in zip(sum(ours["slots"], []), sum(theirs["slots"], [])):
        np.testing.assert_array_equal(a, b)


def test_slot_lists_that_do_not_line_up_with_the_trainable_weights(good, tmp_path):
    members = _members(good)
    header = _header_of(members)
    header["compile"]["slots"] = [2, 2]  # four trainable weights, two slot lists
    fewer = {k: v for k, v in _with_header(members, header).items() if not k.startswith(("slot_2", "slot_3"))}
    _refused(_write(tmp_path, _zip(fewer)), "optimizer state")
    fewer["slot_1_0.npy"] = _npy(np.zeros((7, 7), "float32"))  # a shape no weight has
    _refused(_write(tmp_path, _zip(fewer)), "matches no weight")

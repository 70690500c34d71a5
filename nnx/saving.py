"""Model files: one ``.nnx`` file (a zip of ``.npy`` arrays, no pickle anywhere) holding the
architecture and compile config as JSON, every weight, the optimizer's state, and the states of the
model's shuffle generator and dropout stream (JSON), written atomically (a temporary file in the
same folder, then ``os.replace``).

Reading a file costs memory and time in proportion to the model it describes, whatever the file
holds, and anything that is not a complete nnx file raises ``ValueError``:

- the zip directory is checked before any member is read: only the members the header names
  (``__nnx__``, ``weight_<i>``, ``slot_<i>_<j>``, all ``.npy``), stored or deflated, unencrypted,
  with declared sizes that the file can actually hold;
- the JSON header is at most ``MAX_HEADER_BYTES``, and its fields are type-checked;
- the parameters the architecture implies are counted from the config (for the layer types this
  module knows: ``Input``, ``Dense``, ``Activation``, ``Dropout``, ``Flatten``,
  ``BatchNormalization``, ``LayerNormalization``, ``Embedding``) and compared with
  the file's size and with each array's ``.npy`` header (dtype, shape) before any array data is
  read or any model is built;
- arrays are read with ``allow_pickle`` never involved: plain numeric dtypes only, read in chunks
  into an array of the declared (already checked) size.

A config holding layer types this module does not know (user layers, registered with
``nnx.layers.register``) is checked for the layers before the first unknown one; beyond it, each
array is bounded by the data the file holds, and the model's own ``set_weights`` checks the rest.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
import struct
import time
import zipfile
from typing import Any, Callable

import numpy as np  # host side: files in, files out

from . import backend as _backend
from . import layers as _layers
from . import losses as _losses
from . import optimizers as _optimizers
from . import random as _random

FORMAT = "nnx-model"
WEIGHTS_FORMAT = "nnx-weights"
VERSION = 1
_META = "__nnx__"
_HEADER = _META + ".npy"  # its member in the zip
_FLOATX = ("float16", "float32", "float64")

MAX_HEADER_BYTES = 1 << 20  # the JSON header; save refuses to write a larger one
_MAX_MEMBERS = 65535  # zip entries (a model with 20,000 weight arrays and Adam's slots fits)
_MAX_DIRECTORY_BYTES = 16 << 20  # the zip's central directory
_MAX_NPY_HEADER = 10000  # numpy's own default limit for a .npy header
_MEMBER_SLACK = 1 << 12  # per member, beyond its array data: the .npy header (and then some)
_DEFLATE_RATIO = 1100  # deflate expands at most ~1032:1; a member claiming more is corrupt
_MAX_SLOTS = 8  # optimizer state arrays per weight
_CHUNK = 1 << 22  # bytes read at a time
_MEMBER = re.compile(r"(?:__nnx__|weight_(?:0|[1-9][0-9]{0,8})|slot_(?:0|[1-9][0-9]{0,8})_(?:0|[1-9]))\.npy")


class _Refused(ValueError):
    """Raised inside this module for a file it refuses; surfaces as a plain ``ValueError``."""


class MissingFileError(FileNotFoundError, ValueError):
    """``load_model`` / ``load_weights`` on a path where there is no file: a ``ValueError`` (as
    Keras 3 raises, and as nnx raises for every file it cannot load) that is also a
    ``FileNotFoundError``, so ``except FileNotFoundError`` / ``except OSError`` keep working.
    ``errno`` is ``ENOENT`` and ``filename`` the path, as for ``open``.

    >>> try:
    ...     model = nnx.load_model("checkpoint.nnx")
    ... except FileNotFoundError:
    ...     model = build_model()
    """

    def __str__(self) -> str:
        return str(self.strerror)


def _path_of(filepath: Any) -> str:
    """``filepath`` as a str path, checked for what no file name can be."""
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise TypeError(f"filepath must be a str or os.PathLike; received {type(filepath).__name__}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path == "":
        raise ValueError("filepath must name a file; received an empty string.")
    if "\x00" in path:
        raise ValueError(f"filepath must not contain a NUL byte; received {path!r}.")
    return path


def _target_path(filepath: Any) -> str:
    """The path ``save`` writes to, checked before anything is written: it must name a file (not
    a folder) in a folder that exists."""
    path = _path_of(filepath)
    if os.path.isdir(path):
        raise ValueError(f"filepath must name a file; received {path!r}, which is a folder.")
    if os.path.basename(path) == "":
        raise ValueError(f"filepath must name a file; received {path!r}, which ends in a path separator.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"The folder a file is saved in must exist; received {path!r}, whose folder "
                         f"{folder!r} {what}.")
    return path


def _source_path(filepath: Any) -> str:
    """The path ``load_model`` reads, checked: a file that exists."""
    path = _path_of(filepath)
    if os.path.isdir(path):
        raise ValueError(f"Expected the path of an nnx file; received {path!r}, which is a folder.")
    if not os.path.isfile(path):
        raise MissingFileError(errno.ENOENT, f"No such file: {path!r} (expected the path of a file written by "
                                             f"model.save or model.save_weights).", path)
    return path


# -- writing -----------------------------------------------------------------------------------
_TEMP = re.compile(r"(?:([0-9]{1,10})\.[0-9a-f]{12}|[a-z0-9_]{8})\.tmp")  # ours, or tempfile.mkstemp's (older nnx)
_STALE_LIVE_WRITER_S = 24 * 3600  # a temporary of a live process id this old is a recycled id's


def _create_temp(folder: str, base: str) -> tuple[int, str]:
    """A new hidden file ``.{base}.{pid}.{random}.tmp`` in ``folder``, created with mode 0o666 so
    that the process umask applies exactly as for any new file (no umask reading, no chmod)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a temporary file next to {base!r} in {folder!r}.")


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); best effort."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _writer_gone(pid: int, mtime_ns: int) -> bool:
    """True when the process that named a temporary after itself can no longer be writing it."""
    if pid == os.getpid():
        return False  # another thread of this process may be saving the same target right now
    if os.name != "posix":
        return True  # no safe probe; a file still open for writing cannot be removed there anyway
    if time.time_ns() - mtime_ns > _STALE_LIVE_WRITER_S * 10**9:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError, OSError):
        return False
    try:  # a killed process its parent has not reaped yet writes nothing either
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[:1] == [b"Z"]
    except OSError:
        return False


def _remove_stale_temporaries(folder: str, base: str, own: str, own_mtime_ns: int) -> None:
    """Remove temporaries of target ``base`` that an interrupted save (a killed process) left behind:
    those older than this save's own whose writer is gone. Best effort: errors are ignored."""
    prefix = f".{base}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name == own or not name.startswith(prefix):
            continue
        match = _TEMP.fullmatch(name[len(prefix):])
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime_ns >= own_mtime_ns:
                continue
            if match.group(1) is not None and not _writer_gone(int(match.group(1)), st.st_mtime_ns):
                continue
            os.remove(entry.path)
        except OSError:
            continue


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = _create_temp(folder, base)
    try:
        own_mtime_ns = os.fstat(fd).st_mtime_ns
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    _remove_stale_temporaries(folder, base, os.path.basename(tmp), own_mtime_ns)


def _meta_array(meta: dict) -> np.ndarray:
    data = json.dumps(meta).encode("utf-8")
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError(f"The model's config takes {len(data):,} bytes of JSON, more than the "
                         f"{MAX_HEADER_BYTES:,} a file may hold.")
    return np.frombuffer(data, dtype=np.uint8)


# -- reading: the zip directory ----------------------------------------------------------------
def _directory_size(fh, size: int) -> tuple[int, int]:
    """(entries, bytes) of the zip's central directory, from its end records, before zipfile reads it."""
    tail = min(size, 22 + 65535)
    fh.seek(size - tail)
    data = fh.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or len(data) - at < 22:
        raise zipfile.BadZipFile("no end of central directory record")
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", data[at:at + 22])
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= 20 and data[at - 20:at - 16] == b"PK\x06\x07":
        _, _, offset, _ = struct.unpack("<4sLQL", data[at - 20:at])
        if offset + 56 > size:
            raise zipfile.BadZipFile("the zip64 directory record lies past the end of the file")
        fh.seek(offset)
        record = fh.read(56)
        if len(record) != 56 or record[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("the zip64 directory record is damaged")
        entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


class _Archive:
    """An nnx zip whose directory has been checked member by member; reads arrays with bounds."""

    def __init__(self, fh, path: str):
        self.path = path
        self.size = os.fstat(fh.fileno()).st_size
        entries, cd_size = _directory_size(fh, self.size)
        if entries > _MAX_MEMBERS or cd_size > _MAX_DIRECTORY_BYTES:
            raise _Refused(f"{path!r} is not an nnx file: its zip directory lists {entries:,} members "
                           f"({cd_size:,} bytes).")
        fh.seek(0)
        self.zip = zipfile.ZipFile(fh)
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self.zip.infolist():
            self._check_member(info)
            self.members[info.filename] = info

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        name, where = info.filename, f"{self.path!r}: member {info.filename!r}"
        if name in self.members:
            raise _Refused(f"{where} appears twice; this is not a file nnx wrote.")
        if not _MEMBER.fullmatch(name):
            raise _Refused(f"{self.path!r} is not an nnx file: it holds an unexpected member {name[:80]!r}.")
        if info.flag_bits & 0x41:
            raise _Refused(f"{where} is encrypted; nnx files never are.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"{where} uses compression method {info.compress_type}; nnx reads only stored "
                           f"or deflated members.")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise _Refused(f"{where} is corrupted: stored with {info.compress_size:,} bytes for "
                           f"{info.file_size:,} bytes of data.")
        if info.file_size > _DEFLATE_RATIO * info.compress_size + 1024:
            raise _Refused(f"{where} is corrupted: {info.compress_size:,} compressed bytes cannot hold the "
                           f"{info.file_size:,} it declares.")
        if info.header_offset + info.compress_size > self.size:
            raise _Refused(f"{self.path!r} is not a readable nnx file (truncated, corrupted or foreign): member "
                           f"{name!r} ends past the end of the file.")

    def declared(self, names) -> int:
        return sum(self.members[n].file_size for n in names)

    def read(self, name: str, check: Callable[[tuple[int, ...], np.dtype], None]) -> np.ndarray:
        """The array in member ``name``: its .npy header is read first and given to ``check``
        (which raises for a dtype or shape it does not expect), then exactly the data it declares."""
        info = self.members[name]
        where = f"{self.path!r}: member {name!r}"
        with self.zip.open(info) as raw:
            f = _Counting(raw)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
            else:
                raise _Refused(f"{where} has .npy format version {version}; nnx reads 1.0 and 2.0.")
            if (dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None
                    or dtype.kind not in "biuf" or dtype.itemsize > 8):
                raise _Refused(f"{where} holds an array of dtype {dtype}; nnx files hold plain numbers only.")
            if not all(type(d) is int and d >= 0 for d in shape):
                raise _Refused(f"{where} declares an invalid shape {shape!r}.")
            shape = tuple(shape)
            check(shape, dtype)
            nbytes = math.prod(shape) * dtype.itemsize
            if info.file_size != f.count + nbytes:
                raise _Refused(f"{where} is corrupted: {info.file_size:,} bytes for a {shape} {dtype} array.")
            out = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            done = 0
            while done < nbytes:
                chunk = raw.read(min(_CHUNK, nbytes - done))
                if not chunk:
                    raise _Refused(f"{where} is incomplete (truncated).")
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
            if raw.read(1):  # also makes zipfile check the CRC
                raise _Refused(f"{where} is corrupted: more data than its header declares.")
        if fortran:
            out = out.T
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

    def header(self, expected: str) -> dict:
        if _HEADER not in self.members:
            raise _Refused(f"{self.path!r} is not an nnx file: it has no {_META} entry.")
        if self.members[_HEADER].file_size > MAX_HEADER_BYTES + _MEMBER_SLACK:
            raise _Refused(f"{self.path!r} has a corrupted header: larger than {MAX_HEADER_BYTES:,} bytes.")

        def check(shape, dtype):
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
                raise _Refused(f"{self.path!r} is not an nnx file: its {_META} entry is a {shape} {dtype} array.")

        text = self.read(_HEADER, check).tobytes()
        try:
            meta = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
        except RecursionError:
            raise _Refused(f"{self.path!r} has a corrupted header: its JSON is nested too deeply.") from None
        except ValueError as e:  # also UnicodeDecodeError
            raise _Refused(f"{self.path!r} has a corrupted header: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != expected:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise _Refused(f"{self.path!r} is not an {expected} file (found format {str(found)[:80]!r}).")
        version = meta.get("version")
        if type(version) is not int or version < 1:
            raise _Refused(f"{self.path!r} has a corrupted header: format version {str(version)[:80]!r} is not "
                           f"a positive int.")
        if version > VERSION:
            raise _Refused(f"{self.path!r} was written by a newer nnx (format version {version}, this reads "
                           f"{VERSION}).")
        return meta


class _Counting:
    """A read-only file wrapper that counts the bytes read (the .npy header's length)."""

    def __init__(self, f):
        self.f, self.count = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.count += len(data)
        return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number nnx writes")


def _read_file(path: str, expected: str, plan: Callable[[dict, _Archive], dict[str, np.ndarray]]) -> tuple[dict, dict]:
    """Open ``path``, check its directory and header, and read the arrays ``plan`` asks for (after
    checking the file against the header). Anything wrong with the file raises ``ValueError``."""
    path = _source_path(path)
    with open(path, "rb") as fh:
        try:
            if fh.read(4) != b"PK\x03\x04":
                raise _Refused(f"{path!r} is not an nnx file: it is not a zip archive of arrays (truncated or foreign).")
            archive = _Archive(fh, path)
            try:
                meta = archive.header(expected)
                arrays = plan(meta, archive)
            finally:
                archive.zip.close()
        except _Refused as e:
            raise ValueError(str(e)) from None
        except RecursionError:
            raise ValueError(f"{path!r} is corrupted: nested too deeply.") from None
        except MemoryError:
            raise
        except Exception as e:  # zipfile, zlib, numpy's header parser: a damaged file in every case
            raise ValueError(f"{path!r} is not a readable nnx file (truncated, corrupted or foreign): "
                             f"{type(e).__name__}: {e}") from e
    return meta, arrays


# -- reading: what the header implies ----------------------------------------------------------
def _is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and value >= minimum


def _shape_of(value: Any, what: str, path: str) -> tuple[int, ...]:
    if _is_int(value, 1):
        return (value,)
    if not isinstance(value, list) or not value or not all(_is_int(d, 1) for d in value):
        raise _Refused(f"{path!r} holds an invalid model config: {what} must be a list of positive ints, "
                       f"received {str(value)[:80]!r}.")
    return tuple(value)


def _builtin(class_name: str) -> bool:
    """Whether ``class_name`` loads as nnx's own layer of that name (not a user class registered over it)."""
    from . import layers as _layers

    registry = getattr(_layers, "_CLASSES", None)
    own = getattr(_layers, class_name, None)
    return own is not None and (registry is None or registry.get(class_name) is own)


_CONV_NAMES = frozenset(cls.__name__ for cls in _layers.CONV_LAYERS)


def _architecture(config: Any, path: str) -> tuple[list[tuple[tuple[int, ...], bool]], bool, list[int]]:
    """The weights (shape, trainable) the config implies, layer by layer, for the layer types this
    module knows; ``exact`` is False when a layer of another type appears (the list then covers the
    layers before it), and the third list holds the widths of the Dense layers beyond it (each
    bounded later by the file's size)."""
    if not isinstance(config, dict):
        raise _Refused(f"{path!r} holds an invalid model config: a {type(config).__name__}, not a dict.")
    layers = config.get("layers")
    if not isinstance(layers, list) or not all(isinstance(entry, dict) for entry in layers):
        raise _Refused(f"{path!r} holds an invalid model config: 'layers' must be a list of dicts.")
    if config.get("name") is not None and not isinstance(config.get("name"), str):
        raise _Refused(f"{path!r} holds an invalid model config: 'name' must be a string.")
    shape = None
    if layers and layers[0].get("class_name") == "Input" and isinstance(layers[0].get("config"), dict):
        shape = _shape_of(layers[0]["config"].get("shape"), "Input's shape", path)
    if config.get("input_shape") is not None:
        input_shape = _shape_of(config["input_shape"], "input_shape", path)
        if shape is not None and shape != input_shape:
            raise _Refused(f"{path!r} holds an invalid model config: Input {shape} and input_shape {input_shape} differ.")
        shape = input_shape
    weights: list[tuple[tuple[int, ...], bool]] = []
    exact, units_beyond = True, []
    for index, entry in enumerate(layers):
        name, cfg = entry.get("class_name"), entry.get("config", {})
        if not isinstance(name, str) or not isinstance(cfg, dict):
            raise _Refused(f"{path!r} holds an invalid model config: layer {index} needs a 'class_name' string "
                           f"and a 'config' dict.")
        if name == "Input":
            if index:
                raise _Refused(f"{path!r} holds an invalid model config: Input must be the first layer.")
            continue
        known = _builtin(name) and name in ("Dense", "Activation", "Dropout", "Flatten", "BatchNormalization",
                                            "LayerNormalization", "Embedding")
        if name == "Dense" and known:
            units = cfg.get("units")
            if not _is_int(units, 1):
                raise _Refused(f"{path!r} holds an invalid model config: Dense units {str(units)[:40]!r}.")
            if not exact:
                units_beyond.append(units)
            elif shape is not None:  # built: kernel (in, units) and bias (units,)
                trainable = bool(cfg.get("trainable", True))
                weights.append(((shape[-1], units), trainable))
                if bool(cfg.get("use_bias", True)):
                    weights.append(((units,), trainable))
                shape = (*shape[:-1], units)
        elif name == "Flatten" and known and shape is not None:
            shape = (math.prod(shape),)
        elif name == "Embedding" and known:
            dims = (cfg.get("input_dim"), cfg.get("output_dim"))
            if not all(_is_int(d, 1) for d in dims):
                raise _Refused(f"{path!r} holds an invalid model config: Embedding dims {str(dims)[:60]!r}.")
            if not exact:
                units_beyond.append(dims[0] * dims[1])
            elif shape is not None:  # embeddings (input_dim, output_dim)
                weights.append((dims, bool(cfg.get("trainable", True))))
                shape = (*shape, dims[1])
        elif name in ("BatchNormalization", "LayerNormalization") and known and exact and shape is not None:
            weights += _normalization_weights(name, cfg, shape, path)
        elif name in _CONV_NAMES and _builtin(name) and shape is not None and exact:
            try:
                implied, shape = _layers.conv_architecture(name, cfg, shape)
            except ValueError as e:
                raise _Refused(f"{path!r} holds an invalid model config: layer {index} ({name}): {str(e)[:200]}") from None
            weights += [(s, bool(cfg.get("trainable", True))) for s in implied]
        elif not known and shape is not None:  # an unbuilt model has no weights, whatever its layers
            exact = False
    return weights, exact, units_beyond


def _normalization_weights(name: str, cfg: dict, shape: tuple[int, ...], path: str) -> list:
    """BatchNormalization: gamma, beta (as ``scale`` / ``center`` say), moving mean and variance,
    each (channels,); LayerNormalization: gamma, beta of the normalised axes' shape."""
    rank = len(shape) + 1
    axis = cfg.get("axis", -1)
    axes = axis if name == "LayerNormalization" and isinstance(axis, list) else [axis]
    positive = []
    for a in axes:
        if type(a) is not int or not (1 <= a < rank or -rank < a <= -1):
            raise _Refused(f"{path!r} holds an invalid model config: {name} axis {str(axis)[:40]!r} for inputs "
                           f"{shape}.")
        positive.append(a + rank if a < 0 else a)
    if len(set(positive)) != len(positive):
        raise _Refused(f"{path!r} holds an invalid model config: {name} axis {axis!r} names an axis twice.")
    dims = tuple(shape[a - 1] for a in sorted(positive))
    trainable = bool(cfg.get("trainable", True))
    out = [(dims, trainable)] if bool(cfg.get("scale", True)) else []
    if bool(cfg.get("center", True)):
        out.append((dims, trainable))
    if name == "BatchNormalization":
        out += [(dims, False), (dims, False)]  # the moving statistics: never trained
    return out


def _rng_from(state: Any, path: str, what: str = "shuffle") -> np.random.Generator | None:
    if state is None:
        return None

    def plain(value: Any, depth: int) -> bool:
        if isinstance(value, dict):
            return depth < 4 and all(isinstance(k, str) and plain(v, depth + 1) for k, v in value.items())
        return isinstance(value, str) or _is_int(value)

    if not isinstance(state, dict) or not isinstance(state.get("bit_generator"), str) or not plain(state, 0):
        raise _Refused(f"{path!r} holds an invalid {what} state.")
    try:
        return _random.generator_from_state(state)
    except MemoryError:
        raise
    except Exception as e:
        raise _Refused(f"{path!r} holds an invalid {what} state: {e}") from None


def _check_compile(cfg: Any, weights: int, path: str) -> None:
    if cfg is None:
        return
    bad = f"{path!r} holds an invalid compile config or optimizer state"
    if not isinstance(cfg, dict):
        raise _Refused(f"{bad}: a {type(cfg).__name__}, not a dict.")
    if not isinstance(cfg.get("optimizer"), (dict, str)) or not isinstance(cfg.get("loss"), (dict, str)):
        raise _Refused(f"{bad}: 'optimizer' and 'loss' must be names or config dicts.")
    metrics = cfg.get("metrics")
    if not isinstance(metrics, list) or not all(isinstance(m, (str, dict)) for m in metrics):
        raise _Refused(f"{bad}: 'metrics' must be a list of names.")
    if not isinstance(cfg.get("jit_compile", False), bool):
        raise _Refused(f"{bad}: 'jit_compile' must be true or false.")
    if not _is_int(cfg.get("iterations")) or cfg["iterations"] >= 2**63:
        raise _Refused(f"{bad}: 'iterations' must be a non-negative int.")
    slots = cfg.get("slots")
    if (not isinstance(slots, list) or len(slots) > weights
            or not all(_is_int(n) and n <= _MAX_SLOTS for n in slots)):
        raise _Refused(f"{bad}: 'slots' must list at most one count (0 to {_MAX_SLOTS}) per weight.")


def _mismatch(path: str, detail: str) -> _Refused:
    return _Refused(f"{path!r}: the file's arrays do not match the architecture: {detail}.")


def _expect(path: str, name: str, shape: tuple[int, ...] | None, kinds: str = "f"):
    """A header check: the dtype's kind in ``kinds``, the shape ``shape`` (None: any)."""

    def check(found: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind not in kinds:
            raise _mismatch(path, f"{name} holds {dtype} numbers")
        if shape is not None and found != shape:
            raise _mismatch(path, f"{name} holds a {found} array where the architecture has {shape}")

    return check


def _check_members(archive: _Archive, names: list[str], budget: int | None) -> None:
    """Exactly ``names`` (and the header) are in the file, with no more data than ``budget``."""
    path = archive.path
    wanted = set(names) | {_HEADER}
    extra = sorted(set(archive.members) - wanted)
    if extra:
        raise _Refused(f"{path!r} is not an nnx file: it holds unexpected members {', '.join(extra[:3])}"
                       f"{' ...' if len(extra) > 3 else ''}.")
    missing = [n for n in names if n not in archive.members]
    if missing:
        raise _Refused(f"{path!r} is incomplete: missing {missing[0][:-4]}.")
    declared = archive.declared(names)
    if budget is not None and declared > budget:
        raise _mismatch(path, f"it declares {declared:,} bytes of array data, the architecture needs at most {budget:,}")


def _room(archive: _Archive) -> int:
    """The most array elements the file could hold (2 bytes each, every member deflated to the limit)."""
    return _DEFLATE_RATIO * archive.size // 2 + 1024


def _model_plan(meta: dict, archive: _Archive) -> dict[str, np.ndarray]:
    path = archive.path
    if meta.get("dtype") not in _FLOATX:
        raise _Refused(f"{path!r} has a corrupted header: dtype {str(meta.get('dtype'))[:40]!r} is not one of "
                       f"{', '.join(_FLOATX)}.")
    count = meta.get("weights")
    if not _is_int(count):
        raise _Refused(f"{path!r} has a corrupted header: 'weights' must be a non-negative int.")
    if count > len(archive.members):
        raise _Refused(f"{path!r} is incomplete: it lists {count:,} weights and holds {len(archive.members):,} members.")
    compile_cfg = meta.get("compile")
    _check_compile(compile_cfg, count, path)
    meta["_rng"] = _rng_from(meta.get("shuffle_rng"), path)
    meta["_dropout_rng"] = _rng_from(meta.get("dropout_rng"), path, "dropout")  # absent in older files
    implied, exact, units_beyond = _architecture(meta.get("config"), path)
    slots = compile_cfg["slots"] if compile_cfg else []

    room = _room(archive)
    if exact and count != len(implied):
        raise _mismatch(path, f"the config implies {len(implied)} weight arrays, the file lists {count}")
    if not exact and count < len(implied):
        raise _mismatch(path, f"the config implies at least {len(implied)} weight arrays, the file lists {count}")
    if any(u > room for u in units_beyond):
        raise _mismatch(path, f"a layer of {max(units_beyond):,} units (Dense) or table entries (Embedding) cannot "
                              f"hold its weights in {archive.size:,} bytes")
    weight_sizes = [math.prod(s) for s, _ in implied]
    trainable = [s for s, t in implied if t]
    exact_slots = exact and len(slots) == len(trainable)
    if exact_slots:
        params = sum(weight_sizes) + sum(n * math.prod(s) for n, s in zip(slots, trainable))
    else:
        params = sum(weight_sizes) * (1 + max(slots, default=0))
    if exact and params > room:
        raise _mismatch(path, f"the config describes {params:,} parameters, more than {archive.size:,} bytes "
                              f"can hold")
    names = [f"weight_{i}.npy" for i in range(count)]
    slot_names = [f"slot_{i}_{j}.npy" for i, n in enumerate(slots) for j in range(n)]
    budget = 8 * params + _MEMBER_SLACK * (len(names) + len(slot_names)) if exact else None
    _check_members(archive, names + slot_names, budget)

    arrays = {}
    for i, name in enumerate(names):
        shape = implied[i][0] if i < len(implied) else None
        arrays[name] = archive.read(name, _expect(path, f"weight {i}", shape, "biuf" if shape is None else "f"))
    weight_shapes = [a.shape for a in arrays.values()]
    after = -1  # without exact slot shapes: the weight the previous slot list belongs to
    for i, n in enumerate(slots):
        expected = trainable[i] if exact_slots else None
        for j in range(n):
            name = f"slot_{i}_{j}.npy"
            if expected is not None:
                arrays[name] = archive.read(name, _expect(path, f"optimizer slot {i}.{j}", expected))
                continue
            picked: list[int] = []  # the first slot of a list belongs to the next weight of its shape

            def check(found: tuple[int, ...], dtype: np.dtype, i: int = i, picked: list[int] = picked) -> None:
                later = [k for k in range(after + 1, len(weight_shapes)) if weight_shapes[k] == found]
                if dtype.kind != "f" or not later:
                    raise _mismatch(path, f"optimizer slot {i} holds a {found} {dtype} array that matches no weight")
                picked.append(later[0])

            arrays[name] = archive.read(name, check)
            after = picked[0]
            expected = weight_shapes[after]
    return arrays


def _arrays(arrays: dict[str, np.ndarray], prefix: str, count: int) -> list[np.ndarray]:
    return [arrays[f"{prefix}{i}.npy"] for i in range(count)]


# -- whole models ------------------------------------------------------------------------------
def compile_config(model: Any) -> dict:
    """A compiled model's optimizer, loss and metrics as JSON-ready configs (the optimizer's
    state apart).

    Args:
        model: a compiled ``Sequential``.

    Returns:
        ``{"optimizer", "loss", "metrics"}``, and ``"jit_compile": True`` when it was asked for.

    >>> compile_from_config(other_model, compile_config(model))
    """
    return {
        "optimizer": _optimizers.serialize(model.optimizer),
        "loss": model.loss.get_config(),
        "metrics": [m if isinstance(m, str) else {**m.get_config(), "name": m.name} for m in model._metric_specs],
        **({"jit_compile": True} if getattr(model, "jit_compile", False) else {}),
    }


def compile_from_config(model: Any, cfg: dict) -> None:
    """Compile ``model`` as ``compile_config`` described it (a fresh optimizer of that config).

    Args:
        model: the ``Sequential`` to compile.
        cfg: what ``compile_config`` returned.

    >>> compile_from_config(model, {"optimizer": "adam", "loss": "mse", "metrics": []})
    """
    model.compile(optimizer=_optimizers.get(cfg["optimizer"]), loss=_losses.get(cfg["loss"]), metrics=cfg["metrics"],
                  jit_compile=bool(cfg.get("jit_compile", False)))


def save_model(model: Any, filepath: str) -> None:
    """Write ``model`` to an ``.nnx`` file, atomically (``model.save`` calls this).

    Args:
        model: a built ``Sequential``.
        filepath: the file to write (str or ``os.PathLike``); an existing file is replaced.

    Raises:
        TypeError: ``filepath`` is not a path.
        ValueError: the model is not built, its config exceeds ``MAX_HEADER_BYTES`` of JSON, or
            the path cannot be a file (empty, a NUL byte, a folder, a missing folder); nothing
            is written then.
        OSError: the file system refuses the write.

    >>> save_model(model, "model.nnx")
    """
    filepath = _target_path(filepath)
    if not model.built:
        raise ValueError("Build the model (give it an Input, or fit it) before saving it.")
    weights = model.get_weights()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": model._dtype,
        "config": model.get_config(),
        "weights": len(weights),
        "compile": None,
        "shuffle_rng": None if model._shuffle_rng is None else model._shuffle_rng.bit_generator.state,
        "dropout_rng": None if model._dropout_rng is None else model._dropout_rng.state(),
    }
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    if model.compiled:
        state = model.optimizer.get_state(_backend.to_numpy, model.trainable_weights)
        meta["compile"] = {
            **compile_config(model),
            "iterations": state["iterations"],
            "slots": [len(s) for s in state["slots"]],
        }
        for i, slots in enumerate(state["slots"]):
            for j, a in enumerate(slots):
                arrays[f"slot_{i}_{j}"] = a
    arrays[_META] = _meta_array(meta)
    _write_atomic(filepath, arrays)


def load_model(filepath: str, compile: bool = True) -> Any:
    """Load a model saved with ``model.save`` onto the current backend, compiled and with its
    optimizer state, shuffle generator and dropout stream, ready to resume training exactly. The
    model keeps the float type it was saved in; the caller's ``floatx`` is left as it was.
    ``nnx.models.load_model`` is the same function.

    Args:
        filepath: the file to read (str or ``os.PathLike``).
        compile: False loads the architecture and the weights only, not compiled (as Keras's
            ``compile=False``). Defaults to True.

    Returns:
        The ``Sequential``.

    Raises:
        TypeError: ``filepath`` is not a path.
        ValueError: no such file (the error is also a ``FileNotFoundError``, naming the path), a
            folder, an empty path or a NUL byte; a truncated, corrupted, foreign or hostile file
            (having cost no more memory and time than the model it describes), including
            optimizer slots that are NaN or inf and a step count that is not a non-negative int.
            Nothing in the file is executed; pickles are never read.

    >>> model = nnx.load_model("model.nnx")
    """
    from .models import Sequential

    filepath = _source_path(filepath)
    meta, arrays = _read_file(filepath, FORMAT, _model_plan)
    with _backend.use_floatx(meta["dtype"]):  # this thread, this block: the caller's floatx stays
        try:
            model = Sequential.from_config(meta["config"])
        except MemoryError:
            raise
        except Exception as e:
            hint = (" A class of your own (a layer, activation, loss, …) must be registered before loading: "
                    "decorate it with @nnx.register." if str(e).startswith("Unknown ") else "")
            raise ValueError(f"{filepath!r} holds an invalid model config: {e}{hint}") from e
        try:
            model.set_weights(_arrays(arrays, "weight_", meta["weights"]))
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"{filepath!r}: the file's arrays do not match the architecture: {e}") from e
        compile_cfg = meta.get("compile")
        if compile_cfg and compile:
            try:
                compile_from_config(model, compile_cfg)
                slots = [[arrays[f"slot_{i}_{j}.npy"] for j in range(n)] for i, n in enumerate(compile_cfg["slots"])]
                model.optimizer.set_state({"iterations": compile_cfg["iterations"], "slots": slots}, model.backend,
                                          model.trainable_weights)
            except MemoryError:
                raise
            except Exception as e:
                raise ValueError(f"{filepath!r} holds an invalid compile config or optimizer state: {e}") from e
    if meta["_rng"] is not None:
        model._shuffle_rng = meta["_rng"]
    if meta["_dropout_rng"] is not None:
        model._dropout_rng = _random.Stream(meta["_dropout_rng"])
    return model


# -- weights only ------------------------------------------------------------------------------
def save_weights(model: Any, filepath: str) -> None:
    """Write ``model``'s weights alone to a file, atomically (``model.save_weights`` calls this).

    Args:
        model: a ``Sequential`` (or any layer).
        filepath: the file to write.

    Raises:
        TypeError, ValueError, OSError: as ``save_model``.

    >>> save_weights(model, "weights.nnx")
    """
    filepath = _target_path(filepath)
    weights = model.get_weights()
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    arrays[_META] = _meta_array({"format": WEIGHTS_FORMAT, "version": VERSION, "weights": len(weights),
                                 "shapes": [list(w.shape) for w in weights]})
    _write_atomic(filepath, arrays)


def load_weights(model: Any, filepath: str) -> None:
    """Load weights saved with ``save_weights`` into ``model``; nothing changes unless every array
    matches the model's weights in count and shape.

    Args:
        model: the ``Sequential`` (or layer) to load into.
        filepath: the file to read.

    Raises:
        ValueError: as ``load_model`` for the file, or weights that do not match the model's.

    >>> load_weights(model, "weights.nnx")
    """
    expected = [tuple(w.shape) for w in model.get_weights()]

    def plan(meta: dict, archive: _Archive) -> dict[str, np.ndarray]:
        path, count = archive.path, meta.get("weights")
        if not _is_int(count):
            raise _Refused(f"{path!r} has a corrupted header: 'weights' must be a non-negative int.")
        if count != len(expected):
            raise _Refused(f"{path!r}: the model expects {len(expected)} weight arrays, the file holds {count}.")
        names = [f"weight_{i}.npy" for i in range(count)]
        budget = 8 * sum(math.prod(s) for s in expected) + _MEMBER_SLACK * count
        _check_members(archive, names, budget)
        return {n: archive.read(n, _expect(path, f"weight {i}", s)) for i, (n, s) in enumerate(zip(names, expected))}

    filepath = _source_path(filepath)
    meta, arrays = _read_file(filepath, WEIGHTS_FORMAT, plan)
    model.set_weights(_arrays(arrays, "weight_", meta["weights"]))

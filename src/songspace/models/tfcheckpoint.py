"""Reading TensorFlow checkpoints (tensor bundles) without TensorFlow.

A bundle with prefix P is two files:

- `P.index`: a LevelDB-format table (the SSTable TensorFlow's `table` library writes). Its
  48-byte footer ends in the magic 0xdb4775248b80fb57 and points to the index block, whose
  entries point to the data blocks. A block is prefix-compressed `key -> value` entries, a
  restart array, then a 5-byte trailer (compression type, masked crc32c). The key "" holds the
  BundleHeaderProto; every other key is a tensor's name and its value a BundleEntryProto
  (dtype, shape, shard, offset, size, crc32c).
- `P.data-00000-of-00001`: the tensors' raw little-endian bytes, at the entries' offsets.

    tensors = read_bundle(".../MSD_musicnn/")   # {name: np.ndarray}

Only what checkpoints of plain variables use is read: one shard, uncompressed blocks, whole
(unsliced) tensors of numeric dtypes. Anything else is a `CheckpointError` naming the file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from songspace.checkpoint import CheckpointError  # the one error of unreadable weight files

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48            # two block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_BYTES = 5      # compression type (1) + masked crc32c (4)
HEADER_KEY = b""             # the BundleHeaderProto's key

# TensorFlow's DataType enum -> numpy dtype (little-endian), for the types variables use
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 19: "<f2"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the data file: `size` bytes at `offset`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def bundle_files(prefix: str | Path) -> tuple[Path, Path]:
    """`(index, data)` paths of the bundle `prefix`; a folder means the prefix "" inside it
    (musicnn's checkpoints are `<folder>/.index` and `<folder>/.data-00000-of-00001`)."""
    prefix = Path(prefix)
    if prefix.is_dir():
        return prefix / ".index", prefix / ".data-00000-of-00001"
    return Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")


# ---------------------------------------------------------------- wire formats


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos`: (value, next position). IndexError past the end."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _proto_fields(buf: bytes) -> dict[int, list]:
    """A protobuf message's fields: `{number: [values]}`; varints and fixed-width values as
    ints, length-delimited ones as bytes (nested messages are parsed by the caller)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            (value,), pos = struct.unpack_from("<Q", buf, pos), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the message")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            (value,), pos = struct.unpack_from("<I", buf, pos), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The `(key, value)` entries of the block at `offset` (`size` bytes before its trailer)."""
    end = offset + size
    if end + BLOCK_TRAILER_BYTES > len(table):
        raise ValueError(f"block at byte {offset} ({size} bytes) runs past the end of the file")
    if table[end] != 0:
        raise ValueError(f"block at byte {offset} is compressed (type {table[end]}); only "
                         "uncompressed blocks are supported")
    (restarts,) = struct.unpack_from("<I", table, end - 4)
    stop = end - 4 * (restarts + 1)
    if stop < offset:
        raise ValueError(f"block at byte {offset}: restart array larger than the block")
    entries, key, pos = [], b"", offset
    while pos < stop:
        shared, pos = _varint(table, pos)
        unshared, pos = _varint(table, pos)
        value_len, pos = _varint(table, pos)
        if shared > len(key) or pos + unshared + value_len > stop:
            raise ValueError(f"block at byte {offset}: malformed entry at byte {pos}")
        key = key[:shared] + table[pos : pos + unshared]
        pos += unshared
        entries.append((key, table[pos : pos + value_len]))
        pos += value_len
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _table_entries(table: bytes) -> list[tuple[bytes, bytes]]:
    """Every `(key, value)` of a LevelDB-format table, in key order."""
    if len(table) < FOOTER_BYTES:
        raise ValueError(f"{len(table)} bytes: shorter than a table's {FOOTER_BYTES}-byte footer")
    footer = table[-FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)
    if magic != TABLE_MAGIC:
        raise ValueError(f"no table magic at the end (found {magic:#018x}): not a tensor bundle "
                         "index, or truncated")
    _, _, pos = _handle(footer)              # metaindex: unused by bundles
    index_offset, index_size, _ = _handle(footer, pos)
    entries = []
    for _, handle in _block(table, index_offset, index_size):
        offset, size, _ = _handle(handle)
        entries += _block(table, offset, size)
    return entries


def _entry(name: str, value: bytes) -> TensorEntry:
    fields = _proto_fields(value)
    if 7 in fields:
        raise ValueError(f"tensor '{name}' is saved in slices, which are not supported")
    dtype_code = fields.get(1, [0])[0]
    if dtype_code not in DTYPES:
        raise ValueError(f"tensor '{name}' has TensorFlow dtype {dtype_code}, which is not supported")
    shape = []
    for shape_msg in fields.get(2, []):
        for dim in _proto_fields(shape_msg).get(2, []):
            shape.append(_proto_fields(dim).get(1, [0])[0])
    return TensorEntry(name, DTYPES[dtype_code], tuple(shape), fields.get(3, [0])[0],
                       fields.get(4, [0])[0], fields.get(5, [0])[0])


# ---------------------------------------------------------------- reading


def read_index(prefix: str | Path) -> dict[str, TensorEntry]:
    """The bundle's tensors by name, from its `.index` file (no tensor data is read)."""
    index_path, _ = bundle_files(prefix)
    if not index_path.is_file():
        raise CheckpointError(f"{index_path}: no such file (the index of a TensorFlow checkpoint)")
    table = index_path.read_bytes()
    try:
        entries = _table_entries(table)
        header = dict(entries).get(HEADER_KEY)
        if header is None:
            raise ValueError("no bundle header (the empty key): a LevelDB table but not a tensor bundle")
        header_fields = _proto_fields(header)
        shards = header_fields.get(1, [0])[0]
        if shards != 1:
            raise ValueError(f"{shards} data shards; only single-shard bundles are supported")
        if header_fields.get(2, [0])[0] != 0:
            raise ValueError("big-endian tensor data is not supported")
        out = {}
        for key, value in entries:
            if key != HEADER_KEY:
                name = key.decode("utf-8")
                out[name] = _entry(name, value)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
        raise CheckpointError(f"{index_path}: not a readable TensorFlow checkpoint index: {err}") from None
    return out


def read_bundle(prefix: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The bundle's tensors `{name: array}` (all of them, or those in `names`).

    Every tensor's byte range is checked against its dtype and shape and against the data
    file's size, so a truncated data file is an error, never a short or garbled array.
    """
    index = read_index(prefix)
    _, data_path = bundle_files(prefix)
    if names is not None:
        missing = sorted(set(names) - set(index))
        if missing:
            raise CheckpointError(f"{bundle_files(prefix)[0]}: no tensor(s) {', '.join(missing)}")
        index = {n: index[n] for n in names}
    if not data_path.is_file():
        raise CheckpointError(f"{data_path}: no such file (the data of a TensorFlow checkpoint)")
    data_size = data_path.stat().st_size
    out = {}
    with data_path.open("rb") as f:
        for name, e in index.items():
            dtype = np.dtype(e.dtype)
            expected = int(np.prod(e.shape, dtype=np.int64)) * dtype.itemsize
            if e.size != expected:
                raise CheckpointError(f"{data_path}: tensor '{name}' {list(e.shape)} {dtype} should take "
                                      f"{expected} bytes, the index says {e.size}")
            if e.offset + e.size > data_size:
                raise CheckpointError(f"{data_path}: truncated: tensor '{name}' ends at byte "
                                      f"{e.offset + e.size}, the file has {data_size}")
            f.seek(e.offset)
            out[name] = np.frombuffer(f.read(e.size), dtype=dtype).reshape(e.shape).astype(dtype.newbyteorder("="))
    return out

"""The module tree TVM packs into an exported library (`__tvm_ffi__library_bin`): read it back
from a `library.so` without loading its modules, and rewrite one module's bytes.

Layout (little-endian, TVM's `PackImportsToBytes`): u64 length, then the import tree as CSR
(`vec<u64>` indptr, `vec<u64>` child indices), then per module its kind as `str` and, except for
the "_lib" placeholder of the host code, its bytes as `str` (`str` = u64 length + bytes).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

BLOB_SYMBOL = "__tvm_ffi__library_bin"
HOST_CODE = "_lib"


@dataclass
class LibraryBlob:
    indptr: list[int]
    children: list[int]
    modules: list[tuple[str, bytes | None]]  # (kind, bytes); bytes None for HOST_CODE

    @staticmethod
    def parse(blob: bytes) -> LibraryBlob:
        reader = Reader(blob)
        n_bytes = reader.u64()
        if n_bytes != len(blob) - 8:
            raise ValueError(f"library blob says {n_bytes} bytes, holds {len(blob) - 8}")
        indptr, children = reader.u64_vector(), reader.u64_vector()
        modules = []
        for _ in range(len(indptr) - 1):
            kind = reader.string().decode()
            modules.append((kind, None if kind == HOST_CODE else reader.string()))
        if reader.offset != len(blob):
            raise ValueError(f"library blob has {len(blob) - reader.offset} bytes past its modules")
        return LibraryBlob(indptr, children, modules)

    def to_bytes(self) -> bytes:
        body = _u64_vector(self.indptr) + _u64_vector(self.children)
        for kind, data in self.modules:
            body += pack_string(kind.encode()) + (b"" if data is None else pack_string(data))
        return struct.pack("<Q", len(body)) + body


def read_blob(library_path: str) -> bytes:
    """The packed module tree of an exported library, read from its exported symbol (the host
    code is loaded, as a shared library, but none of the modules in the tree is)."""
    address = ctypes.addressof(_symbol(ctypes.CDLL(library_path)))
    (n_bytes,) = struct.unpack("<Q", ctypes.string_at(address, 8))
    return ctypes.string_at(address, 8 + n_bytes)


def _symbol(lib: ctypes.CDLL) -> ctypes.c_ubyte:
    try:
        return ctypes.c_ubyte.in_dll(lib, BLOB_SYMBOL)
    except ValueError as err:
        raise ValueError(f"'{lib._name}' holds no packed modules ({BLOB_SYMBOL})") from err


class Reader:
    """Reads TVM's serializer formats (`support/serializer.h`) from bytes."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise ValueError(f"truncated: {n} bytes wanted at {self.offset} of {len(self.data)}")
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def u64_vector(self) -> list[int]:
        return [self.u64() for _ in range(self.u64())]

    def string(self) -> bytes:
        return self.take(self.u64())


def pack_string(data: bytes) -> bytes:
    """`str` as TVM's serializer writes it: u64 length, then the bytes."""
    return struct.pack("<Q", len(data)) + data


def _u64_vector(values: list[int]) -> bytes:
    return struct.pack(f"<Q{len(values)}Q", len(values), *values)

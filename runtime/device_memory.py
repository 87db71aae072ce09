"""Memory a runtime lays out on its device once: views of one buffer at byte offsets (a task's
weights inside the weight buffer) or at an address (mapped pages), page-locked host staging
for copies to a GPU, and the check that a library runs on the device it was built for."""

from __future__ import annotations

import ctypes

import numpy as np
import tvm

from tvm_weightvirt.compile.library import Library, sm_number

CPU, CUDA, CUDA_HOST = 1, 2, 3  # DLPack device types


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", _DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
    ]


_malloc = ctypes.CDLL(None).malloc
_malloc.restype, _malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype = ctypes.py_object
_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_DTYPE_CODES = {"i": 0, "u": 1, "f": 2}


class _Capsule:
    """A DLPack producer of one prepared capsule."""

    def __init__(self, capsule, device: tuple[int, int]) -> None:
        self.capsule, self.device = capsule, device

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device


def offset_view(
    base: tvm.runtime.Tensor, byte_offset: int, shape: tuple[int, ...], dtype: str = "float32"
) -> tvm.runtime.Tensor:
    """A tensor over `base`'s memory from `byte_offset` (a multiple of 64), zero-copy. The
    caller keeps `base` alive as long as the view."""
    dt = np.dtype(dtype)
    n_bytes = int(np.prod(shape)) * dt.itemsize
    base_bytes = int(np.prod(base.shape)) * np.dtype(base.dtype).itemsize
    if byte_offset % 64 or byte_offset < 0 or byte_offset + n_bytes > base_bytes:
        raise ValueError(
            f"view of {n_bytes} B at byte {byte_offset}: must be 64-byte aligned and inside "
            f"the {base_bytes} B buffer"
        )
    device = (base.device.dlpack_device_type(), base.device.index)
    return address_view(base.data_ptr() + byte_offset, shape, dtype, device)


def address_view(
    address: int, shape: tuple[int, ...], dtype: str = "float32", device: tuple[int, int] = (CPU, 0)
) -> tvm.runtime.Tensor:
    """A tensor over the memory at `address` (64-byte aligned) on `device` (DLPack type, id),
    zero-copy. The caller keeps that memory alive as long as the tensor.

    Its data pointer is the address, as DLPack specifies for CPU and CUDA memory, rather than
    a base with a `byte_offset` (what `Tensor._create_view` makes): TVM's kernels accept only
    tensors whose byte_offset is 0. The tensor's DLPack record (tens of bytes) is never freed:
    views are made once per runtime."""
    if address % 64:
        raise ValueError(f"a tensor's memory must be 64-byte aligned, {address:#x} is not")
    dt = np.dtype(dtype)
    record = _malloc(ctypes.sizeof(_DLManagedTensor) + 8 * max(1, len(shape)))
    dims = record + ctypes.sizeof(_DLManagedTensor)
    (ctypes.c_int64 * len(shape)).from_address(dims)[:] = shape
    managed = _DLManagedTensor.from_address(record)
    managed.dl_tensor = _DLTensor(
        address,
        _DLDevice(*device),
        len(shape),
        _DLDataType(_DTYPE_CODES[dt.kind], 8 * dt.itemsize, 1),
        ctypes.cast(dims, ctypes.POINTER(ctypes.c_int64)),
        None,
        0,
    )
    managed.manager_ctx = managed.deleter = None
    return tvm.runtime.from_dlpack(_Capsule(_capsule(record, b"dltensor", None), device))


def host_staging(
    shape: tuple[int, ...], device: tvm.runtime.Device, dtype: str = "float32"
) -> tvm.runtime.Tensor:
    """A host buffer that copies to `device` without a bounce: page-locked memory for a GPU
    (cudaMallocHost), plain memory for the CPU."""
    host = tvm.cpu() if device.dlpack_device_type() == CPU else tvm.device(CUDA_HOST, 0)
    return tvm.runtime.empty(shape, dtype, host)


def as_numpy(tensor: tvm.runtime.Tensor) -> np.ndarray:
    """A numpy view of a tensor in host memory (CPU or page-locked); the caller keeps
    `tensor` alive as long as the view."""
    if tensor.device.dlpack_device_type() not in (CPU, CUDA_HOST):
        raise ValueError(f"{tensor.device} memory is not host memory")
    dtype = np.dtype(tensor.dtype)
    n_bytes = int(np.prod(tensor.shape)) * dtype.itemsize
    raw = (ctypes.c_uint8 * n_bytes).from_address(tensor.data_ptr())
    return np.frombuffer(raw, dtype).reshape(tuple(tensor.shape))


def check_device(library: Library, device: tvm.runtime.Device) -> None:
    """The library's kernels can run on `device`, or a ValueError that says what would."""
    kind = device.dlpack_device_type()
    if library.kind == "cuda":
        if kind != CUDA:
            raise ValueError(
                f"the library was built for cuda ({', '.join(library.archs)}): run it on a "
                f"GPU (device=tvm.cuda(), `wvirt run --device cuda`), not on {device}"
            )
        arch = "sm_" + device.compute_version.replace(".", "")
        if library.archs and sm_number(arch) not in {sm_number(a) for a in library.archs}:
            raise ValueError(
                f"the library holds machine code for {', '.join(library.archs)}, this GPU "
                f"({device.device_name}) is {arch}: build with --arch {arch}"
            )
    elif kind != CPU:
        raise ValueError(
            f"the library was built for {library.kind} (the CPU): run it on tvm.cpu(), not "
            f"{device}, or build it for cuda"
        )

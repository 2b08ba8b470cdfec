"""Load cubins with the CUDA driver API and launch them on raw device pointers, on torch's current stream.

cuLibraryLoadData gives context-independent kernels (CUkernel): one load per process serves every device;
attributes (dynamic smem, non-portable clusters) are set per device. No device memory is allocated and the
host never synchronizes: a launch is a parameter pack and one cuLaunchKernelEx.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from cuda.bindings import driver

from . import build
from .manifest import KernelEntry, entry

# Mirrors cutlass_router::SplitKParams (templates/splitk_mma.cuh): 4 pointers, 3 int64 strides, 4 int32.
SPLITK_PARAMS = struct.Struct("<QQQQqqqiiii")
_PARAM_CAPACITY = 4096  # bytes; CUTLASS sm90 Params are well under this


class LaunchError(RuntimeError):
    """The driver refused to load or launch a kernel."""


def check(result, what: str):
    """cuda.bindings calls return (CUresult, *values): raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err:  # CUDA_SUCCESS is falsy
        _, name = driver.cuGetErrorName(err)
        raise LaunchError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


@dataclass(eq=False)
class LoadedKernel:
    entry: KernelEntry
    library: object
    kernel: object
    block_threads: int
    cluster: tuple[int, int, int]
    smem_bytes: int
    host: ctypes.CDLL | None = None
    pack: object = None                          # the host library's <symbol>_pack, if any
    devices: set = field(default_factory=set)    # devices whose attributes are set
    configs: dict = field(default_factory=dict)  # (grid x, y, z, pdl, stream) -> CUlaunchConfig, never mutated

    def __post_init__(self):
        lc = self.entry.launch  # split-K grids: N tiles (times the cluster) by M tiles
        self.tile_m, self.tile_n = lc.get("tile_m", 0), lc.get("tile_n", 0)


_lock = threading.Lock()
_scratch = threading.local()


def _params_buffer():
    """(buffer, address of the void*[1] pointing at it, int[3] grid) for this thread. The driver copies the
    parameters during the launch call, so one buffer per thread is enough."""
    try:
        return _scratch.state
    except AttributeError:
        buf = ctypes.create_string_buffer(_PARAM_CAPACITY)
        argv = (ctypes.c_void_p * 1)(ctypes.addressof(buf))
        _scratch.keep = argv  # the pointer array must outlive its address
        _scratch.state = (buf, ctypes.addressof(argv), (ctypes.c_int * 3)())
        return _scratch.state


def _bind_host(lib: ctypes.CDLL, symbol: str) -> None:
    pack = getattr(lib, f"{symbol}_pack")
    pack.restype = ctypes.c_int
    pack.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] + [ctypes.c_void_p] * 4 \
        + [ctypes.c_int] * 3 + [ctypes.c_longlong] * 3 + [ctypes.c_int]
    for name in ("params_size", "smem_size", "block_threads"):
        getattr(lib, f"{symbol}_{name}").restype = ctypes.c_int


def _open_host_lib(source: str, symbol: str, arch: str) -> ctypes.CDLL:
    from . import prebuilt

    art = build.build_host_lib(source, symbol, arch)
    try:
        return ctypes.CDLL(str(art.path))
    except OSError as e:
        if art.path.parent != prebuilt.DIR:
            raise
        # The shipped library needs glibc 2.34; an older system refuses it: build one here if we can.
        try:
            return ctypes.CDLL(str(build.build_host_lib(source, symbol, arch, prefer_prebuilt=False).path))
        except build.ToolkitNotFound as missing:
            raise LaunchError(f"the shipped host library does not load on this system ({e}) and {missing}") from e


@lru_cache(maxsize=None)
def load(symbol: str, arch: str = "sm_90a") -> LoadedKernel:
    """Build (or fetch from the cache) and load one kernel of the manifest."""
    e = entry(symbol)
    return load_entry(e, e.source(), arch)


def load_entry(e: KernelEntry, source: str, arch: str = "sm_90a") -> LoadedKernel:
    """Build and load `source`, whose entry point is e.symbol, launched as e.launch says (uncached)."""
    symbol = e.symbol
    cubin = build.read_artifact(build.build_cubin(source, symbol, arch).path)
    check(driver.cuInit(0), "cuInit")
    library = check(driver.cuLibraryLoadData(cubin, None, None, 0, None, None, 0), f"cuLibraryLoadData({symbol})")
    kernel = check(driver.cuLibraryGetKernel(library, symbol.encode()), f"cuLibraryGetKernel({symbol})")
    launch = e.launch
    if launch["params"] == "host_lib":
        host = _open_host_lib(source, symbol, arch)
        _bind_host(host, symbol)
        cluster = (ctypes.c_int * 3)()
        getattr(host, f"{symbol}_cluster_shape")(cluster)
        if getattr(host, f"{symbol}_params_size")() > _PARAM_CAPACITY:
            raise LaunchError(f"{symbol}: Params larger than {_PARAM_CAPACITY} bytes")
        return LoadedKernel(e, library, kernel, getattr(host, f"{symbol}_block_threads")(), tuple(cluster),
                            getattr(host, f"{symbol}_smem_size")(), host, getattr(host, f"{symbol}_pack"))
    return LoadedKernel(e, library, kernel, launch["block_threads"], (launch["cluster"], 1, 1), launch["smem_bytes"])


def _prepare_device(k: LoadedKernel, device: int) -> None:
    with _lock:
        if device in k.devices:
            return
        dev = driver.CUdevice(device)
        attr = driver.CUfunction_attribute
        if k.smem_bytes > 48 * 1024:
            check(driver.cuKernelSetAttribute(attr.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                              k.smem_bytes, k.kernel, dev), "cuKernelSetAttribute(smem)")
        if k.cluster[0] * k.cluster[1] * k.cluster[2] > 8:
            check(driver.cuKernelSetAttribute(attr.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                                              1, k.kernel, dev), "cuKernelSetAttribute(cluster)")
        k.devices.add(device)


def _config(k: LoadedKernel, grid: tuple[int, int, int], pdl: bool, stream: int):
    attrs = []
    if k.cluster != (1, 1, 1):
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = k.cluster
        attrs.append(a)
    if pdl:
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        a.value.programmaticStreamSerializationAllowed = 1
        attrs.append(a)
    cfg = driver.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = grid
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = k.block_threads, 1, 1
    cfg.sharedMemBytes = k.smem_bytes
    cfg.attrs = attrs
    cfg.numAttrs = len(attrs)
    cfg.hStream = driver.CUstream(stream)
    if len(k.configs) >= 4096:  # prefill brings many grid heights: keep the cache bounded
        k.configs.clear()
    k.configs[(*grid, pdl, stream)] = cfg
    return cfg


def grid_for(k: LoadedKernel, M: int, N: int) -> tuple[int, int, int]:
    """Grid of a split-K kernel: N tiles (times the cluster) by M tiles."""
    return (-(-N // k.tile_n) * k.cluster[0], -(-M // k.tile_m), 1)


def launch(k: LoadedKernel, device: int, stream: int, pdl: bool, sm_count: int,
           x: int, w: int, bias: int, out: int, M: int, N: int, K: int, ldx: int, ldw: int, ldo: int) -> None:
    """One launch on raw device pointers (bias 0 = none), strides in elements, on the given CUstream handle."""
    if device not in k.devices:
        _prepare_device(k, device)
    buf, argv, grid_buf = _params_buffer()
    if k.host is None:
        SPLITK_PARAMS.pack_into(buf, 0, x, w, bias, out, ldx, ldw, ldo, M, N, K, 0)
        gx, gy, gz = grid_for(k, M, N)
    else:
        rc = k.pack(buf, _PARAM_CAPACITY, grid_buf, x, w, bias or None, out, M, N, K, ldx, ldw, ldo, sm_count)
        if rc != 0:
            raise LaunchError(f"{k.entry.symbol}: CUTLASS cannot run M={M} N={N} K={K} (code {rc})")
        gx, gy, gz = grid_buf
    cfg = k.configs.get((gx, gy, gz, pdl, stream))
    if cfg is None:
        cfg = _config(k, (gx, gy, gz), pdl, stream)
    err = driver.cuLaunchKernelEx(cfg, k.kernel, argv, 0)[0]
    if err:
        check((err,), f"launch {k.entry.symbol}")

"""Load cubins with the CUDA driver API and launch them on torch's current stream.

cuLibraryLoadData gives context-independent kernels (CUkernel): one load per process serves every device;
attributes (dynamic smem, non-portable clusters) are set per device. No device memory is allocated and the host
never synchronizes: a launch is a parameter pack (the kernel's family writes it into a per-thread buffer) and
one cuLaunchKernelEx.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType

from cuda.bindings import driver

from . import families, resolve
from .manifest import KernelEntry, entry, expand

PARAM_CAPACITY = 4096  # bytes; CUTLASS sm90 Params are well under this


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
    family: ModuleType                           # the module of families/ that owns this kernel
    library: object
    kernel: object
    block_threads: int
    cluster: tuple[int, int, int]                # the largest cluster it is launched with
    smem_bytes: int
    origin: str                                  # resolve.SHIPPED, CACHED or BUILT
    host: ctypes.CDLL | None = None              # the family's host library, if it needs one
    pack: object = None                          # its <symbol>_pack, if any
    devices: set = field(default_factory=set)    # devices whose attributes are set
    configs: dict = field(default_factory=dict)  # (grid, cluster, pdl, stream, block) -> _Launch, never mutated


_lock = threading.Lock()
_scratch = threading.local()


def params_buffer():
    """(buffer, address of the void*[1] pointing at it, int[3] grid) for this thread. The driver copies the
    parameters during the launch call, so one buffer per thread is enough."""
    try:
        return _scratch.state
    except AttributeError:
        buf = ctypes.create_string_buffer(PARAM_CAPACITY)
        argv = (ctypes.c_void_p * 1)(ctypes.addressof(buf))
        _scratch.keep = argv  # the pointer array must outlive its address
        _scratch.state = (buf, ctypes.addressof(argv), (ctypes.c_int * 3)())
        return _scratch.state


@lru_cache(maxsize=None)
def load(symbol: str) -> LoadedKernel:
    """Resolve (shipped, cached or compiled now) and load one kernel of the manifest."""
    return load_entry(entry(symbol))


def load_entry(e: KernelEntry, source: str | None = None) -> LoadedKernel:
    """Load the kernel `e` describes (uncached); `source` replaces its emitted source (experiments: variants of a
    template, an empty kernel as a floor)."""
    family = families.of(e.family)
    art = resolve.cubin(e.source() if source is None else expand(source), e.symbol)
    check(driver.cuInit(0), "cuInit")
    library = check(driver.cuLibraryLoadData(art.read(), None, None, 0, None, None, 0),
                    f"cuLibraryLoadData({e.symbol})")
    kernel = check(driver.cuLibraryGetKernel(library, e.symbol.encode()), f"cuLibraryGetKernel({e.symbol})")
    host = pack = None
    if family.HOST_LIB:
        host = family.open_host(e)
        pack = getattr(host, f"{e.symbol}_pack")
        if family.params_size(e, host) > PARAM_CAPACITY:
            raise LaunchError(f"{e.symbol}: Params larger than {PARAM_CAPACITY} bytes")
    block, cluster, smem = family.geometry(e, host)
    return LoadedKernel(e, family, library, kernel, block, cluster, smem, art.origin, host, pack)


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


# ---- the launch call ------------------------------------------------------------------------------------------
# cuda.bindings' cuLaunchKernelEx costs about 4.7 us of Python per call, more than the kernel at decode sizes. The
# eager path instead calls libcuda's cuLaunchKernelEx through ctypes with a CUlaunchConfig built once per
# (grid, cluster, PDL, stream, block) and kept: one foreign call per launch. The structs mirror cuda.h (CUDA 12 and 13;
# a test compiles cuda.h's offsets and compares). Where libcuda cannot be opened this way, cuda.bindings serves.

class _Attr(ctypes.Structure):  # CUlaunchAttribute: id, pad to 8, a 64-byte union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_uint * 16)]


class _Config(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_Attr)), ("numAttrs", ctypes.c_uint)]


ATTR_CLUSTER_DIMENSION, ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 4, 6  # CUlaunchAttributeID values (cuda.h)


@lru_cache(maxsize=None)
def _libcuda_launch():
    """libcuda's cuLaunchKernelEx as a ctypes function, or None. Through PyDLL, which keeps the GIL: the call
    takes a few microseconds, and a CDLL call releases the GIL and takes it back after, which in a process with
    other Python threads (a server's, a tokenizer's) can wait for another thread's switch interval."""
    try:
        fn = ctypes.PyDLL("libcuda.so.1").cuLaunchKernelEx
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return fn


def _handle(obj) -> int:
    """The driver handle a cuda.bindings object wraps (int() of it; its getPtr() is the address of the wrapper's
    storage, not the handle)."""
    return int(obj)


@dataclass(frozen=True)
class _Launch:
    """One prepared launch configuration: what the foreign call needs, kept alive together."""
    config: object
    attrs: object
    address: int      # of config
    kernel: int       # the CUkernel handle, passed where cuLaunchKernelEx takes a CUfunction (allowed since 12.0)


def _config(k: LoadedKernel, grid: tuple[int, int, int], cluster: tuple[int, int, int] | None, pdl: bool,
            stream: int, block: int | None = None):
    """cluster None: the kernel's own, as an attribute only if it has more than one CTA; a cluster the caller gives is
    always an attribute, a 1-CTA one too (kernels that use cluster instructions need a cluster launch)."""
    attrs = (_Attr * 2)()
    n = 0
    given = cluster is not None
    cluster = cluster or k.cluster
    if given or cluster != (1, 1, 1):
        attrs[n].id = ATTR_CLUSTER_DIMENSION
        attrs[n].value[0], attrs[n].value[1], attrs[n].value[2] = cluster
        n += 1
    if pdl:
        attrs[n].id = ATTR_PROGRAMMATIC_STREAM_SERIALIZATION
        attrs[n].value[0] = 1
        n += 1
    cfg = _Config(*grid, block or k.block_threads, 1, 1, k.smem_bytes, stream, attrs, n)
    if len(k.configs) >= 4096:  # prefill brings many grid heights: keep the cache bounded
        k.configs.clear()
    prepared = _Launch(cfg, attrs, ctypes.addressof(cfg), _handle(k.kernel))
    k.configs[(grid, None if not given else cluster, pdl, stream, block)] = prepared
    return prepared


def _bindings_launch(p: _Launch, argv: int) -> int:
    """The same launch through cuda.bindings (where libcuda is not reachable by ctypes)."""
    c = p.config
    cfg = driver.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = c.gridDimX, c.gridDimY, c.gridDimZ
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = c.blockDimX, 1, 1
    cfg.sharedMemBytes = c.sharedMemBytes
    attrs = []
    for i in range(c.numAttrs):
        a = driver.CUlaunchAttribute()
        a.id = driver.CUlaunchAttributeID(p.attrs[i].id)
        if p.attrs[i].id == ATTR_CLUSTER_DIMENSION:
            a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = p.attrs[i].value[:3]
        else:
            a.value.programmaticStreamSerializationAllowed = 1
        attrs.append(a)
    cfg.attrs, cfg.numAttrs = attrs, len(attrs)
    cfg.hStream = driver.CUstream(c.hStream or 0)
    return int(driver.cuLaunchKernelEx(cfg, driver.CUfunction(p.kernel), argv, 0)[0])


def launch(k: LoadedKernel, device: int, stream: int, pdl: bool, grid: tuple[int, int, int],
           cluster: tuple[int, int, int] | None = None, block: int | None = None) -> None:
    """Launch k with the parameters its family packed into this thread's params_buffer(), on the given CUstream
    handle. cluster: for families whose cluster size depends on the problem (default: the kernel's own); it may
    not exceed the kernel's own, which is the largest its family launches it with. block: threads per CTA, for
    kernels whose CTA shape is chosen per call (default: the kernel's own, its largest)."""
    prepared = prepare(k, device, stream, pdl, grid, cluster, block)
    call = _libcuda_launch()
    argv = params_buffer()[1]
    err = call(prepared.address, prepared.kernel, argv, None) if call is not None else _bindings_launch(prepared, argv)
    if err:
        refused(k, err)


def prepare(k: LoadedKernel, device: int, stream: int, pdl: bool, grid: tuple[int, int, int],
            cluster: tuple[int, int, int] | None = None, block: int | None = None) -> _Launch:
    """The prepared configuration launch() would use for these arguments, the device's attributes set: for callers
    that keep it (a plan, per stream and PDL) and make the foreign call themselves."""
    if device not in k.devices:
        _prepare_device(k, device)
    prepared = k.configs.get((grid, cluster, pdl, stream, block))
    return prepared if prepared is not None else _config(k, grid, cluster, pdl, stream, block)


def refused(k: LoadedKernel, err: int) -> None:
    """Raise the LaunchError for a launch of k that returned the nonzero CUresult err."""
    check((driver.CUresult(err),), f"launch {k.entry.symbol}")

"""Source to cubin (and, for kernels packed on the host, a host library), with nvcc, cached by content.

The cache key covers the source text, the target arch and the flags, and the file name adds the nvcc version:
editing any of them builds anew, and a machine without a toolkit still finds what some nvcc built before. Every
artefact is written atomically next to a sha256 sidecar; a file whose hash does not match (truncated, corrupted)
is rebuilt rather than loaded.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .cache import atomic_write, writable_cache_dir

# -DNDEBUG: CUTLASS's sm90 kernels otherwise keep device asserts that make ptxas serialize wgmma (C7510) and
# spill. --expt-relaxed-constexpr: CuTe calls constexpr host functions from device code.
COMMON_FLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr")


class BuildError(RuntimeError):
    """A kernel failed to compile, or compiled into code we refuse to ship (spills, serialized wgmma)."""


class ToolkitNotFound(BuildError):
    pass


@dataclass(frozen=True)
class Toolchain:
    nvcc: str
    version: str          # e.g. "13.0.88"
    cutlass_root: str     # holds include/ and tools/util/include

    def includes(self) -> list[str]:
        return ["-I", os.path.join(self.cutlass_root, "include"),
                "-I", os.path.join(self.cutlass_root, "tools", "util", "include")]


@dataclass(frozen=True)
class Artifact:
    path: Path
    report: str  # compiler output (ptxas -v for cubins)


def _find_nvcc() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.isfile(p)), None)


def _cutlass_root() -> str:
    explicit = os.environ.get("CUTLASS_PATH")
    if explicit:
        return explicit
    import cutlass_library  # headers ship inside nvidia-cutlass; importing it needs no GPU

    return cutlass_library.source_path


ENV_NVCC = "CUTLASS_ROUTER_NVCC"


@lru_cache(maxsize=None)
def find_toolchain() -> Toolchain:
    # Serving may want no compiler in the loop at all (a CUTLASS kernel takes a minute to build): "none" keeps
    # the package to its shipped and already built kernels, whatever toolkit is installed.
    explicit = os.environ.get(ENV_NVCC)
    if explicit is not None and explicit.lower() in ("", "0", "none", "off"):
        raise ToolkitNotFound(f"nvcc not used: {ENV_NVCC}={explicit!r} keeps to shipped and already built kernels")
    if explicit is not None and not os.path.isfile(explicit):
        raise ToolkitNotFound(f"{ENV_NVCC}={explicit!r} is not a file: point it at nvcc, or unset it")
    nvcc = explicit or _find_nvcc()
    if nvcc is None:
        raise ToolkitNotFound("nvcc not found: install the CUDA toolkit (12.4+) or set CUDA_HOME")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    return Toolchain(nvcc=nvcc, version=m.group(1) if m else out.strip().splitlines()[-1],
                     cutlass_root=_cutlass_root())


def gencode(arch: str) -> str:
    """'sm_90a' -> the -gencode form, which assembles arch-specific features (wgmma, setmaxnreg)."""
    num = arch.removeprefix("sm_")
    return f"-gencode=arch=compute_{num},code=sm_{num}"


def check_ptxas_report(report: str, symbol: str) -> None:
    """Refuse code that ptxas says will be slow: local-memory spills or serialized wgmma."""
    for stores, loads in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report):
        if int(stores) or int(loads):
            raise BuildError(f"{symbol}: ptxas spilled to local memory ({stores} B stores, {loads} B loads)")
    if "C7510" in report:
        raise BuildError(f"{symbol}: ptxas serialized wgmma (warning C7510):\n{report}")


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_verified(path: Path) -> bytes | None:
    side = path.with_name(path.name + ".sha256")
    try:
        data, want = path.read_bytes(), side.read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == want else None


def _store(path: Path, data: bytes) -> None:
    atomic_write(path, data)
    atomic_write(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def _compile(tc: Toolchain, source: str, symbol: str, flags: list[str], suffix: str) -> tuple[bytes, str]:
    with tempfile.TemporaryDirectory(prefix="cutlass_router_") as tmp:
        src, dst = os.path.join(tmp, f"{symbol}.cu"), os.path.join(tmp, f"{symbol}{suffix}")
        Path(src).write_text(source)
        cmd = [tc.nvcc, *COMMON_FLAGS, *tc.includes(), *flags, "-o", dst, src]
        env = dict(os.environ, TMPDIR=tmp)  # nvcc's intermediates stay out of the caller's directory
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
        report = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed for {symbol} (exit {proc.returncode}):\n{' '.join(cmd)}\n{report}")
        return Path(dst).read_bytes(), report


def build_cubin(source: str, symbol: str, arch: str = "sm_90a", prefer_prebuilt: bool = True) -> Artifact:
    """The cubin of `source`: the package's prebuilt one for exactly this source, else from the cache or nvcc."""
    if prefer_prebuilt:
        from . import prebuilt

        shipped = prebuilt.lookup(symbol, source, arch)
        if shipped is not None:
            return Artifact(shipped, "prebuilt (shipped with the package)")
    flags = [gencode(arch), "-cubin", "-Xptxas", "-v"]
    tc, path, missing = _toolchain_and_path(source, symbol, arch, flags, ".cubin")
    log = path.with_suffix(".log")
    if _read_verified(path) is not None and log.exists():
        return Artifact(path, log.read_text())
    if tc is None:
        raise ToolkitNotFound(f"{symbol} is neither shipped nor cached for this source, and {missing}")
    data, report = _compile(tc, source, symbol, flags, ".cubin")
    check_ptxas_report(report, symbol)
    atomic_write(log, report.encode())
    _store(path, data)
    return Artifact(path, report)


def _toolchain_and_path(source: str, symbol: str, arch: str, flags: list[str], suffix: str):
    """(toolchain, cache path, None), or without a toolkit (None, the newest intact file that some nvcc built from
    this very source and these flags, or a path that does not exist; why there is no toolkit)."""
    key = _key(source, arch, *COMMON_FLAGS, *flags)[:20]
    cache = writable_cache_dir()
    try:
        tc = find_toolchain()
    except ToolkitNotFound as e:
        built = sorted(cache.glob(f"{symbol}-{arch}-{key}-nvcc*{suffix}"), key=lambda p: p.stat().st_mtime)
        intact = [p for p in built if _read_verified(p) is not None]
        return None, intact[-1] if intact else cache / f"{symbol}-{arch}-{key}-nvcc-none{suffix}", str(e)
    return tc, cache / f"{symbol}-{arch}-{key}-nvcc{tc.version}{suffix}", None


HOST_FLAGS = ("-DCUTLASS_ROUTER_HOST_ONLY", "-Xcompiler", "-fPIC")


def build_host_lib(source: str, symbol: str, arch: str = "sm_90a", prefer_prebuilt: bool = True) -> Artifact:
    """The host half of a kernel whose parameters CUTLASS packs (TMA descriptors): a shared library, the package's
    prebuilt one where it holds exactly this source's host code for this platform, else from the cache or nvcc."""
    if prefer_prebuilt:
        from . import prebuilt

        shipped = prebuilt.lookup_host(symbol, source, arch)
        if shipped is not None:
            return Artifact(shipped, "prebuilt (shipped with the package)")
    flags = [gencode(arch), *HOST_FLAGS, "-shared"]
    tc, path, missing = _toolchain_and_path(source, symbol, arch, flags, ".so")
    if _read_verified(path) is not None:
        return Artifact(path, "")
    if tc is None:
        raise ToolkitNotFound(f"the host library of {symbol} is neither shipped nor cached for this source, "
                              f"and {missing}")
    data, report = _compile(tc, source, symbol, flags, ".so")
    _store(path, data)
    return Artifact(path, report)


def link_host_libs(sources: dict[str, str], arch: str = "sm_90a", jobs: int = 2) -> bytes:
    """One shared library holding the host functions of several kernels (each symbol-prefixed), linked against
    one static CUDA runtime: what the package ships, instead of a library per kernel."""
    from concurrent.futures import ThreadPoolExecutor

    tc = find_toolchain()
    with ThreadPoolExecutor(jobs) as ex:
        objects = list(ex.map(lambda kv: _compile(tc, kv[1], kv[0], [gencode(arch), *HOST_FLAGS, "-c"], ".o")[0],
                              sorted(sources.items())))
    with tempfile.TemporaryDirectory(prefix="cutlass_router_") as tmp:
        paths = []
        for i, blob in enumerate(objects):
            paths.append(os.path.join(tmp, f"k{i}.o"))
            Path(paths[-1]).write_bytes(blob)
        dst, script = os.path.join(tmp, "host.so"), os.path.join(tmp, "exports.map")
        # Export only the C entry points: the CUTLASS templates and the static runtime stay private.
        Path(script).write_text("{ global: " + " ".join(f"{s}_*;" for s in sorted(sources)) + " local: *; };\n")
        cmd = [tc.nvcc, "-shared", f"-Xlinker=--version-script={script}", "-o", dst, *paths]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=dict(os.environ, TMPDIR=tmp))
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed to link the host library (exit {proc.returncode}):\n{proc.stderr}")
        return Path(dst).read_bytes()


def read_artifact(path: Path) -> bytes:
    """The bytes of a cached artifact (checked against its sha256 sidecar) or of a shipped, indexed cubin."""
    from . import prebuilt

    if path.parent == prebuilt.DIR:
        return path.read_bytes()  # prebuilt.lookup checked it against the index
    data = _read_verified(path)
    if data is None:
        raise BuildError(f"{path} is missing or fails its sha256 check")
    return data

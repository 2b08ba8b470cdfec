"""Source to cubin, or to a host library, with nvcc. This module only compiles: where a kernel comes from
(shipped, cached, built now) is resolve.py's job.

Builds are byte-reproducible: nvcc names internal-linkage symbols after the absolute path of the file it
compiles, so every kernel is compiled from one fixed path (<tmp>/cutlass_router_build/<symbol>/<symbol>.cu,
under a file lock). The same nvcc then gives the same cubin on any machine, and a test rebuilds shipped cubins
and compares their bytes.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import env
from .target import ARCH, gencode

# -DNDEBUG: CUTLASS's sm90 kernels otherwise keep device asserts that make ptxas serialize wgmma (C7510) and
# spill. --expt-relaxed-constexpr: CuTe calls constexpr host functions from device code.
COMMON_FLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr")
CUBIN_FLAGS = (gencode(ARCH), "-cubin", "-Xptxas", "-v")
HOST_FLAGS = (gencode(ARCH), "-DCUTLASS_ROUTER_HOST_ONLY", "-Xcompiler", "-fPIC")


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


@lru_cache(maxsize=None)
def find_toolchain() -> Toolchain:
    # Serving may want no compiler in the loop at all (a CUTLASS kernel takes a minute to build): "none" keeps
    # the package to its shipped and already built kernels, whatever toolkit is installed.
    explicit = os.environ.get(env.NVCC)
    if explicit is not None and explicit.lower() in ("", "0", "none", "off"):
        raise ToolkitNotFound(f"nvcc not used: {env.NVCC}={explicit!r} keeps to shipped and already built kernels")
    if explicit is not None and not os.path.isfile(explicit):
        raise ToolkitNotFound(f"{env.NVCC}={explicit!r} is not a file: point it at nvcc, or unset it")
    nvcc = explicit or _find_nvcc()
    if nvcc is None:
        raise ToolkitNotFound("nvcc not found: install the CUDA toolkit (12.4+) or set CUDA_HOME")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    return Toolchain(nvcc=nvcc, version=m.group(1) if m else out.strip().splitlines()[-1],
                     cutlass_root=_cutlass_root())


def check_ptxas_report(report: str, symbol: str) -> None:
    """Refuse code that ptxas says will be slow: local-memory spills or serialized wgmma."""
    for stores, loads in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report):
        if int(stores) or int(loads):
            raise BuildError(f"{symbol}: ptxas spilled to local memory ({stores} B stores, {loads} B loads)")
    if "C7510" in report:
        raise BuildError(f"{symbol}: ptxas serialized wgmma (warning C7510):\n{report}")


def _build_root() -> Path:
    fixed = Path(tempfile.gettempdir()) / "cutlass_router_build"
    try:
        fixed.mkdir(exist_ok=True)
        if os.access(fixed, os.W_OK):
            return fixed
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="cutlass_router_build_"))  # another user owns it: reproducible no more


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(tc: Toolchain, source: str, name: str, flags, suffix: str) -> tuple[bytes, str]:
    where = _build_root() / name
    where.mkdir(exist_ok=True)
    with _locked(where / ".lock"), tempfile.TemporaryDirectory(dir=where) as tmp:
        src = where / f"{name}.cu"
        src.write_text(source)
        dst = os.path.join(tmp, f"{name}{suffix}")
        cmd = [tc.nvcc, *COMMON_FLAGS, *tc.includes(), *flags, "-o", dst, str(src)]
        env_ = dict(os.environ, TMPDIR=tmp)  # nvcc's intermediates stay out of the caller's directory
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env_)
        report = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed for {name} (exit {proc.returncode}):\n{' '.join(cmd)}\n{report}")
        return Path(dst).read_bytes(), report


def cubin_key(source: str) -> str:
    from .cache import key

    return key(source, ARCH, *COMMON_FLAGS, *CUBIN_FLAGS)


def host_key(source: str) -> str:
    from .cache import key

    return key(source, ARCH, *COMMON_FLAGS, *HOST_FLAGS, "-shared")


def compile_cubin(tc: Toolchain, source: str, symbol: str) -> tuple[bytes, str]:
    """An sm_90a cubin and ptxas's report; BuildError on a compile error, spills or serialized wgmma."""
    data, report = _run(tc, source, symbol, CUBIN_FLAGS, ".cubin")
    check_ptxas_report(report, symbol)
    return data, report


def compile_host_lib(tc: Toolchain, source: str, symbol: str) -> bytes:
    """The host half of a kernel whose parameters CUTLASS packs (a shared library exporting <symbol>_*)."""
    return _run(tc, source, symbol, (*HOST_FLAGS, "-shared"), ".so")[0]


def link_host_libs(sources: dict[str, str], jobs: int = 2) -> bytes:
    """One shared library holding the host functions of several kernels (each symbol-prefixed), linked against
    one static CUDA runtime: what the package ships, instead of a library per kernel."""
    from concurrent.futures import ThreadPoolExecutor

    tc = find_toolchain()
    with ThreadPoolExecutor(jobs) as ex:
        objects = list(ex.map(lambda kv: _run(tc, kv[1], kv[0], (*HOST_FLAGS, "-c"), ".o")[0], sorted(sources.items())))
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

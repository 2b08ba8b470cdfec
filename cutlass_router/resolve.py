"""Where a kernel's bytes come from, decided in one place: the package's shipped file, else the build cache, else
nvcc now. Every caller (the launcher, `build`, `prebuild`, `info`, tune) asks here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import build, cache, prebuilt
from .target import ARCH

SHIPPED, CACHED, BUILT = "shipped", "cache", "nvcc"


@dataclass(frozen=True)
class Artifact:
    path: Path
    origin: str       # SHIPPED, CACHED or BUILT
    report: str = ""  # ptxas's report where this process compiled it or the cache kept it

    def read(self) -> bytes:
        """The bytes, checked: against the index (shipped) or the sha256 sidecar (cache)."""
        if self.origin == SHIPPED:
            return self.path.read_bytes()  # prebuilt.lookup checked it against the index
        data = cache.read_verified(self.path)
        if data is None:
            raise build.BuildError(f"{self.path} is missing or fails its sha256 check")
        return data


def _cached(symbol: str, key: str, suffix: str):
    """(toolchain, a verified cache file or None, the path a new build goes to, why there is no toolkit)."""
    try:
        tc = build.find_toolchain()
    except build.ToolkitNotFound as e:
        return None, cache.newest_intact(symbol, ARCH, key, suffix), None, str(e)
    path = cache.path_for(symbol, ARCH, key, tc.version, suffix)
    return tc, (path if cache.read_verified(path) is not None else None), path, None


def _resolve(source: str, symbol: str, shipped: bool, lookup, key: str, suffix: str, what: str, compile_) -> Artifact:
    """The shipped file for exactly this source, else a verified cache file, else compile_(toolchain) -> (bytes,
    report) now, cached."""
    if shipped:
        path = lookup(symbol, source)
        if path is not None:
            return Artifact(path, SHIPPED, "prebuilt (shipped with the package)")
    tc, hit, path, missing = _cached(symbol, key, suffix)
    if hit is not None:
        log = hit.with_suffix(".log")
        return Artifact(hit, CACHED, log.read_text() if log.exists() else "")
    if tc is None:
        raise build.ToolkitNotFound(f"{what} is neither shipped nor cached for this source, and {missing}")
    data, report = compile_(tc)
    if report:
        cache.atomic_write(path.with_suffix(".log"), report.encode())
    cache.store(path, data)
    return Artifact(path, BUILT, report)


def cubin(source: str, symbol: str, *, shipped: bool = True) -> Artifact:
    """The cubin of this (expanded) source: shipped, cached or compiled now (then cached)."""
    return _resolve(source, symbol, shipped, prebuilt.lookup, build.cubin_key(source), ".cubin", symbol,
                    lambda tc: build.compile_cubin(tc, source, symbol))


def host_library(source: str, symbol: str, *, shipped: bool = True) -> Artifact:
    """The host library holding this source's <symbol>_* functions: shipped, cached or compiled now."""
    return _resolve(source, symbol, shipped, prebuilt.lookup_host, build.host_key(source), ".so",
                    f"the host library of {symbol}", lambda tc: (build.compile_host_lib(tc, source, symbol), ""))


def origin(entry) -> str:
    """Where this kernel would come from, without compiling anything: shipped, cache, nvcc, or unavailable."""
    from .families import of

    source = entry.source()
    needs = [(prebuilt.lookup, build.cubin_key, ".cubin")]
    if of(entry.family).HOST_LIB:
        needs.append((prebuilt.lookup_host, build.host_key, ".so"))
    if all(look(entry.symbol, source) is not None for look, _, _ in needs):
        return SHIPPED
    if all(look(entry.symbol, source) is not None or _cached(entry.symbol, key(source), sfx)[1] is not None
           for look, key, sfx in needs):
        return CACHED
    try:
        build.find_toolchain()
        return BUILT
    except build.ToolkitNotFound:
        return "unavailable"

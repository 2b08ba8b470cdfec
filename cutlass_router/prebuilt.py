"""Kernels shipped inside the package, so they run where no CUDA toolkit is installed.

`python -m cutlass_router prebuild` compiles every kernel of the manifest from emitted/ into prebuilt/ and writes
prebuilt/index.json, which records the sha256 of the source each file came from: a file is used only for exactly
that source, so a stale one is never loaded (and a test fails until `prebuild` is run again).

The CUTLASS TMA kernels also need host code that packs their Params (TMA descriptors). For them one shared
library, holding the host functions of all of them over one static CUDA runtime, ships for the platform it was
linked on (linux-x86_64); elsewhere those kernels build with nvcc on first use, or dispatch falls back.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from functools import lru_cache
from pathlib import Path

from . import build, manifest

DIR = Path(__file__).resolve().parent / "prebuilt"
INDEX = DIR / "index.json"


def platform_tag() -> str:
    return f"{sys.platform}-{platform.machine()}"


@lru_cache(maxsize=None)
def index() -> dict:
    try:
        return json.loads(INDEX.read_text())
    except FileNotFoundError:
        return {"arch": None, "kernels": {}}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _intact(name: str, sha256: str) -> Path | None:
    path = DIR / name
    try:
        return path if _sha(path.read_bytes()) == sha256 else None
    except OSError:
        return None


def lookup(symbol: str, source: str, arch: str) -> Path | None:
    """The shipped cubin for exactly this source and arch, if there is one and it is intact."""
    data = index()
    item = data["kernels"].get(symbol)
    if item is None or data["arch"] != arch or item["source_sha256"] != _sha(source.encode()):
        return None
    return _intact(item["file"], item["cubin_sha256"])


def lookup_host(symbol: str, source: str, arch: str) -> Path | None:
    """The shipped host library, if it holds this source's host functions for this arch and platform and is intact."""
    data = index()
    lib = data.get("host_library")
    if lib is None or data["arch"] != arch or lib["platform"] != platform_tag():
        return None
    if lib["sources"].get(symbol) != _sha(source.encode()):
        return None
    return _intact(lib["file"], lib["sha256"])


def write(arch: str = "sm_90a", jobs: int = 2) -> list[str]:
    """Compile every kernel (through the build cache) into prebuilt/, link the host library, rewrite the index."""
    DIR.mkdir(exist_ok=True)
    kernels, host_sources = {}, {}
    for symbol, e in sorted(manifest.entries().items()):
        source = e.source()
        art = build.build_cubin(source, symbol, arch, prefer_prebuilt=False)
        blob = build.read_artifact(art.path)
        shutil.copyfile(art.path, DIR / f"{symbol}.cubin")
        kernels[symbol] = {"file": f"{symbol}.cubin", "source_sha256": _sha(source.encode()),
                           "cubin_sha256": _sha(blob)}
        if e.launch["params"] == "host_lib":
            host_sources[symbol] = source
    data = {"arch": arch, "nvcc": build.find_toolchain().version, "kernels": kernels}
    if host_sources:
        name = f"cutlass_sm90_host.{platform_tag()}.so"
        blob = build.link_host_libs(host_sources, arch, jobs)
        (DIR / name).write_bytes(blob)
        data["host_library"] = {"file": name, "platform": platform_tag(), "sha256": _sha(blob),
                                "sources": {s: _sha(src.encode()) for s, src in sorted(host_sources.items())}}
    keep = {k["file"] for k in kernels.values()} | {data.get("host_library", {}).get("file")}
    for stale in [*DIR.glob("*.cubin"), *DIR.glob("*.so")]:
        if stale.name not in keep:
            stale.unlink()
    INDEX.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    index.cache_clear()
    return sorted(kernels)

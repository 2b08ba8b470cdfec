"""`python -m cutlass_router prebuild`: compile every kernel dispatch can reach into the package's prebuilt/, link
one host library for the kernels whose family packs parameters on the host, and write prebuilt/index.json.

Exactly dispatch.reachable() ships: the other catalog kernels are tuning candidates, compiled on demand.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from . import build, dispatch, families, manifest, prebuilt, resolve
from .target import ARCH


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(jobs: int = 2) -> list[str]:
    """Compile (through the build cache) and write prebuilt/; returns the symbols shipped."""
    prebuilt.DIR.mkdir(exist_ok=True)
    entries = [manifest.entry(s) for s in sorted(dispatch.reachable())]

    def one(e):
        source = e.source()
        return e, source, resolve.cubin(source, e.symbol, shipped=False).read()

    kernels, host_sources = {}, {}
    with ThreadPoolExecutor(jobs) as ex:
        for e, source, blob in ex.map(one, entries):
            (prebuilt.DIR / f"{e.symbol}.cubin").write_bytes(blob)
            kernels[e.symbol] = {"file": f"{e.symbol}.cubin", "source_sha256": _sha(source.encode()),
                                 "cubin_sha256": _sha(blob)}
            if families.of(e.family).HOST_LIB:
                host_sources[e.symbol] = source
    data = {"arch": ARCH, "nvcc": build.find_toolchain().version, "kernels": kernels}
    if host_sources:
        name = f"cutlass_sm90_host.{prebuilt.platform_tag()}.so"
        blob = build.link_host_libs(host_sources, jobs)
        (prebuilt.DIR / name).write_bytes(blob)
        data["host_library"] = {"file": name, "platform": prebuilt.platform_tag(), "sha256": _sha(blob),
                                "sources": {s: _sha(src.encode()) for s, src in sorted(host_sources.items())}}
    keep = {k["file"] for k in kernels.values()} | {data.get("host_library", {}).get("file")}
    for stale in [*prebuilt.DIR.glob("*.cubin"), *prebuilt.DIR.glob("*.so")]:
        if stale.name not in keep:
            stale.unlink()
    prebuilt.INDEX.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    prebuilt.index.cache_clear()
    return sorted(kernels)

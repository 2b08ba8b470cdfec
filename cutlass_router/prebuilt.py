"""Cubins shipped inside the package, so the split-K family runs where no CUDA toolkit is installed.

`python -m cutlass_router prebuild` compiles them from emitted/ and writes prebuilt/index.json, which records the
sha256 of the source each cubin came from: a cubin is used only for exactly that source, so a stale one is never
loaded (and a test fails until `prebuild` is run again).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from pathlib import Path

from . import build, manifest

DIR = Path(__file__).resolve().parent / "prebuilt"
INDEX = DIR / "index.json"
FAMILIES = ("splitk_mma",)  # the CUTLASS family also needs a host library per platform: built on first use


@lru_cache(maxsize=None)
def index() -> dict:
    try:
        return json.loads(INDEX.read_text())
    except FileNotFoundError:
        return {"arch": None, "kernels": {}}


def lookup(symbol: str, source: str, arch: str) -> Path | None:
    """The shipped cubin for exactly this source and arch, if there is one and it is intact."""
    data = index()
    item = data["kernels"].get(symbol)
    if item is None or data["arch"] != arch or item["source_sha256"] != hashlib.sha256(source.encode()).hexdigest():
        return None
    path = DIR / item["file"]
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    return path if hashlib.sha256(blob).hexdigest() == item["cubin_sha256"] else None


def write(arch: str = "sm_90a") -> list[str]:
    """Compile every kernel of FAMILIES (through the build cache) into prebuilt/ and rewrite the index."""
    DIR.mkdir(exist_ok=True)
    kernels = {}
    for symbol, e in sorted(manifest.entries().items()):
        if e.family not in FAMILIES:
            continue
        source = e.source()
        art = build.build_cubin(source, symbol, arch, prefer_prebuilt=False)
        blob = build.read_artifact(art.path)
        shutil.copyfile(art.path, DIR / f"{symbol}.cubin")
        kernels[symbol] = {"file": f"{symbol}.cubin", "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
                           "cubin_sha256": hashlib.sha256(blob).hexdigest()}
    for stale in DIR.glob("*.cubin"):
        if stale.stem not in kernels:
            stale.unlink()
    data = {"arch": arch, "nvcc": build.find_toolchain().version, "kernels": kernels}
    INDEX.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    index.cache_clear()
    return sorted(kernels)

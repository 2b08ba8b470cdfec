"""What ships inside the package (prebuilt/): a cubin per kernel dispatch can reach, and for the families that
need one (HOST_LIB) one host library for this platform, each tied by sha256 to the expanded source it came from.

This module only reads: `python -m cutlass_router prebuild` (ship.py) writes prebuilt/ and index.json. A file is
used only for exactly the source it was built from and only if its bytes match the index, so a stale or damaged
one is never loaded.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from functools import lru_cache
from pathlib import Path

from .target import ARCH

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


def lookup(symbol: str, source: str, arch: str = ARCH) -> Path | None:
    """The shipped cubin for exactly this (expanded) source and arch, if there is one and it is intact."""
    data = index()
    item = data["kernels"].get(symbol)
    if item is None or data["arch"] != arch or item["source_sha256"] != _sha(source.encode()):
        return None
    return _intact(item["file"], item["cubin_sha256"])


def lookup_host(symbol: str, source: str, arch: str = ARCH) -> Path | None:
    """The shipped host library, if it holds this source's host functions for this arch and platform and is intact."""
    data = index()
    lib = data.get("host_library")
    if lib is None or data["arch"] != arch or lib["platform"] != platform_tag():
        return None
    if lib["sources"].get(symbol) != _sha(source.encode()):
        return None
    return _intact(lib["file"], lib["sha256"])

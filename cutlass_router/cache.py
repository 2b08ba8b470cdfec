"""Where built kernels live: a per-user cache directory, atomic writes, and files checked by a sha256 sidecar.

A file is named <symbol>-<arch>-<key>-nvcc<version><suffix>: the key covers the expanded source, the arch and
the flags, and the compiler version is in the name, so a machine whose toolkit is gone still finds the newest
intact file some nvcc built from that very source. A file whose sidecar does not match is never used.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from . import env


def cache_dir() -> Path:
    """$CUTLASS_ROUTER_CACHE_DIR, else $XDG_CACHE_HOME/cutlass_router, else ~/.cache/cutlass_router."""
    explicit = os.environ.get(env.CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cutlass_router"


@lru_cache(maxsize=None)
def _warn_fallback(wanted: str, used: str, why: str) -> None:
    logging.getLogger("cutlass_router").warning(
        "cutlass_router: cache directory %s is not writable (%s); using %s. Set %s to a writable directory.",
        wanted, why, used, env.CACHE_DIR)


def _writable(d: Path) -> str | None:
    """None if files can be created in d (made if missing), else why not."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
        return None
    except OSError as e:
        return e.strerror or str(e)


def unwritable_reason() -> str | None:
    """Why cache_dir() cannot be written, or None (for `info`)."""
    return _writable(cache_dir())


def writable_cache_dir() -> Path:
    """cache_dir() if it can be written, else a per-user temporary directory (with a warning, once)."""
    wanted = cache_dir()
    why = _writable(wanted)
    if why is None:
        return wanted
    fallback = Path(tempfile.gettempdir()) / f"cutlass_router-{os.getuid()}"
    if _writable(fallback) is None:
        _warn_fallback(str(wanted), str(fallback), why)
        return fallback
    raise OSError(f"no writable cache directory: {wanted} ({why}) and {fallback} both failed")


def atomic_write(path: Path, data: bytes) -> None:
    """Write data so that readers see either no file or the whole file, even with concurrent writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_verified(path: Path) -> bytes | None:
    """The file's bytes if its sha256 sidecar matches, else None."""
    side = path.with_name(path.name + ".sha256")
    try:
        data, want = path.read_bytes(), side.read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == want else None


def store(path: Path, data: bytes) -> None:
    atomic_write(path, data)
    atomic_write(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def path_for(symbol: str, arch: str, key_: str, nvcc_version: str, suffix: str) -> Path:
    return writable_cache_dir() / f"{symbol}-{arch}-{key_}-nvcc{nvcc_version}{suffix}"


def newest_intact(symbol: str, arch: str, key_: str, suffix: str) -> Path | None:
    """The newest verified file some nvcc built for this key, whatever its version."""
    built = sorted(writable_cache_dir().glob(f"{symbol}-{arch}-{key_}-nvcc*{suffix}"), key=lambda p: p.stat().st_mtime)
    intact = [p for p in built if read_verified(p) is not None]
    return intact[-1] if intact else None

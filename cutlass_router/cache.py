"""Where built kernels live: a per-user cache directory and atomic writes into it."""
from __future__ import annotations

import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

ENV_CACHE_DIR = "CUTLASS_ROUTER_CACHE_DIR"


def cache_dir() -> Path:
    """$CUTLASS_ROUTER_CACHE_DIR, else $XDG_CACHE_HOME/cutlass_router, else ~/.cache/cutlass_router."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cutlass_router"


@lru_cache(maxsize=None)
def _warn_fallback(wanted: str, used: str, why: str) -> None:
    logging.getLogger("cutlass_router").warning(
        "cutlass_router: cache directory %s is not writable (%s); using %s. Set %s to a writable directory.",
        wanted, why, used, ENV_CACHE_DIR)


def writable_cache_dir() -> Path:
    """cache_dir() if it can be written, else a per-user temporary directory (with a warning, once)."""
    wanted = cache_dir()
    for d in (wanted, Path(tempfile.gettempdir()) / f"cutlass_router-{os.getuid()}"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=d, prefix=".probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            why = e.strerror or str(e)
            continue
        if d != wanted:
            _warn_fallback(str(wanted), str(d), why)
        return d
    raise OSError(f"no writable cache directory: {wanted} and the temporary directory both failed ({why})")


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

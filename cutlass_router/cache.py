"""Where built kernels live: a per-user cache directory and atomic writes into it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV_CACHE_DIR = "CUTLASS_ROUTER_CACHE_DIR"


def cache_dir() -> Path:
    """$CUTLASS_ROUTER_CACHE_DIR, else $XDG_CACHE_HOME/cutlass_router, else ~/.cache/cutlass_router."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cutlass_router"


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

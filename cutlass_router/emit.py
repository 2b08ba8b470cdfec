"""Run every family's generator over the catalog and write emitted/: one .cu per kernel plus manifest.json.

A split-K file is a short instantiation that includes its template; a CUTLASS file is the whole kernel as
cutlass_cppgen writes it. The manifest records both the file's sha256 and that of the expanded source (the
templates inlined), so a template edit shows up as a stale manifest. Output is byte-for-byte reproducible: the
same package versions give the same files in any process.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import catalog
from .manifest import expand, sha256
from .target import ARCH

MANIFEST = "manifest.json"


def _cutlass_version() -> str:
    from importlib.metadata import version

    return version("nvidia-cutlass")


def render() -> dict[str, bytes]:
    """Every file of emitted/, by name."""
    files: dict[str, bytes] = {}
    kernels = []
    for spec in catalog.specs():
        text = spec.emit()
        name = f"{spec.symbol}.cu"
        files[name] = text.encode()
        kernels.append({
            "symbol": spec.symbol,
            "family": spec.family,
            "file": name,
            "sha256": sha256(text),
            "source_sha256": sha256(expand(text)),  # what is compiled: the templates inlined
            "out_dtype": spec.out_dtype,
            "config": spec.config(),
            "launch": spec.launch(),
        })
    manifest = {"generator": "cutlass_router", "nvidia_cutlass": _cutlass_version(), "arch": ARCH,
                "kernels": kernels}
    files[MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def default_dir() -> Path | None:
    """emitted/ of a source checkout (this file's grandparent), if there is one."""
    d = Path(__file__).resolve().parent.parent / "emitted"
    return d if d.is_dir() else None


def _generated(out_dir: Path) -> set[str]:
    return {p.name for p in out_dir.glob("*.cu")} | ({MANIFEST} if (out_dir / MANIFEST).exists() else set())


def write(out_dir: Path) -> list[str]:
    """Write the files; remove .cu files no longer generated. Returns the names written or removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = render()
    changed = []
    for name in sorted(_generated(out_dir) - set(files)):
        (out_dir / name).unlink()
        changed.append(name)
    for name, data in files.items():
        path = out_dir / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(name)
    return changed


def diff(out_dir: Path) -> list[str]:
    """Names whose committed content differs from what the generator makes (missing or extra count too)."""
    files = render()
    names = set(files) | _generated(out_dir)
    return sorted(n for n in names
                  if not (out_dir / n).exists() or n not in files or (out_dir / n).read_bytes() != files[n])

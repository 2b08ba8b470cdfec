"""The committed kernel manifest (emitted/manifest.json), read as plain dataclasses."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path


@lru_cache(maxsize=None)
def emitted_dir():
    """emitted/ of the source checkout this package was imported from, else the installed cutlass_router.emitted.

    The checkout comes first so that a checkout on sys.path never pairs its code with another install's kernels.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "emitted" / "manifest.json").is_file():
        return checkout / "emitted"
    return resources.files("cutlass_router.emitted")


@dataclass(frozen=True)
class KernelEntry:
    symbol: str
    family: str
    file: str
    sha256: str
    out_dtype: str
    config: dict
    launch: dict

    def source(self) -> str:
        return emitted_dir().joinpath(self.file).read_text()


@lru_cache(maxsize=None)
def entries() -> dict[str, KernelEntry]:
    data = json.loads(emitted_dir().joinpath("manifest.json").read_text())
    return {k["symbol"]: KernelEntry(**k) for k in data["kernels"]}


def entry(symbol: str) -> KernelEntry:
    try:
        return entries()[symbol]
    except KeyError:
        raise KeyError(f"no kernel {symbol!r} in emitted/manifest.json; run `python -m cutlass_router emit`") from None

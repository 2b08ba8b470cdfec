"""The committed kernel manifest (emitted/manifest.json), read as plain dataclasses, and the kernel sources.

An emitted file is a small instantiation that includes a template of this package (templates/*.cuh), as
CUTLASS's and FlashInfer's generators write theirs. What is compiled, cached and shipped is the *expanded*
source (the project's templates inlined), so every hash that ties a cubin to its source covers the template too:
editing a template can never reuse a cubin built from the old one.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"[ \t]*$', re.M)


def expand(text: str, templates: Path | None = None) -> str:
    """`text` with each `#include "<name>.cuh"` of a project template replaced by the template (recursively,
    once per template, like #pragma once). Other includes (CUTLASS, CUDA) stay as they are."""
    root = templates or TEMPLATES
    seen: set[str] = set()

    def inline(match: re.Match) -> str:
        name = match.group(1)
        if not (root / name).is_file():
            return match.group(0)
        if name in seen:
            return f"// {name}: already included above"
        seen.add(name)
        body = (root / name).read_text().replace("#pragma once\n", "")
        return f"// ---- templates/{name} ----\n{_INCLUDE.sub(inline, body).rstrip()}\n// ---- end {name} ----"

    return _INCLUDE.sub(inline, text)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    file: str            # the instantiation file in emitted/
    sha256: str          # of that file
    source_sha256: str   # of the expanded source, as emitted (a test checks it against the templates of today)
    out_dtype: str
    config: dict
    launch: dict

    def text(self) -> str:
        """The emitted instantiation file."""
        return emitted_dir().joinpath(self.file).read_text()

    def source(self) -> str:
        """What nvcc compiles: the instantiation with the package's templates inlined."""
        return expand(self.text())


@lru_cache(maxsize=None)
def entries() -> dict[str, KernelEntry]:
    data = json.loads(emitted_dir().joinpath("manifest.json").read_text())
    return {k["symbol"]: KernelEntry(**k) for k in data["kernels"]}


def entry(symbol: str) -> KernelEntry:
    try:
        return entries()[symbol]
    except KeyError:
        from difflib import get_close_matches

        close = get_close_matches(symbol, list(entries()), n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else " (the manifest lists every kernel)"
        raise KeyError(f"no kernel {symbol!r} in emitted/manifest.json{hint}") from None

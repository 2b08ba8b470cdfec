"""The one GPU target this package emits kernels for. Everything that names the arch asks here."""
from __future__ import annotations

ARCH = "sm_90a"          # every emitted kernel is compiled for this target (wgmma and setmaxnreg need the "a")
CAPABILITY = (9, 0)      # the devices that run it: H100, H200 (GH200 too)


def gencode(arch: str = ARCH) -> str:
    """'sm_90a' -> the -gencode form, which assembles arch-specific features (wgmma, setmaxnreg)."""
    num = arch.removeprefix("sm_")
    return f"-gencode=arch=compute_{num},code=sm_{num}"


def device_blocker(index: int, capability: tuple[int, int]) -> str | None:
    """Why GPU `index` cannot run the emitted kernels, or None."""
    if tuple(capability) != CAPABILITY:
        return f"GPU {index} is sm_{capability[0]}{capability[1]}; the emitted kernels are {ARCH} (Hopper) only"
    return None

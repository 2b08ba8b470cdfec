"""Read what we ship: every kernel's SASS has the intended matrix instruction and no local-memory traffic.

The shipped cubins are read as they are (no compiler needed beyond cuobjdump); the tuning candidates that do not
ship are compiled and read under the opt-in `build` marker."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cutlass_router import build, dispatch, manifest, prebuilt, resolve

SHIPPED = sorted(dispatch.reachable())
# What each kernel must contain: its matrix instruction (the GEMV's FMAs and its 16-byte read-only W loads), and
# for the route kernels the warp reductions of the expert choice (redux.sync; the GEMV route kernel also the rank
# choice's 16-byte key reads from shared memory, route.cuh select_rank1), or for the row-per-CTA select kernel its
# rank shuffles and block barriers; the RMSNorm kernels their 16-byte weight loads (read-only path), the sum's
# shuffle tree and 16-byte stores; a known model's select kernel its 16-byte logit loads where a lane holds 4 or 8.
WANT = {"splitk_mma": ("HMMA.16816.F32.BF16",), "gemv": ("FFMA", "LDG.E.128.CONSTANT"), "cutlass_sm90": ("HGMMA.",),
        "route": ("HMMA.16816.F32.BF16", "REDUX"), "route_gemv": ("FFMA", "LDG.E.128.CONSTANT", "REDUX", "LDS.128"),
        "route_select": ("REDUX",),
        "route_select_block": ("SHFL.IDX", "BAR.SYNC"),
        "rmsnorm": ("LDG.E.128.CONSTANT", "SHFL.BFLY", "STG.E.128")}


def _cuobjdump() -> str | None:
    """cuobjdump from PATH, the toolkit, or the nvidia-cuda-cuobjdump wheel (it needs nvdisasm beside it)."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        beside_nvcc = os.path.join(os.path.dirname(build.find_toolchain().nvcc), "cuobjdump")
        if os.path.isfile(beside_nvcc):
            return beside_nvcc
    except build.ToolkitNotFound:
        pass
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for p in Path(root).glob("cu*/bin/cuobjdump"):
            return str(p)
    return None


def _check_sass(symbol: str, cubin) -> None:
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (install nvidia-cuda-cuobjdump)")
    e = manifest.entry(symbol)
    env = dict(os.environ, PATH=os.path.dirname(tool) + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run([tool, "--dump-sass", str(cubin)], capture_output=True, text=True, check=True,
                          env=env).stdout
    kind = ("route_select_block" if e.config.get("block") else "route_select" if e.config.get("select_only")
            else "route_gemv" if e.config.get("gemv") else e.family)
    for want in WANT[kind]:
        assert want in sass, f"{symbol}: no {want} in its SASS"
    if e.config.get("fixed") and e.config["slots"] % 4 == 0:  # a model's select kernel: a lane's logits in 16 bytes
        assert "LDG.E.128" in sass, f"{symbol}: no 16-byte logit loads in its SASS"
    assert not opcodes(sass) & {"LDL", "STL"}, f"{symbol}: local-memory loads/stores in SASS"


@pytest.mark.parametrize("symbol", SHIPPED)
def test_shipped_sass_has_the_intended_mma_and_no_local_memory(symbol):
    _check_sass(symbol, prebuilt.lookup(symbol, manifest.entry(symbol).source()))


@pytest.mark.build
@pytest.mark.parametrize("symbol", sorted(set(manifest.entries()) - set(SHIPPED)))
def test_candidate_sass_has_the_intended_mma_and_no_local_memory(symbol):
    e = manifest.entry(symbol)
    _check_sass(symbol, resolve.cubin(e.source(), symbol, shipped=False).path)


def opcodes(sass: str) -> set[str]:
    """Opcodes of lines like `/*0090*/  @!P0 STL.64 [R1], R2 ;` (predicate and modifiers dropped)."""
    out = set()
    for line in sass.splitlines():
        tokens = line.split()
        if len(tokens) > 1 and tokens[0].startswith("/*") and tokens[0].endswith("*/"):
            op = tokens[2] if tokens[1].startswith("@") and len(tokens) > 2 else tokens[1]
            out.add(op.split(".")[0])
    return out


def test_opcode_reader_sees_local_memory():
    sass = "        /*0080*/                   @!P0 STL.64 [R1+0x8], R4 ;\n        /*0090*/  LDL R2, [R1] ;\n"
    assert {"STL", "LDL"} <= opcodes(sass)

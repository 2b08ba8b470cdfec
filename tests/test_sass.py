"""Read what we ship: every kernel's SASS has the intended matrix instruction and no local-memory traffic."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cutlass_router import build, manifest

pytestmark = pytest.mark.nvcc


def _cuobjdump() -> str | None:
    """cuobjdump from PATH, the toolkit, or the nvidia-cuda-cuobjdump wheel (it needs nvdisasm beside it)."""
    found = shutil.which("cuobjdump") or next(
        (p for p in (os.path.join(os.path.dirname(build.find_toolchain().nvcc), "cuobjdump"),) if os.path.isfile(p)),
        None)
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for p in Path(root).glob("cu*/bin/cuobjdump"):
            return str(p)
    return None


@pytest.mark.parametrize("symbol", sorted(manifest.entries()))
def test_sass_has_the_intended_mma_and_no_local_memory(symbol):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (install nvidia-cuda-cuobjdump)")
    e = manifest.entry(symbol)
    cubin = build.build_cubin(e.source(), symbol, prefer_prebuilt=False).path
    env = dict(os.environ, PATH=os.path.dirname(tool) + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run([tool, "--dump-sass", str(cubin)], capture_output=True, text=True, check=True,
                          env=env).stdout
    want = "HMMA.16816.F32.BF16" if e.family == "splitk_mma" else "HGMMA."
    assert want in sass, f"{symbol}: no {want} in its SASS"
    assert not opcodes(sass) & {"LDL", "STL"}, f"{symbol}: local-memory loads/stores in SASS"


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

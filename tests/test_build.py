"""Compilation (CI has nvcc, no GPU): every emitted kernel under the opt-in `build` marker; the ptxas gate, the
cache's integrity and reproducible builds in the default run."""
import os
import subprocess
import sys
import textwrap

import pytest

from cutlass_router import build, manifest, resolve

pytestmark = pytest.mark.nvcc


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.build
@pytest.mark.parametrize("symbol", sorted(manifest.entries()))
def test_kernel_compiles_clean(symbol):
    """sm_90a cubin with no spills and no serialized wgmma; the intended MMA instructions are in the PTX."""
    from cutlass_router.families import of

    e = manifest.entry(symbol)
    art = resolve.cubin(e.source(), symbol, shipped=False)
    assert art.path.stat().st_size > 0
    assert f"Compiling entry function '{symbol}' for 'sm_90a'" in art.report
    assert "0 bytes spill stores, 0 bytes spill loads" in art.report
    assert "C7510" not in art.report
    if of(e.family).HOST_LIB:
        assert resolve.host_library(e.source(), symbol, shipped=False).path.stat().st_size > 0


def test_ptxas_gate_rejects_spills_and_serialized_wgmma():
    build.check_ptxas_report("    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads", "k")
    with pytest.raises(build.BuildError, match="spilled"):
        build.check_ptxas_report("    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads", "k")
    with pytest.raises(build.BuildError, match="C7510"):
        build.check_ptxas_report("ptxas warning : (C7510) Potential Performance Loss: wgmma.mma_async", "k")


SMALL = textwrap.dedent("""
    extern "C" __global__ void crt_test_kernel(float* out) { out[threadIdx.x] = threadIdx.x; }
""")


def test_cache_hit_and_corruption_rebuild(fresh_cache):
    a = resolve.cubin(SMALL, "crt_test_kernel")
    assert a.path.parent == fresh_cache
    mtime = a.path.stat().st_mtime_ns
    assert resolve.cubin(SMALL, "crt_test_kernel").path.stat().st_mtime_ns == mtime  # hit
    good = a.path.read_bytes()
    a.path.write_bytes(good[: len(good) // 2])  # truncated by a crash or a full disk
    with pytest.raises(build.BuildError, match="sha256"):
        a.read()
    b = resolve.cubin(SMALL, "crt_test_kernel")
    assert b.origin == resolve.BUILT and b.read() == good


def test_source_edit_changes_the_key(fresh_cache):
    a = resolve.cubin(SMALL, "crt_test_kernel")
    b = resolve.cubin(SMALL + "// v2\n", "crt_test_kernel")
    assert a.path != b.path


def test_without_a_toolkit_the_cache_still_serves_what_nvcc_built(fresh_cache, hide_nvcc):
    host_source = SMALL + 'extern "C" int crt_test_kernel_answer() { return 42; }\n'
    cubin = resolve.cubin(SMALL, "crt_test_kernel")
    host = resolve.host_library(host_source, "crt_test_kernel", shipped=False)
    assert build.find_toolchain().version in cubin.path.name

    hide_nvcc()
    assert resolve.cubin(SMALL, "crt_test_kernel").path == cubin.path
    assert resolve.host_library(host_source, "crt_test_kernel", shipped=False).path == host.path
    with pytest.raises(build.ToolkitNotFound, match="neither shipped nor cached.*nvcc not found"):
        resolve.cubin(SMALL + "// edited\n", "crt_test_kernel")
    with pytest.raises(build.ToolkitNotFound, match="host library of crt_test_kernel"):
        resolve.host_library(host_source + "// edited\n", "crt_test_kernel", shipped=False)
    cubin.path.write_bytes(cubin.path.read_bytes()[:-8])  # damaged, and nothing to rebuild it with
    with pytest.raises(build.ToolkitNotFound):
        resolve.cubin(SMALL, "crt_test_kernel")


def test_compile_error_is_reported(fresh_cache):
    with pytest.raises(build.BuildError, match="nvcc failed"):
        resolve.cubin("this is not C++", "crt_broken")
    assert not list(fresh_cache.glob("crt_broken*.cubin"))


def test_concurrent_builds_leave_one_good_cubin(fresh_cache, tmp_path):
    code = ("import sys; from cutlass_router import resolve; "
            f"print(resolve.cubin({SMALL!r}, 'crt_test_kernel').path)")
    env = dict(os.environ, CUTLASS_ROUTER_CACHE_DIR=str(fresh_cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path) for _ in range(4)]
    paths = {p.communicate()[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1
    (path,) = paths
    assert resolve.Artifact(__import__("pathlib").Path(path), resolve.CACHED).read()
    leftovers = [p.name for p in fresh_cache.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == [], "nothing in the working directory"


def test_splitk_params_layout_matches_the_struct(tmp_path):
    """The Python packer and the C++ SplitKParams (and the tiled kernels' SplitKTiledParams) agree on size and offsets."""
    from cutlass_router.families import splitk_mma

    src = tmp_path / "layout.cu"
    src.write_text(textwrap.dedent("""
        #include <cstdio>
        #include <cstddef>
        #include "splitk_mma.cuh"
        using P = cutlass_router::SplitKParams;
        using T = cutlass_router::SplitKTiledParams;
        int main() {
          printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\\n", sizeof(P), offsetof(P, bias), offsetof(P, out),
                 offsetof(P, ldx), offsetof(P, ldo), offsetof(P, M), offsetof(P, K), offsetof(T, w_map),
                 offsetof(T, x_map), sizeof(T));
        }
    """))
    tc = build.find_toolchain()
    templates = os.path.join(os.path.dirname(build.__file__), "templates")
    exe = tmp_path / "layout"
    subprocess.run([tc.nvcc, "-std=c++17", *tc.includes(), "-I", templates, "-o", str(exe), str(src)], check=True,
                   cwd=tmp_path)
    got = list(map(int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()))
    assert got == [splitk_mma.PARAMS.size, 16, 24, 32, 48, 56, 64, *splitk_mma.TILED_MAPS, splitk_mma.TILED_PARAMS_SIZE]


def test_unwritable_cache_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    from cutlass_router import cache

    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a directory cannot be made below a file, whoever runs the test
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(cache.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with caplog.at_level("WARNING", logger="cutlass_router"):
        art = resolve.cubin(SMALL, "crt_test_kernel")
    assert art.path.parent == tmp_path / "tmp" / f"cutlass_router-{os.getuid()}"
    assert "is not writable" in caplog.text and "CUTLASS_ROUTER_CACHE_DIR" in caplog.text


def test_launch_structs_match_cuda_h(tmp_path):
    """The ctypes CUlaunchConfig / CUlaunchAttribute the launcher fills have cuda.h's layout and enum values."""
    import ctypes

    from cutlass_router import launch

    src = tmp_path / "layout.cpp"
    src.write_text(textwrap.dedent("""
        #include <cstdio>
        #include <cstddef>
        #include <cuda.h>
        int main() {
          printf("%zu %zu %zu %zu %zu %zu %zu %d %d\\n", sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, sharedMemBytes),
                 offsetof(CUlaunchConfig, hStream), offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),
                 sizeof(CUlaunchAttribute), offsetof(CUlaunchAttribute, value), (int)CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                 (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
        }
    """))
    tc = build.find_toolchain()
    exe = tmp_path / "layout"
    subprocess.run([tc.nvcc, "-o", str(exe), str(src)], check=True, cwd=tmp_path)
    got = list(map(int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()))
    C, A = launch._Config, launch._Attr
    assert got == [ctypes.sizeof(C), C.sharedMemBytes.offset, C.hStream.offset, C.attrs.offset, C.numAttrs.offset,
                   ctypes.sizeof(A), A.value.offset, launch.ATTR_CLUSTER_DIMENSION,
                   launch.ATTR_PROGRAMMATIC_STREAM_SERIALIZATION]


def test_build_is_reproducible_byte_for_byte(fresh_cache):
    """nvcc names internal symbols after the compiled file's path: the fixed build path makes two builds equal."""
    tc = build.find_toolchain()
    symbol = next(s for s, e in sorted(manifest.entries().items()) if e.family == "splitk_mma")
    source = manifest.entry(symbol).source()
    assert build.compile_cubin(tc, source, symbol)[0] == build.compile_cubin(tc, source, symbol)[0]

"""What ships inside the package: a cubin per kernel, exactly the emitted sources, intact, used without a toolkit;
and one host library that packs the CUTLASS kernels' Params, loadable and correct without a GPU."""
import ctypes
import hashlib

import pytest

from cutlass_router import build, dispatch, launch, manifest, prebuilt, resolve
from cutlass_router.families import cutlass_sm90, of

SHIPPED = sorted(dispatch.reachable())
HOST_LIB_KERNELS = sorted(s for s in SHIPPED if of(manifest.entry(s).family).HOST_LIB)


def test_exactly_what_dispatch_reaches_ships_for_its_current_source():
    data = prebuilt.index()
    assert data["arch"] == "sm_90a"
    assert set(data["kernels"]) == set(SHIPPED), "run `python -m cutlass_router prebuild` after changing dispatch"
    for symbol in SHIPPED:
        e = manifest.entry(symbol)
        item = data["kernels"][symbol]
        assert item["source_sha256"] == e.source_sha256 == manifest.sha256(e.source()), \
            f"{symbol}: prebuilt cubin is stale; run `prebuild`"
        blob = (prebuilt.DIR / item["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == item["cubin_sha256"]
        assert blob[:4] == b"\x7fELF"
    assert {p.name for p in prebuilt.DIR.glob("*.cubin")} == {k["file"] for k in data["kernels"].values()}


def test_the_host_library_holds_every_cutlass_kernel_for_its_current_source():
    lib = prebuilt.index()["host_library"]
    assert lib["platform"] == "linux-x86_64"
    assert lib["sources"] == {s: manifest.entry(s).source_sha256 for s in HOST_LIB_KERNELS}, "run `prebuild`"
    blob = (prebuilt.DIR / lib["file"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == lib["sha256"] and blob[:4] == b"\x7fELF"


def test_no_toolkit_uses_the_shipped_files(hide_nvcc):
    hide_nvcc()
    for symbol in (next(s for s in SHIPPED if manifest.entry(s).family == "splitk_mma"), HOST_LIB_KERNELS[0]):
        source = manifest.entry(symbol).source()
        art = resolve.cubin(source, symbol)
        assert art.path.parent == prebuilt.DIR and art.origin == resolve.SHIPPED
        assert art.read()[:4] == b"\x7fELF"
        with pytest.raises(build.ToolkitNotFound):  # another source: nothing shipped, and no nvcc to make it
            resolve.cubin(source + "// edited\n", symbol)
    host = resolve.host_library(manifest.entry(HOST_LIB_KERNELS[0]).source(), HOST_LIB_KERNELS[0])
    assert host.path.parent == prebuilt.DIR
    with pytest.raises(build.ToolkitNotFound):
        resolve.host_library(manifest.entry(HOST_LIB_KERNELS[0]).source() + "// edited\n", HOST_LIB_KERNELS[0])


def test_a_damaged_shipped_file_is_not_used(monkeypatch, tmp_path):
    symbol = next(s for s in SHIPPED if manifest.entry(s).family == "splitk_mma")
    copy = tmp_path / "prebuilt"
    copy.mkdir()
    for p in prebuilt.DIR.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / f"{symbol}.cubin").write_bytes(b"\x7fELF truncated")
    monkeypatch.setattr(prebuilt, "DIR", copy)
    assert prebuilt.lookup(symbol, manifest.entry(symbol).source(), "sm_90a") is None
    other = next(s for s in prebuilt.index()["kernels"] if s != symbol)
    assert prebuilt.lookup(other, manifest.entry(other).source(), "sm_90a") == copy / f"{other}.cubin"
    sm90 = HOST_LIB_KERNELS[0]
    assert prebuilt.lookup_host(sm90, manifest.entry(sm90).source(), "sm_90a") is not None
    lib = copy / prebuilt.index()["host_library"]["file"]
    lib.write_bytes(lib.read_bytes()[:-1])
    assert prebuilt.lookup_host(sm90, manifest.entry(sm90).source(), "sm_90a") is None


def test_the_host_library_is_only_offered_on_its_platform(monkeypatch):
    sm90 = HOST_LIB_KERNELS[0]
    monkeypatch.setattr(prebuilt, "platform_tag", lambda: "linux-aarch64")
    assert prebuilt.lookup_host(sm90, manifest.entry(sm90).source(), "sm_90a") is None


def _driver_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def _properties(lib: ctypes.CDLL, symbol: str) -> dict:
    cutlass_sm90.bind_host(lib, symbol)
    cluster = (ctypes.c_int * 3)()
    getattr(lib, f"{symbol}_cluster_shape")(cluster)
    return {"cluster": tuple(cluster), "block": getattr(lib, f"{symbol}_block_threads")(),
            "smem": getattr(lib, f"{symbol}_smem_size")(), "params": getattr(lib, f"{symbol}_params_size")()}


def _pack(lib: ctypes.CDLL, symbol: str, cap: int = launch.PARAM_CAPACITY, M: int = 100, x: int = 0x10000,
          bias: int = 0x30000):
    """Pack with made-up, 16-byte-aligned addresses: TMA encoding reads no memory, so no GPU is needed."""
    buf, grid = ctypes.create_string_buffer(launch.PARAM_CAPACITY), (ctypes.c_int * 3)()
    rc = getattr(lib, f"{symbol}_pack")(buf, cap, grid, x, 0x20000, bias, 0x40000, M, 128, 2880, 2880, 2880, 128, 132)
    return rc, buf.raw, tuple(grid)


@pytest.mark.skipif(prebuilt.platform_tag() != "linux-x86_64", reason="the shipped host library is linux-x86_64")
@pytest.mark.parametrize("symbol", HOST_LIB_KERNELS)
def test_the_shipped_host_library_loads_and_packs_without_a_gpu(symbol):
    e = manifest.entry(symbol)
    lib = ctypes.CDLL(str(prebuilt.lookup_host(symbol, e.source(), "sm_90a")))
    p = _properties(lib, symbol)
    assert p["cluster"] == (e.config["cluster_m"], e.config["cluster_n"], 1)
    assert p["block"] in (256, 384) and 0 < p["params"] <= 4096 and 48 * 1024 < p["smem"] <= 227 * 1024
    assert _pack(lib, symbol, M=0)[0] == 1               # empty problem: refused, not packed
    assert _pack(lib, symbol, x=0x10008)[0] == 1         # x not 16-byte aligned: TMA cannot take it
    assert _pack(lib, symbol, bias=0x30001)[0] == 1      # bias not 2-byte aligned
    assert _pack(lib, symbol, cap=16)[0] == 3            # params buffer too small
    rc, _, grid = _pack(lib, symbol)
    if _driver_loadable():
        assert rc in (0, 4) and (rc == 4 or min(grid) >= 1)
    else:
        assert rc == 4                                   # no driver: says so instead of packing garbage


@pytest.mark.build
@pytest.mark.skipif(prebuilt.platform_tag() != "linux-x86_64", reason="the shipped host library is linux-x86_64")
@pytest.mark.parametrize("symbol", HOST_LIB_KERNELS)
def test_the_shipped_host_library_matches_one_built_here(symbol):
    e = manifest.entry(symbol)
    shipped = ctypes.CDLL(str(prebuilt.lookup_host(symbol, e.source(), "sm_90a")))
    here = ctypes.CDLL(str(resolve.host_library(e.source(), symbol, shipped=False).path))
    assert _properties(shipped, symbol) == _properties(here, symbol)
    size = _properties(here, symbol)["params"]
    a, b = _pack(shipped, symbol), _pack(here, symbol)
    assert a[0] == b[0] and a[2] == b[2] and a[1][:size] == b[1][:size]


def test_nvcc_none_keeps_to_the_shipped_kernels(monkeypatch):
    symbol = HOST_LIB_KERNELS[0]
    source = manifest.entry(symbol).source()
    for value, message in (("none", "keeps to shipped and already built kernels"), ("/no/such/nvcc", "is not a file")):
        monkeypatch.setenv("CUTLASS_ROUTER_NVCC", value)
        build.find_toolchain.cache_clear()
        try:
            assert resolve.cubin(source, symbol).path.parent == prebuilt.DIR
            assert resolve.host_library(source, symbol).path.parent == prebuilt.DIR
            with pytest.raises(build.ToolkitNotFound, match=message):
                resolve.cubin(source + "// edited\n", symbol)
        finally:
            build.find_toolchain.cache_clear()


def _refuse_shipped(monkeypatch):
    real = ctypes.CDLL

    def cdll(path, *args, **kwargs):
        if str(path).startswith(str(prebuilt.DIR)):
            raise OSError(f"{path}: version `GLIBC_2.34' not found")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cutlass_sm90.ctypes, "CDLL", cdll)


@pytest.mark.nvcc
def test_a_host_library_the_system_refuses_is_built_here(monkeypatch):
    _refuse_shipped(monkeypatch)
    symbol = HOST_LIB_KERNELS[0]
    lib = cutlass_sm90.open_host(manifest.entry(symbol))
    assert _properties(lib, symbol)["block"] in (256, 384)


def test_a_host_library_the_system_refuses_without_nvcc_is_a_clear_error(monkeypatch, tmp_path):
    _refuse_shipped(monkeypatch)
    monkeypatch.setenv("CUTLASS_ROUTER_NVCC", "none")
    monkeypatch.setenv("CUTLASS_ROUTER_CACHE_DIR", str(tmp_path))  # nothing an earlier nvcc built, either
    build.find_toolchain.cache_clear()
    symbol = HOST_LIB_KERNELS[0]
    try:
        with pytest.raises(launch.LaunchError, match="does not load on this system .*GLIBC_2.34.*CUTLASS_ROUTER_NVCC"):
            cutlass_sm90.open_host(manifest.entry(symbol))
    finally:
        build.find_toolchain.cache_clear()


@pytest.mark.nvcc
def test_shipped_cubins_rebuild_byte_for_byte():
    """The tie between a shipped cubin and its source is checked, not only recorded: a sample of shipped kernels
    (one per family and output dtype without a host library; the CUTLASS ones take a minute each, see the
    `build` marker) compiled here from emitted/ gives exactly the shipped bytes."""
    tc = build.find_toolchain()
    data = prebuilt.index()
    if data["nvcc"] != tc.version:
        pytest.skip(f"shipped cubins come from nvcc {data['nvcc']}, this machine has {tc.version}")
    sample = {}
    for s in SHIPPED:
        e = manifest.entry(s)
        if not of(e.family).HOST_LIB:
            sample.setdefault((e.family, e.out_dtype), s)
    assert sample
    for symbol in sample.values():
        blob, _ = build.compile_cubin(tc, manifest.entry(symbol).source(), symbol)
        assert hashlib.sha256(blob).hexdigest() == data["kernels"][symbol]["cubin_sha256"], symbol


@pytest.mark.build
@pytest.mark.parametrize("symbol", SHIPPED)
def test_every_shipped_cubin_rebuilds_byte_for_byte(symbol):
    tc = build.find_toolchain()
    data = prebuilt.index()
    if data["nvcc"] != tc.version:
        pytest.skip(f"shipped cubins come from nvcc {data['nvcc']}, this machine has {tc.version}")
    blob, _ = build.compile_cubin(tc, manifest.entry(symbol).source(), symbol)
    assert hashlib.sha256(blob).hexdigest() == data["kernels"][symbol]["cubin_sha256"]


def test_a_template_edit_never_reuses_a_cubin(monkeypatch, tmp_path, hide_nvcc):
    """Emitted files include the templates; what is hashed (prebuilt index, cache key) is the expanded source, so
    an edited template finds no shipped or cached cubin of the old one."""
    symbol = next(s for s in SHIPPED if manifest.entry(s).family == "splitk_mma")
    e = manifest.entry(symbol)
    before = e.source()
    assert prebuilt.lookup(symbol, before) is not None
    edited = tmp_path / "templates"
    edited.mkdir()
    for p in manifest.TEMPLATES.iterdir():
        (edited / p.name).write_text(p.read_text())
    (edited / "splitk_mma.cuh").write_text((edited / "splitk_mma.cuh").read_text().replace(
        "namespace cutlass_router {", "namespace cutlass_router {\nconstexpr int kEdited = 1;", 1))
    monkeypatch.setattr(manifest, "TEMPLATES", edited)
    after = e.source()
    assert "kEdited" in after and "kEdited" not in before  # the same instantiation file, another template
    assert prebuilt.lookup(symbol, after) is None
    assert build.cubin_key(after) != build.cubin_key(before)
    hide_nvcc()
    with pytest.raises(build.ToolkitNotFound, match="neither shipped nor cached"):
        resolve.cubin(after, symbol)

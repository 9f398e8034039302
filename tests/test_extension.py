"""Loading the compiled kernels: version refusal, the warned fallback, and compile-on-first-use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ndsnn
from ndsnn import _extension

SMOKE = (
    "import torch, ndsnn; x = torch.randn(4, 3, 5); "
    "s = ndsnn.ops.lif(x); s2 = ndsnn.ops.lif(x); "
    "assert torch.equal(s, ndsnn.ops.lif_reference(x)[0]); print('source=' + ndsnn.kernel_status().source)"
)


def _run(env_update: dict[str, str], pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_update}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", SMOKE],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=pythonpath or None,
    )


def test_refusal_message_names_versions_and_rebuild(tmp_path):
    library = tmp_path / "_C.so"
    info = tmp_path / "_build_info.json"
    info.write_text(json.dumps({"torch_tag": "torch2.0.0-cpu-py38"}))
    message = _extension.prebuilt_refusal(library, info)
    assert "torch2.0.0-cpu-py38" in message and _extension.torch_tag() in message and "rebuild" in message
    info.write_text(json.dumps({"torch_tag": _extension.torch_tag()}))
    assert _extension.prebuilt_refusal(library, info) is None
    info.write_text("{corrupt")
    assert "unknown torch" in _extension.prebuilt_refusal(library, info)


def test_mismatched_prebuilt_is_refused_and_reported(tmp_path):
    """A copy of the package holding a library built for another torch: refused, never loaded."""
    package = tmp_path / "ndsnn"
    shutil.copytree(Path(ndsnn.__file__).parent, package, ignore=shutil.ignore_patterns("*.so", "_csrc"))
    (package / "_C.cpython-fake.so").write_bytes(b"not a library")
    (package / "_build_info.json").write_text(json.dumps({"torch_tag": "torch1.0.0-cpu-py36"}))
    result = _run({"NDSNN_KERNELS": "prebuilt"}, pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "refused" in result.stderr and "torch1.0.0-cpu-py36" in result.stderr
    assert "rebuild with" in result.stderr and "source=none" in result.stdout


def test_fallback_warns_once():
    result = _run({"NDSNN_KERNELS": "off"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no compiled kernels could be used") == 1
    assert "source=none" in result.stdout


def test_bad_policy_is_rejected():
    result = _run({"NDSNN_KERNELS": "fast"})
    assert result.returncode != 0 and "NDSNN_KERNELS must be one of" in result.stderr


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_compile_on_first_use(tmp_path):
    """The path plain `pip install -e .` takes: kernels compiled into the cache at first import."""
    if _extension.load().source == "jit":
        pytest.skip("this test session already runs on kernels compiled on first use")
    result = _run({"NDSNN_KERNELS": "jit", "NDSNN_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "source=jit" in result.stdout and "compiling" in result.stderr
    assert list(tmp_path.rglob("ndsnn_kernels*.so"))


def test_status_lists_compiled_ops():
    status = ndsnn.kernel_status()
    if status.loaded:
        assert ("lif_forward", "cpu") in status.kernels
        assert status.build_info["torch"] == torch.__version__.split("+")[0]
        assert (("lif_forward", "cuda") in status.kernels) == (status.build_info["cuda"] == "1")


def test_each_version_of_the_sources_gets_its_own_kernel_cache(tmp_path):
    """Two checkouts (or two versions of one) compile into different cache directories, so neither rebuilds
    the other's kernels at every import; the same sources and flags always map to the same directory."""
    source = _extension.sources_dir()
    assert source is not None
    first, second = tmp_path / "a" / "csrc", tmp_path / "b" / "csrc"
    shutil.copytree(source, first)
    shutil.copytree(source, second)
    names, flags = list(_extension.CPU_SOURCES), list(_extension.CXX_FLAGS)
    key_a = _extension.sources_key(first, names, flags)
    assert key_a == _extension.sources_key(first, names, flags)
    assert key_a != _extension.sources_key(second, names, flags)  # another checkout
    assert key_a != _extension.sources_key(first, names, [*flags, "-DEXTRA"])  # other flags
    header = next(first.glob("*.h"))
    header.write_text(header.read_text() + "\n// changed\n")
    assert key_a != _extension.sources_key(first, names, flags)  # a header changed
    assert _extension.cache_dir(key_a).parent == _extension.cache_dir()


def test_the_cpu_build_follows_the_instruction_set(monkeypatch):
    """NDSNN_CPU_ISA picks the library; avx2 is refused on a CPU without it, auto takes the widest."""
    monkeypatch.setenv("NDSNN_CPU_ISA", "baseline")
    assert _extension.chosen_isa(with_cuda=False) == "baseline"
    monkeypatch.setenv("NDSNN_CPU_ISA", "auto")
    assert _extension.chosen_isa(with_cuda=False) == ("avx2" if _extension.cpu_has("avx2") else "baseline")
    assert _extension.chosen_isa(with_cuda=True) == "baseline"  # a CUDA build is one library
    monkeypatch.setattr(_extension, "cpu_has", lambda isa: isa == "baseline")
    monkeypatch.setenv("NDSNN_CPU_ISA", "avx2")
    with pytest.raises(ValueError, match="NDSNN_CPU_ISA=avx2, but this CPU lacks"):
        _extension.chosen_isa(with_cuda=False)
    monkeypatch.setenv("NDSNN_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="NDSNN_CPU_ISA must be one of auto, baseline, avx2"):
        _extension.chosen_isa(with_cuda=False)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_the_other_cpu_build_passes_the_kernel_tests():
    """Both builds of the CPU kernels run the same kernel tests: this session's runs them in-process; here the
    other build (baseline where this session runs avx2, and the reverse) runs them in a subprocess."""
    status = _extension.load()
    if status.source != "jit" or not _extension.cpu_has("avx2"):
        pytest.skip("needs kernels compiled on first use on a CPU that runs both builds")
    other = "baseline" if status.isa == "avx2" else "avx2"
    tests = Path(__file__).parent
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not cuda",
               str(tests / "test_lif_kernels.py"), str(tests / "test_sparse_conv2d.py"),
               str(tests / "test_sparse_linear.py"), str(tests / "test_batch_norm_lif.py"),
               "-k", "not spikingjelly and not torch_compile"]  # fmt: skip
    check = f"import ndsnn; s = ndsnn.kernel_status(); assert s.isa == '{other}', s; print(s.isa)"
    env = {**os.environ, "NDSNN_CPU_ISA": other, "NDSNN_KERNELS": "jit"}
    loaded = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=900)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout

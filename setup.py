"""Build of ndsnn and its compiled kernels (ndsnn._C).

With torch importable at build time (``pip install --no-build-isolation -e .``), the C++ CPU kernels are
always compiled, and the CUDA kernels too when torch is a CUDA build and nvcc is found (a GPU is not
needed; TORCH_CUDA_ARCH_LIST defaults to sm_80 and sm_90 when no GPU is visible); a CPU-only build on x86-64
also builds the CPU kernels for AVX2 / FMA / F16C as a second library (ndsnn/_C_avx2). In pip's isolated build
environment torch is absent: the package installs as pure Python and compiles its kernels on first import
(ndsnn/_extension.py). NDSNN_NO_EXTENSION=1 skips the build; NDSNN_NO_CUDA=1 builds the CPU kernels only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def load_build_list():
    """ndsnn/_build_list.py by path (importing the package would try to load the kernels being built): the
    sources and flags of csrc/kernels.json, which the first-use build and CMakeLists.txt read too."""
    spec = importlib.util.spec_from_file_location("_ndsnn_build_list", ROOT / "ndsnn" / "_build_list.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BuildPyWithSources(build_py):
    """Ships csrc/ inside the package (ndsnn/_csrc) so a non-editable install can compile on first use."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "ndsnn" / "_csrc"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / "csrc", target)


def extension_build() -> tuple[list, dict]:
    if os.environ.get("NDSNN_NO_EXTENSION") == "1":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print(
            "ndsnn: torch is not importable at build time; the kernels will be compiled on first import "
            "(or install with --no-build-isolation to build them now)",
            file=sys.stderr,
        )
        return [], {}

    ext = load_build_list()
    csrc = ROOT / "csrc"
    sources = [str(Path("csrc") / s) for s in ext.CPU_SOURCES]
    nvcc = cpp_extension.CUDA_HOME and Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists()
    with_cuda = bool(torch.version.cuda) and bool(nvcc) and os.environ.get("NDSNN_NO_CUDA") != "1"
    defines = ["-DNDSNN_WITH_CUDA"] if with_cuda else []
    extra = {"cxx": [*ext.CXX_FLAGS, *defines]}
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        sources += [str(Path("csrc") / s) for s in ext.CUDA_SOURCES]
        extra["nvcc"] = [*ext.NVCC_FLAGS, *defines]
        extension_class = cpp_extension.CUDAExtension
    else:
        extension_class = cpp_extension.CppExtension
    # A CPU-only build also carries the CPU kernels built for wider instruction sets (ndsnn/_C_avx2...), one
    # library each; the package loads the widest this CPU runs (NDSNN_CPU_ISA).
    isas = ["baseline"] if with_cuda or platform.machine() not in ("x86_64", "AMD64") else list(ext.ISA_FLAGS)
    info = {
        "torch_tag": ext.torch_tag(),
        "with_cuda": with_cuda,
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST", "(visible GPUs)") if with_cuda else None,
        "cpu_isas": isas,
    }
    (ROOT / "ndsnn" / "_build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    modules = [
        extension_class(
            f"ndsnn.{ext.library_name(isa)}", sources, include_dirs=[str(csrc)], extra_link_args=list(ext.LINK_FLAGS),
            extra_compile_args={**extra, "cxx": [*extra["cxx"], *ext.ISA_FLAGS[isa]]},
        )
        for isa in isas
    ]  # fmt: skip
    return modules, {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_build()
setup(
    ext_modules=ext_modules,
    cmdclass={"build_py": BuildPyWithSources, **cmdclass},
    package_data={"ndsnn": ["_build_info.json", "verified_kernels.json", "ops/sparse_crossover.json"]},
)

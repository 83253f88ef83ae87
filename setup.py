"""Build of fastskel: pure-Python package + the ``fastskel._C`` extension (C++ always; CUDA too when
torch has CUDA and nvcc is found, unless ``FASTSKEL_FORCE_CPU=1``).

Install with ``pip install --no-build-isolation -e .`` so the build sees the installed torch.
"""
import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("fastskel: torch is not importable at build time; building without fastskel._C "
              "(install torch first and use --no-build-isolation)")
        return [], {}
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    cuda_sources = rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
    force_cpu = os.environ.get("FASTSKEL_FORCE_CPU", "0") == "1"
    use_cuda = bool(torch.version.cuda) and CUDA_HOME is not None and not force_cpu and bool(cuda_sources)
    cxx = ["-O3", "-std=c++17", "-fvisibility=hidden"]
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")  # +PTX: newer GPUs JIT the sm_90 PTX
        ext = CUDAExtension(
            "fastskel._C", sources + cuda_sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]},
        )
    else:
        ext = CppExtension("fastskel._C", sources, extra_compile_args={"cxx": cxx})
    print(f"fastskel: building fastskel._C with {'C++ and CUDA' if use_cuda else 'C++ only'}")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(
    packages=find_packages(include=["fastskel", "fastskel.*"]) + ["fastskel.kernels"],
    package_dir={"fastskel.kernels": "kernels"},
    package_data={"fastskel": ["graphs/*.yaml", "data/*.txt"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)

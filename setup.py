"""Builds effattn._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc
is found (EFFATTN_CUDA=0/1 overrides). Build with `pip install --no-build-isolation .`.

Environment:
  EFFATTN_CUDA        auto (default), 0 or 1
  EFFATTN_CUDA_ARCHS  e.g. "90a" or "80;90a" (default: the local GPU's arch, else 90a)
  MAX_JOBS            parallel compile jobs (ninja)
"""
import glob
import os
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - build-time message
    sys.exit("effattn needs torch installed first; build with `pip install --no-build-isolation .`")

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "third_party"))
from cutlass_headers import cutlass_include_dir  # noqa: E402


def rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def want_cuda():
    flag = os.environ.get("EFFATTN_CUDA", "auto").lower()
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if flag in ("0", "off", "false"):
        return False
    if flag in ("1", "on", "true"):
        if not available:
            sys.exit("EFFATTN_CUDA=1 but torch has no CUDA or nvcc was not found")
        return True
    return available


def cuda_arch_flags():
    archs = os.environ.get("EFFATTN_CUDA_ARCHS")
    if not archs:
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            archs = f"{major}{minor}" + ("a" if major == 9 else "")
        else:
            archs = "90a"
    flags = []
    for arch in archs.replace(",", ";").split(";"):
        arch = arch.strip().replace(".", "")
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


# torch.utils.cpp_extension picks the C++ standard that matches the installed torch.
cxx_flags = ["-O3"]
include_dirs = [os.path.join(ROOT, "include")]
sources = rel("csrc/registration.cpp") + rel("csrc/ops/*.cpp") + rel("csrc/cpu/*.cpp")
define_macros = []

if want_cuda():
    cutlass = cutlass_include_dir()  # CuTe-based kernels need it; the SM80 core does not
    if cutlass is not None:
        include_dirs.append(cutlass)
    sources += rel("csrc/ops/cuda/*.cpp") + rel("csrc/kernels/*.cu")
    define_macros.append(("EFFATTN_WITH_CUDA", "1"))
    extension = cpp_extension.CUDAExtension
    extra = {
        "cxx": cxx_flags,
        "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + cuda_arch_flags(),
    }
else:
    extension = cpp_extension.CppExtension
    extra = {"cxx": cxx_flags}

def compilers_have_shared_libstdcxx():
    """Whether every compiler the build may link with (CXX, CC, c++) finds a shared libstdc++."""
    for compiler in dict.fromkeys(filter(None, (os.environ.get("CXX"), os.environ.get("CC"), "c++"))):
        try:
            found = subprocess.run([compiler, "-print-file-name=libstdc++.so"],
                                   capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue  # not there: not the one linking
        if not (os.path.isabs(found) and os.path.exists(found)):
            return False
    return True


def shared_libstdcxx():
    """Libraries / directories that make _C.so use the system's shared libstdc++ (the one torch's
    libraries load) when the compiler has only a static one (the GPU machine's /opt/gcc). There,
    a private copy went into _C.so and, with -Bsymbolic-functions, our code used it: formatting
    an error message with a number crashed (found with scripts/cpp_error_probe.py)."""
    if compilers_have_shared_libstdcxx():
        return [], []
    for libdir in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if os.path.exists(os.path.join(libdir, "libstdc++.so.6")):
            return [":libstdc++.so.6"], [libdir]
    return [], []


STDCXX_LIBS, STDCXX_DIRS = shared_libstdcxx()


def write_build_info(with_cuda):
    """python/effattn/_build_info.py: what this build compiled, for `python -m effattn info`."""
    info = {
        "cuda": with_cuda,
        "cuda_archs": os.environ.get("EFFATTN_CUDA_ARCHS", "auto") if with_cuda else None,
        "cuda_na_dtypes": ["float16", "bfloat16"] if with_cuda else [],
        "cuda_na_head_dims": [32, 64, 128] if with_cuda else [],
        "cpu_dtypes": ["float32", "float64", "float16 (in fp32)", "bfloat16 (in fp32)"],
        "built_with_torch": torch.__version__,
    }
    with open(os.path.join(ROOT, "python", "effattn", "_build_info.py"), "w") as fh:
        fh.write('"""Written by setup.py at build time."""\n')
        fh.write(f"BUILD_INFO = {info!r}\n")


write_build_info(extension is cpp_extension.CUDAExtension)

setup(
    name="effattn",
    version="0.1.0",
    description="Efficient attention kernels for PyTorch: neighborhood, block-sparse, "
    "estimated-sparse and lightning attention",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[
        extension(
            name="effattn._C",
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            libraries=STDCXX_LIBS,
            library_dirs=STDCXX_DIRS,
        )
    ],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    entry_points={"console_scripts": ["effattn = effattn.cli:main"]},
    python_requires=">=3.9",
)

"""Where the CUTLASS/CuTe headers come from: the `nvidia-cutlass` PyPI wheel ships them
under cutlass_library/source/include. Nothing from CUTLASS is copied into this repo.

`CUTLASS_INCLUDE` overrides the location. Run as a script to print the directory.
"""
import importlib.util
import os
import sys


def cutlass_include_dir():
    """Return the CUTLASS include directory, or None when it cannot be found."""
    override = os.environ.get("CUTLASS_INCLUDE")
    if override:
        return override if os.path.isdir(os.path.join(override, "cute")) else None
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "source", "include")
    return path if os.path.isdir(os.path.join(path, "cute")) else None


if __name__ == "__main__":
    path = cutlass_include_dir()
    if path is None:
        sys.exit("CUTLASS headers not found: pip install nvidia-cutlass (or set CUTLASS_INCLUDE)")
    print(path)

"""songspace: a learned metric space for music, so that songs that sound alike lie close."""
import os

__version__ = "0.1.0"

# The CPU instruction set of the numeric kernels, made explicit before torch is imported:
# PyTorch, oneDNN and MKL otherwise pick kernels by CPU generation (AVX2 vs AVX-512), and
# training then gives different weights on different x86-64 machines. AVX2 is the widest set
# every x86-64 machine of the last decade has. An environment that sets these keeps its own.
CPU_ISA = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"}
for _name, _value in CPU_ISA.items():
    os.environ.setdefault(_name, _value)


def __getattr__(name: str):
    # `songspace.Library` is imported on first use: a stage importing songspace.corpus loads
    # nothing of the index (torch and faiss load on the Library's first use in any case)
    if name == "Library":
        from songspace.index.api import Library
        return Library
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

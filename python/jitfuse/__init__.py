"""jitfuse: oneDNN graph fusions for frozen TorchScript on CPUs.

Importing this package loads libjitfuse.so, which registers the fused ops (torch.ops.jitfuse.*)
and the graph passes that the TorchScript profiling executor runs on frozen modules.
"""
import ctypes
import importlib.metadata
import os

import torch  # first: one libgomp, shared with oneDNN

__version__ = "0.1.0"

_HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY_PATH = os.path.join(_HERE, "lib", "libjitfuse.so")


def _load_onednn():
    """Make libdnnl.so.3 from the onednn-cpu-gomp wheel resolvable for libjitfuse.so."""
    for f in importlib.metadata.files("onednn-cpu-gomp") or []:
        if f.name == "libdnnl.so.3":
            ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
            return
    raise ImportError("jitfuse: libdnnl.so.3 not found in the onednn-cpu-gomp package")


def _load():
    if LIBRARY_PATH in torch.ops.loaded_libraries:  # a second copy in one process would abort
        return
    _load_onednn()
    torch.ops.load_library(LIBRARY_PATH)


_load()
_ops = torch.ops.jitfuse

from . import fake as _fake  # noqa: E402  (after the ops exist)

_fake.register()


def set_enabled(enabled: bool) -> None:
    """Turn jitfuse's passes on or off for graphs the executor optimizes from now on."""
    _ops._set_enabled(bool(enabled))


def is_enabled() -> bool:
    return bool(_ops._is_enabled())


def patterns() -> list:
    """Names of all fusion patterns (the names JITFUSE_DISABLE takes)."""
    return list(_ops._pattern_names())


def set_pattern_enabled(name: str, enabled: bool) -> None:
    """Turn one pattern (e.g. "conv2d_sum_relu") on or off; JITFUSE_DISABLE sets the start value."""
    _ops._set_pattern_enabled(name, bool(enabled))


def is_pattern_enabled(name: str) -> bool:
    return bool(_ops._is_pattern_enabled(name))


def onednn_isa() -> str:
    """The instruction set oneDNN dispatches to on this CPU ("avx2", "avx512_core_bf16",
    "avx512_core_amx", ...): what decides which kernels jitfuse's ops run."""
    return str(_ops._onednn_isa())


def set_winograd_enabled(enabled: bool) -> None:
    """Compute eligible float32 3x3 stride-1 convolutions with Winograd F(2x2, 3x3) (on by default;
    JITFUSE_WINOGRAD=0 starts it off). Off: oneDNN's direct convolution, bit for bit as before."""
    _ops._set_winograd_enabled(bool(enabled))


def is_winograd_enabled() -> bool:
    return bool(_ops._is_winograd_enabled())


def optimize(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Fuse a frozen module now: returns a copy whose first call runs fused and whose
    torch.jit.save file holds the fused graph (loading it needs jitfuse imported)."""
    if not isinstance(module, torch.jit.ScriptModule):
        raise TypeError(f"jitfuse.optimize: expected a frozen torch.jit.ScriptModule, got {type(module).__name__}")
    return torch.jit._recursive.wrap_cpp_module(_ops._optimize(module._c))


from . import quantization  # noqa: E402  (needs the library loaded)
from .quantization import QuantConf  # noqa: E402
from ._report import FusionReport, report  # noqa: E402  (python -m jitfuse.report: the CLI)

__all__ = ["optimize", "report", "FusionReport", "quantization", "QuantConf", "set_enabled", "is_enabled", "patterns", "set_pattern_enabled", "is_pattern_enabled",
           "set_winograd_enabled", "is_winograd_enabled", "onednn_isa", "__version__"]

"""Deployment without TorchScript: an exported program with jitfuse's fused ops, and its
AOTInductor package, which a C++ service loads with torch::inductor::AOTIModelPackageLoader
beside libjitfuse.so (examples/cpp/aoti_run.cpp).
"""
import torch

from jitfuse import fx


def fuse_program(model, example_inputs):
    """torch.export's program of `model` with jitfuse's fusions, its weights frozen as constants.
    `model` is put in eval mode (an inference program: dropout off, batch norms folded)."""
    model = model.eval()
    with torch.no_grad():
        program = torch.export.export(model, tuple(example_inputs), strict=False)
        fused = fx.fuse(program.module())
        return torch.export.export(fused, tuple(example_inputs), strict=False)


def package(model, example_inputs, path):
    """Compile the fused program with AOTInductor into the package file `path` (a .pt2); returns `path`."""
    program = fuse_program(model, example_inputs)
    return torch._inductor.aoti_compile_and_package(program, package_path=str(path))

"""Deployment without TorchScript: an exported program with jitfuse's fused ops, and its
AOTInductor package, which a C++ service loads with torch::inductor::AOTIModelPackageLoader
beside libjitfuse.so (examples/cpp/aoti_run.cpp).
"""
import torch

from jitfuse import fx


def fuse_program(model, example_inputs):
    """torch.export's program of `model` (a module or an exported program) with jitfuse's fusions,
    its weights frozen as constants. A module is put in eval mode (an inference program: dropout
    off, batch norms folded), except where it refuses: PT2E's modules (convert_pt2e) take torchao's
    move_exported_model_to_eval."""
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    try:
        model = model.eval()
    except NotImplementedError:
        pass
    with torch.no_grad():
        program = torch.export.export(model, tuple(example_inputs), strict=False)
        fused = fx.fuse(program.module())
        return torch.export.export(fused, tuple(example_inputs), strict=False)


def package(model, example_inputs, path):
    """Compile the fused program of `model` (a module, a PT2E model, an exported program such as
    jitfuse.quantization.export's) with AOTInductor into the package file `path` (a .pt2); returns `path`."""
    program = fuse_program(model, example_inputs)
    return torch._inductor.aoti_compile_and_package(program, package_path=str(path))

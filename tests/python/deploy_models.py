"""Models the deployment tests share: a small conv net, saved frozen (plain.pt) and fused offline
by jitfuse.optimize (fused.pt), with an input and the eager output (io.pt) for the C++ app; and
the same net converted to int8 by jitfuse.quantization (int8_plain.pt, int8_fused.pt) with the
Python module's fused output (int8_io.pt); and, without TorchScript, its AOTInductor package
(model.pt2, aoti_io.pt).

    python tests/python/deploy_models.py OUT_DIR
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 32, 1)
        self.skip = nn.Conv2d(16, 32, 1)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        y = F.relu(self.b(F.relu(self.a(x))) + self.skip(x))
        return F.silu(self.head(y))


def make_model():
    torch.manual_seed(0)
    model = SmallResNet().eval()
    model.bn.running_mean.uniform_(-0.1, 0.1)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model


class Tensors(nn.Module):
    """Carries tensors to C++: torch::jit::load(path).attr("input")."""

    def __init__(self, **tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)


def save_all(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    model, x = make_model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        frozen = torch.jit.freeze(torch.jit.trace(model, x))
        torch.jit.save(frozen, os.path.join(out_dir, "plain.pt"))
        torch.jit.save(jitfuse.optimize(frozen), os.path.join(out_dir, "fused.pt"))
    torch.jit.save(torch.jit.script(Tensors(input=x, expected=expected)), os.path.join(out_dir, "io.pt"))
    save_int8(model, x, out_dir)
    save_aoti(model, x, out_dir)
    return model, x, expected


def int8_model(model, x):
    """The reference quantized module of `model`, calibrated on 4 random batches."""
    from jitfuse import QuantConf, quantization
    torch.manual_seed(1)
    prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
    with torch.no_grad():
        for _ in range(4):
            with quantization.calibrate(conf):
                prepared(torch.randn_like(x))
    return quantization.convert(prepared, conf, x)


def save_int8(model, x, out_dir):
    qmodel = int8_model(model, x)
    fused = jitfuse.optimize(qmodel)
    with torch.no_grad():
        expected = fused(x)
    torch.jit.save(qmodel, os.path.join(out_dir, "int8_plain.pt"))
    torch.jit.save(fused, os.path.join(out_dir, "int8_fused.pt"))
    torch.jit.save(torch.jit.script(Tensors(input=x, expected=expected)), os.path.join(out_dir, "int8_io.pt"))


def save_aoti(model, x, out_dir):
    """Without TorchScript: jitfuse.export.package's AOTInductor package (model.pt2, about 20 s to
    compile) and, for C++'s torch::pickle_load, the input and eager output (aoti_io.pt)."""
    import jitfuse.export
    jitfuse.export.package(model, (x,), os.path.join(out_dir, "model.pt2"))
    with torch.no_grad():
        torch.save({"input": x, "expected": model(x)}, os.path.join(out_dir, "aoti_io.pt"))


if __name__ == "__main__":
    save_all(sys.argv[1])

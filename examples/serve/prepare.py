"""Fuse models offline for serving: trace, freeze (int8: calibrate and convert), jitfuse.optimize,
torch.jit.save. Each file carries what the server needs to read requests for it (serve.json:
the input's shape per sample and dtype), so app.py takes any file written here.

    python examples/serve/prepare.py OUT_DIR [--model small|resnet50] [--precision fp32 bf16 int8]

writes OUT_DIR/<model>_<precision>.pt. "small" is a little image classifier (3x64x64, ms per
call: what the tests serve); "resnet50" is bench/resnet50.py at 3x224x224. A model of your own:
save_served(jitfuse.optimize(frozen), path, input_shape, input_dtype).
"""
import argparse
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from jitfuse import QuantConf, quantization

import wire

class SmallClassifier(nn.Module):
    """conv-bn-relu stem, one residual block, pooling, a linear head: 10 classes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.conv1 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.stem(x))), 2)
        x = F.relu(self.conv2(F.relu(self.conv1(x))) + x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def small():
    torch.manual_seed(0)
    model = SmallClassifier().eval()
    model.bn.running_mean.uniform_(-0.1, 0.1)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model, [3, 64, 64]


def resnet50():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
    from resnet50 import resnet50 as make
    return make().eval(), [3, 224, 224]


MODELS = {"small": small, "resnet50": resnet50}


def save_served(module, path, input_shape, input_dtype):
    """torch.jit.save with the request format app.py reads: input_shape without the batch."""
    meta = {"input_shape": list(input_shape), "input_dtype": str(input_dtype).removeprefix("torch.")}
    torch.jit.save(module, path, _extra_files={wire.META_FILE: json.dumps(meta)})


def fused(model, precision, input_shape, calibration_batches=8):
    """(jitfuse-fused frozen module, the dtype it takes) of an eval-mode model."""
    x = torch.randn(4, *input_shape)
    with torch.no_grad():
        if precision == "fp32":
            return jitfuse.optimize(torch.jit.freeze(torch.jit.trace(model, x))), torch.float32
        if precision == "bf16":
            bf16 = copy.deepcopy(model).to(torch.bfloat16)
            return jitfuse.optimize(torch.jit.freeze(torch.jit.trace(bf16, x.bfloat16()))), torch.bfloat16
        if precision == "int8":
            # Demo calibration on random images; calibrate on real data for a real model.
            prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
            gen = torch.Generator().manual_seed(1)
            for _ in range(calibration_batches):
                with quantization.calibrate(conf):
                    prepared(torch.randn(x.shape, generator=gen))
            return jitfuse.optimize(quantization.convert(prepared, conf, x)), torch.float32
    raise ValueError(f"precision {precision!r} is not one of fp32, bf16, int8")


def prepare(out_dir, model_name="small", precisions=("fp32", "bf16", "int8")):
    """Writes OUT_DIR/<model>_<precision>.pt for each precision; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    model, input_shape = MODELS[model_name]()
    paths = {}
    for precision in precisions:
        module, dtype = fused(model, precision, input_shape)
        paths[precision] = os.path.join(out_dir, f"{model_name}_{precision}.pt")
        save_served(module, paths[precision], input_shape, dtype)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--model", choices=sorted(MODELS), default="small")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "int8"], default=["fp32", "bf16", "int8"])
    args = ap.parse_args()
    for precision, path in prepare(args.out_dir, args.model, args.precision).items():
        print(f"{precision}: {path}")


if __name__ == "__main__":
    main()

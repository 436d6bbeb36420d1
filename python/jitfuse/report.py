"""python -m jitfuse.report MODEL.pt --input 1x3x224x224[:bf16] [--input ...] [--json]

Loads a saved TorchScript file, makes one input per --input (shape, then an optional dtype:
float32 by default, bf16/bfloat16, float64, int64/long for token ids and masks, which are ones)
and prints jitfuse's fusion report: what fused, what a pattern refused and why, what is left."""
import argparse
import json
import sys
import types

import torch

import jitfuse

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64,
          "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "bool": torch.bool}


def parse_input(spec):
    shape, _, dtype = spec.partition(":")
    try:
        sizes = [int(s) for s in shape.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input {spec!r}: expected sizes like 1x3x224x224[:bf16]") from None
    dtype = dtype.lower() or "float32"
    if dtype not in DTYPES:
        raise argparse.ArgumentTypeError(f"--input {spec!r}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
    dtype = DTYPES[dtype]
    if dtype.is_floating_point:
        return torch.randn(sizes, generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.ones(sizes, dtype=dtype)  # valid token ids and an all-ones attention mask


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jitfuse.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("model", help="a torch.jit.save file")
    parser.add_argument("--input", action="append", type=parse_input, default=[], metavar="SHAPE[:DTYPE]",
                        help="one per forward() argument, e.g. 1x3x224x224 or 1x128:int64")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON instead of the table")
    args = parser.parse_args(argv)
    if not args.input:
        parser.error("give one --input per forward() argument")
    try:
        module = torch.jit.load(args.model)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"jitfuse.report: cannot load {args.model}: {e}", file=sys.stderr)
        return 2
    module.eval()
    result = jitfuse.report(module, *args.input)
    print(json.dumps(list(result), indent=1) if args.json else result)
    return 0


class _CallableModule(types.ModuleType):
    """`import jitfuse.report` binds the name jitfuse.report to this module (Python sets a package's
    attribute to each submodule it imports), hiding the function of that name: calling the module
    makes the report all the same."""

    def __call__(self, module, *inputs):
        return jitfuse._report.report(module, *inputs)


if __name__ == "__main__":
    sys.exit(main())
sys.modules[__name__].__class__ = _CallableModule

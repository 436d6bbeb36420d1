"""INT8 calibration flow: QuantConf (a JSON recipe), prepare, calibrate, convert, autotune.

The Python side only observes and writes the recipe; convert builds a reference int8 TorchScript
module on plain tensors (uint8/int8 values, their scales and zero points as separate values: the
quantized dtypes are deprecated since torch 2.13) with jitfuse's own conversion ops around float
ops, and jitfuse's C++ passes rewrite its chains into int8 kernels.

Recipe file (version 2), one entry per quantizable op, keyed by a stable name
"<module path>:<op kind>[.<n>]" (the n-th op of that kind in that module, from 1):

    {"version": 2, "dtype": "int8", "observer": "minmax",
     "activation": {"dtype": "uint8", "qscheme": "per_tensor_affine"},
     "weight": {"dtype": "int8", "qscheme": "per_channel_symmetric", "bits": 8},
     "ops": {
       "layer1.0.conv1:conv2d": {"kind": "conv2d", "recipe": "int8", "activation": "static",
                                 "inputs": [{"scale": 0.02, "zero_point": 0, "min": 0.0, "max": 5.1}]},
       "encoder.layer.0.attention.self.query:linear": {
           "kind": "linear", "recipe": "int8", "activation": "dynamic",
           "smooth": {"alpha": 0.5, "channel_max": [...]},
           "inputs": [{"scale": ..., "zero_point": ..., "min": ..., "max": ...}]},
       "encoder.layer.3.output.dense:linear": {"kind": "linear", "recipe": "fp32",
           "fallback": "autotune: int8 score 0.9987, with this op in fp32 0.9993", ...}}}

- "recipe": "int8" or "fp32" (set it by hand to keep an op in float).
- "activation": "static" (uint8, asymmetric, per tensor: the observed scale and zero point) or
  "dynamic" (linears only: each row quantized at run time, symmetric, its own scale: what keeps
  a pretrained transformer's outlier tokens). Default: static for convs, pools, products and adds,
  dynamic for linears.
- "smooth" (linears only): SmoothQuant. Each input channel j is divided by
  s_j = channel_max_j^alpha / weight_max_j^(1 - alpha) before quantization and the weight's column
  multiplied by it, moving activation outliers into the weight. channel_max is the observed
  absolute maximum per input channel; weight_max the weight's, over every smoothed linear reading
  the same input (Q, K and V share one s). Written by default for linears that read a LayerNorm's
  output, alpha 0.5; edit alpha, or delete the entry, by hand.
- "weight": bits 8 (int8 in [-127, 127]) where the CPU computes them exactly (VNNI, AMX), 7
  ([-63, 63]) elsewhere: CPUs without VNNI multiply u8 x s8 pairs into saturating int16. The file
  records the choice, so it means the same everywhere (8-bit weights on a CPU without VNNI are
  computed in float32: right, slower).
- "fallback": why autotune kept the op in fp32.
Version 1 files (static activations, 7-bit weights, no smoothing) still load and convert.

The package's modules: recipe (QuantConf, the file and its validation), graph (the model's
quantizable ops, found on its FX graph), observe (prepare, calibrate), convert (the int8
TorchScript module; export: the same as a fused torch.export program), autotune (which ops to
keep in fp32).
"""
from .autotune import autotune
from .convert import convert, export
from .observe import calibrate, prepare
from .recipe import FORMAT_VERSION, QuantConf, QuantConfError, native_weight_bits

__all__ = ["QuantConf", "QuantConfError", "prepare", "calibrate", "convert", "export", "autotune", "native_weight_bits",
           "FORMAT_VERSION"]

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
"""
import contextlib
import copy
import json
import math
import operator
import os
import warnings

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver
from torch.fx.experimental.optimization import fuse as _fold_batch_norms

FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
KINDS = ("conv2d", "linear", "bmm", "matmul", "add", "max_pool2d")
ACTIVATIONS = ("static", "dynamic")
_ACTIVATION = {"dtype": "uint8", "qscheme": "per_tensor_affine"}
_WEIGHT_SCHEME = {"dtype": "int8", "qscheme": "per_channel_symmetric"}
_V1_WEIGHT = dict(_WEIGHT_SCHEME, quant_min=-63, quant_max=63)
DEFAULT_ALPHA = 0.5
SCALE_RANGE = (1e-12, 1e12)  # what an observer gives for float32 activations; outside: a broken file


class QuantConfError(ValueError):
    """A recipe that cannot be used: names the file and the field."""


def native_weight_bits():
    """8 where oneDNN computes full int8 weights exactly on this CPU (VNNI, AMX), else 7."""
    return int(torch.ops.jitfuse._int8_weight_bits())


# ---- the recipe file ----------------------------------------------------------------------


class QuantConf:
    """Quantization settings and observed statistics: QuantConf(dtype=torch.int8) for a first
    calibration, QuantConf("int8_conf.json") to re-use a saved recipe."""

    def __init__(self, path=None, dtype=torch.int8, observer="minmax", weight_bits=None):
        if dtype != torch.int8:
            raise ValueError(f"QuantConf: only dtype=torch.int8 is supported, got {dtype}")
        if not isinstance(observer, str) or observer not in OBSERVERS:
            raise ValueError(f"QuantConf: observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
        if weight_bits not in (None, 7, 8):
            raise ValueError(f"QuantConf: weight_bits must be 7 or 8, got {weight_bits!r}")
        self.path = None
        self.observer = observer
        self.weight_bits = weight_bits or native_weight_bits()
        self.ops = {}  # name -> {"kind", "recipe", "activation", "inputs", ["smooth"], ["fallback"]}
        self._observers = {}  # (name, input index) -> torch.ao observer, while calibrating
        self._channel_max = {}  # name -> observed absolute maximum per input channel (linears)
        self._calibrating = False
        if path is not None:
            self.path = os.fspath(path)
            _load(self, self.path)

    def save(self, path, default_recipe=True):
        """Write the recipe as JSON. default_recipe=True keeps the int8/fp32 choice the flow made
        for each op (an add whose operand nothing else quantizes stays fp32); False marks every
        op int8."""
        if not self.ops or any(not e["inputs"] for e in self.ops.values()):
            raise QuantConfError("QuantConf.save: nothing observed yet: run the model under "
                                 "quantization.calibrate(conf) first")
        ops = {}
        for name, e in self.ops.items():
            entry = {k: v for k, v in e.items() if not k.startswith("_")}
            if not default_recipe:
                entry["recipe"] = "int8"
                entry.pop("fallback", None)
            ops[name] = entry
        doc = {"version": FORMAT_VERSION, "dtype": "int8", "observer": self.observer,
               "activation": _ACTIVATION, "weight": dict(_WEIGHT_SCHEME, bits=self.weight_bits), "ops": ops}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)

    def _collect(self):
        """Observed statistics -> quantization parameters of each op input."""
        for name, entry in self.ops.items():
            inputs = []
            for i in range(entry["num_inputs"] if "num_inputs" in entry else len(entry["inputs"])):
                obs = self._observers.get((name, i))
                if obs is None or not torch.isfinite(obs.min_val).item():
                    break  # never ran: this op stays unobserved
                scale, zero_point = obs.calculate_qparams()
                inputs.append({"scale": float(scale), "zero_point": int(zero_point),
                               "min": float(obs.min_val), "max": float(obs.max_val)})
            else:
                entry["inputs"] = inputs
                entry.pop("num_inputs", None)
                if "smooth" in entry and name in self._channel_max:
                    entry["smooth"]["channel_max"] = [float(v) for v in self._channel_max[name]]


def _load(conf, path):
    def fail(field, why):
        raise QuantConfError(f"QuantConf {path}: field '{field}': {why}" if field else f"QuantConf {path}: {why}")

    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        fail("", f"cannot read the file ({e.strerror})")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        fail("", f"not a valid JSON file ({e})")
    if not isinstance(doc, dict):
        fail("", f"expected a JSON object at the top level, got {type(doc).__name__}")
    if "version" not in doc:
        fail("version", "missing")
    version = doc["version"]
    if isinstance(version, bool) or version not in READS_VERSIONS:
        fail("version", f"unknown version {version!r} (this jitfuse reads versions {', '.join(map(str, READS_VERSIONS))})")
    if doc.get("dtype", "int8") != "int8":
        fail("dtype", f"expected \"int8\", got {doc['dtype']!r}")
    observer = doc.get("observer", "minmax")
    if not isinstance(observer, str) or observer not in OBSERVERS:
        fail("observer", f"expected one of {sorted(OBSERVERS)}, got {observer!r}")
    if "activation" in doc and doc["activation"] != _ACTIVATION:
        fail("activation", f"expected {json.dumps(_ACTIVATION)}, got {json.dumps(doc['activation'])}")
    if version == 1:
        if "weight" in doc and doc["weight"] != _V1_WEIGHT:
            fail("weight", f"expected {json.dumps(_V1_WEIGHT)}, got {json.dumps(doc['weight'])}")
        bits = 7
    else:
        w = doc.get("weight")
        if not isinstance(w, dict) or {k: v for k, v in w.items() if k != "bits"} != _WEIGHT_SCHEME:
            fail("weight", f"expected {json.dumps(dict(_WEIGHT_SCHEME, bits=8))} (bits 7 or 8), got {json.dumps(w)}")
        bits = w.get("bits")
        if isinstance(bits, bool) or bits not in (7, 8):
            fail("weight.bits", f"expected 7 or 8, got {bits!r}")
    ops = doc.get("ops")
    if not isinstance(ops, dict):
        fail("ops", "missing or not an object")
    conf.observer, conf.weight_bits = observer, bits
    for op_name, entry in ops.items():
        where = f"ops.{op_name}"
        if not isinstance(entry, dict):
            fail(where, "expected an object")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            fail(f"{where}.kind", f"expected one of {list(KINDS)}, got {kind!r}")
        if not isinstance(entry.get("recipe"), str) or entry["recipe"] not in ("int8", "fp32"):
            fail(f"{where}.recipe", f"expected \"int8\" or \"fp32\", got {entry.get('recipe')!r}")
        activation = entry.get("activation", "static")
        if version == 1 and "activation" in entry:
            fail(f"{where}.activation", "not a version 1 field")
        if activation not in ACTIVATIONS or (activation == "dynamic" and kind != "linear"):
            allowed = '"static" or "dynamic"' if kind == "linear" else '"static"'
            fail(f"{where}.activation", f"expected {allowed}, got {activation!r}")
        inputs = entry.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != _num_inputs(kind):
            fail(f"{where}.inputs", f"expected a list of {_num_inputs(kind)} input(s)")
        for i, q in enumerate(inputs):
            at = f"{where}.inputs[{i}]"
            if not isinstance(q, dict):
                fail(at, "expected an object")
            s = _number(q.get("scale"))
            if s is None or not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
                fail(f"{at}.scale", f"expected a number in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}], got {q.get('scale')!r}")
            zp = q.get("zero_point")
            if isinstance(zp, bool) or not isinstance(zp, int) or not 0 <= zp <= 255:
                fail(f"{at}.zero_point", f"expected an integer in [0, 255], got {zp!r}")
            for bound in ("min", "max"):
                if bound in q and _number(q[bound]) is None:
                    fail(f"{at}.{bound}", f"expected a finite number, got {q[bound]!r}")
        parsed = {"kind": kind, "recipe": entry["recipe"], "activation": activation,
                  "inputs": [{"scale": float(q["scale"]), "zero_point": q["zero_point"],
                              **{k: float(q[k]) for k in ("min", "max") if k in q}} for q in inputs]}
        if "smooth" in entry:
            parsed["smooth"] = _smooth_entry(entry["smooth"], kind, f"{where}.smooth", fail)
        if "fallback" in entry:
            if not isinstance(entry["fallback"], str):
                fail(f"{where}.fallback", f"expected a string, got {entry['fallback']!r}")
            parsed["fallback"] = entry["fallback"]
        conf.ops[op_name] = parsed


def _smooth_entry(smooth, kind, where, fail):
    if kind != "linear":
        fail(where, "smoothing applies to linears only")
    if not isinstance(smooth, dict):
        fail(where, "expected an object")
    alpha = _number(smooth.get("alpha"))
    if alpha is None or not 0.0 <= alpha <= 1.0:
        fail(f"{where}.alpha", f"expected a number in [0, 1], got {smooth.get('alpha')!r}")
    out = {"alpha": alpha}
    if "channel_max" in smooth:
        cm = smooth["channel_max"]
        if not isinstance(cm, list) or not cm or any(_number(v) is None or v < 0 for v in cm):
            fail(f"{where}.channel_max", "expected a list of non-negative numbers, one per input channel")
        out["channel_max"] = [float(v) for v in cm]
    return out


def _number(v):
    """`v` as a finite float, or None (bools, strings, NaN, infinities, ints beyond float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _num_inputs(kind):
    return 2 if kind in ("bmm", "matmul") else 1


# ---- the model's quantizable ops ----------------------------------------------------------


def _graph_module(model, num_inputs):
    """The model, called with `num_inputs` positional tensors, as an FX graph with batch norms
    folded into the convolutions before them. transformers models use their own FX tracer."""
    model = getattr(model, "_jitfuse_source", model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"jitfuse.quantization: expected an nn.Module, got {type(model).__name__}")
    model.eval()
    if type(model).__module__.startswith("transformers."):
        import inspect
        from transformers.utils.fx import symbolic_trace as hf_symbolic_trace
        names = list(inspect.signature(model.forward).parameters)[:num_inputs]
        return _fold_batch_norms(hf_symbolic_trace(model, input_names=names), no_trace=True)
    return _fold_batch_norms(model)


class _Op:
    def __init__(self, name, kind, node, inputs, operand_from_conv=False, reads_layer_norm=False):
        self.name, self.kind, self.node, self.inputs = name, kind, node, inputs
        self.operand_from_conv = operand_from_conv  # an add whose operand a conv made
        self.reads_layer_norm = reads_layer_norm    # a linear reading a LayerNorm's output


def _module_kind(gm, node):
    m = gm.get_submodule(node.target)
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return "conv2d"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.MaxPool2d) and not m.return_indices:
        return "max_pool2d"
    return None


_FUNCTION_KINDS = {torch.bmm: "bmm", torch.matmul: "matmul", operator.add: "add", operator.iadd: "add",
                   torch.add: "add", F.max_pool2d: "max_pool2d", torch.max_pool2d: "max_pool2d"}


def _is_layer_norm(gm, node):
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.LayerNorm)
    return node.op == "call_function" and node.target in (F.layer_norm, torch.layer_norm)


def _quantizable_ops(gm):
    """The ops the recipe can quantize, in graph order, with the input nodes that get quantized."""
    ops, counts = [], {}
    produced_by = {}  # node -> "conv2d" / "linear" for weighted module calls
    for node in gm.graph.nodes:
        kind, path = None, ""
        if node.op == "call_module":
            kind, path = _module_kind(gm, node), node.target
            if kind in ("conv2d", "linear"):
                produced_by[node] = kind
        elif node.op == "call_function" and node.target in _FUNCTION_KINDS:
            kind = _FUNCTION_KINDS[node.target]
            stack = node.meta.get("nn_module_stack") or {}
            path = next(reversed(stack.values()))[0] if stack else ""
        if kind is None:
            continue
        if kind == "add":
            a = node.args
            if len(a) != 2 or node.kwargs or not all(isinstance(x, torch.fx.Node) for x in a):
                continue
            if a[0] in produced_by:
                inputs = [a[1]]
            elif a[1] in produced_by:
                inputs = [a[0]]
            else:
                continue  # not the sum after a conv / linear
        elif kind in ("bmm", "matmul"):
            if len(node.args) != 2 or not all(isinstance(x, torch.fx.Node) for x in node.args):
                continue
            inputs = list(node.args)
        else:
            if not node.args or not isinstance(node.args[0], torch.fx.Node):
                continue
            inputs = [node.args[0]]
        counts[(path, kind)] = counts.get((path, kind), 0) + 1  # a module called twice: .2
        n = counts[(path, kind)]
        name = f"{path}:{kind}" + (f".{n}" if n > 1 else "")
        ops.append(_Op(name, kind, node, inputs,
                       operand_from_conv=kind == "add" and produced_by.get(inputs[0]) == "conv2d",
                       reads_layer_norm=kind == "linear" and _is_layer_norm(gm, inputs[0])))
    return ops


def _default_entries(ops):
    """The flow's choices: int8 for every conv, linear and pool; a product in fp32 (jitfuse's
    int8 product computes in float32 anyway: it would only add rounding); an add when its operand
    is quantized for another op anyway (the sum then costs no extra rounding) or made by a conv
    (a ResNet downsample, which then writes int8 and is added inside the int8 kernel, as stock
    PyTorch's int8 add does). Linears quantize each row at run time, smoothed when they read a
    LayerNorm."""
    quantized = set()
    for op in ops:
        if op.kind in ("conv2d", "max_pool2d"):
            quantized.update(op.inputs)
    entries = {}
    for op in ops:
        if op.kind == "add":
            int8 = op.inputs[0] in quantized or op.operand_from_conv
        else:
            int8 = op.kind not in ("bmm", "matmul")
        entry = {"kind": op.kind, "recipe": "int8" if int8 else "fp32",
                 "activation": "dynamic" if op.kind == "linear" else "static"}
        if op.reads_layer_norm:
            entry["smooth"] = {"alpha": DEFAULT_ALPHA}
        entries[op.name] = entry
    return entries


# ---- prepare / calibrate ------------------------------------------------------------------


class _Observe(nn.Module):
    """Passes a tensor through; under quantization.calibrate(conf) its observer records it (and,
    for a smoothed linear, its channels' absolute maxima)."""

    def __init__(self, conf, key, channels=False):
        super().__init__()
        self.conf, self.key, self.channels = conf, key, channels

    def forward(self, x):
        if self.conf._calibrating:
            x32 = x.detach().float()
            self.conf._observers[self.key](x32)
            if self.channels:
                m = x32.abs().reshape(-1, x32.shape[-1]).amax(0)
                prev = self.conf._channel_max.get(self.key[0])
                self.conf._channel_max[self.key[0]] = m if prev is None else torch.maximum(prev, m)
        return x


def _new_observer(conf):
    return OBSERVERS[conf.observer](dtype=torch.quint8, qscheme=torch.per_tensor_affine)


class _Prepared(nn.Module):
    """What prepare returns: `model` with observers, traced at its first call (when the number of
    inputs is known)."""

    def __init__(self, model, conf):
        super().__init__()
        self._jitfuse_source, self.conf, self.observed = model, conf, None

    def forward(self, *inputs):
        if self.observed is None:
            self.observed = _observed(self._jitfuse_source, self.conf, len(inputs))
        return self.observed(*inputs)


def prepare(model, conf):
    """`model` with observers on the inputs of its quantizable ops; they record what runs under
    calibrate(conf). Returns (prepared model, conf)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"jitfuse.quantization.prepare: expected an nn.Module, got {type(model).__name__}")
    conf.ops, conf._observers, conf._channel_max = {}, {}, {}
    return _Prepared(getattr(model, "_jitfuse_source", model), conf), conf


def _observed(model, conf, num_inputs):
    gm = _graph_module(model, num_inputs)
    ops = _quantizable_ops(gm)
    defaults = _default_entries(ops)
    conf._observers, conf._channel_max, conf.ops = {}, {}, {}
    for op in ops:
        conf.ops[op.name] = dict(defaults[op.name], inputs=[], num_inputs=len(op.inputs))
        for i, x in enumerate(op.inputs):
            key = (op.name, i)
            conf._observers[key] = _new_observer(conf)
            attr = f"_jitfuse_observe_{len(conf._observers)}"
            gm.add_module(attr, _Observe(conf, key, channels="smooth" in defaults[op.name]))
            with gm.graph.inserting_before(op.node):
                observed = gm.graph.call_module(attr, (x,))
            op.node.replace_input_with(x, observed)
    gm.recompile()
    return gm


@contextlib.contextmanager
def calibrate(conf):
    """Within this block, calls of a prepared model record statistics into `conf`."""
    conf._calibrating = True
    try:
        yield conf
    finally:
        conf._calibrating = False
        conf._collect()


# ---- convert -------------------------------------------------------------------------------


def _check_against_model(conf, ops):
    where = f"QuantConf {conf.path}" if conf.path else "QuantConf"
    if not conf.ops:
        raise QuantConfError(f"{where}: field 'ops': empty: calibrate the prepared model first "
                             "(quantization.calibrate) or load a saved recipe")
    by_name = {op.name: op for op in ops}
    for name, entry in conf.ops.items():
        if name not in by_name:
            raise QuantConfError(f"{where}: field 'ops.{name}': no such op in the model "
                                 f"(ops it has: {', '.join(list(by_name)[:8])}{', ...' if len(by_name) > 8 else ''})")
        op = by_name[name]
        if entry["kind"] != op.kind:
            raise QuantConfError(f"{where}: field 'ops.{name}.kind': the model's op is a "
                                 f"{op.kind}, the file says {entry['kind']}")
        if entry["recipe"] == "int8" and len(entry["inputs"]) != len(op.inputs):
            raise QuantConfError(f"{where}: field 'ops.{name}.inputs': not observed (calibrate first)")


def _quantize_weight(w, bits):
    """Symmetric int8 per output channel: (int8 values, float32 scales)."""
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().float()
    scales = (w.abs().reshape(w.shape[0], -1).amax(1) / qmax).clamp_min(1e-12)
    values = torch.round(w / scales.view([-1] + [1] * (w.dim() - 1))).clamp(-qmax, qmax).to(torch.int8)
    return values, scales.contiguous()


def _smoothing(ops, conf, gm):
    """The SmoothQuant factors of each smoothed int8 linear: one set per input node, over the
    weights of every smoothed linear that reads it (so Q, K and V share theirs and merge)."""
    groups = {}
    for op in ops:
        entry = conf.ops.get(op.name)
        if (op.kind == "linear" and entry and entry["recipe"] == "int8" and entry["activation"] == "dynamic"
                and "channel_max" in entry.get("smooth", {})):
            groups.setdefault(op.inputs[0], []).append(op)
    factors = {}
    for members in groups.values():
        weight_max = torch.stack([gm.get_submodule(op.node.target).weight.detach().float().abs().amax(0)
                                  for op in members]).amax(0)
        for op in members:
            smooth = conf.ops[op.name]["smooth"]
            act = torch.tensor(smooth["channel_max"], dtype=torch.float32)
            if act.numel() != weight_max.numel():
                where = f"QuantConf {conf.path}" if conf.path else "QuantConf"
                raise QuantConfError(f"{where}: field 'ops.{op.name}.smooth.channel_max': {act.numel()} values "
                                     f"for a linear of {weight_max.numel()} input features")
            a = smooth["alpha"]
            s = act.clamp_min(1e-5) ** a / weight_max.clamp_min(1e-5) ** (1 - a)
            factors[op.name] = s.clamp(1e-5, 1e5)
        # one set for the group: the first member's alpha wins where they differ
        first = factors[members[0].name]
        for op in members:
            factors[op.name] = first
    return factors


def convert(model, conf, sample_input):
    """A frozen int8 TorchScript module: the reference int8 graph of `model` under `conf`'s
    recipe. Ops absent from the recipe, or marked "fp32", stay float."""
    sample = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    gm = _graph_module(model, len(sample))
    ops = _quantizable_ops(gm)
    _check_against_model(conf, ops)
    graph = gm.graph
    factors = _smoothing(ops, conf, gm)
    dequantized = {}  # (node, scale, zero point) -> its dequantize(quantize(...)) node
    pool_outputs = {}  # an int8 pool's output node -> its dequantize: already int8

    def quantized(x, q):
        if x in pool_outputs:
            return pool_outputs[x]
        key = (x, q["scale"], q["zero_point"])
        if key not in dequantized:
            dequantized[key] = _quantize_dequantize(graph, x, q)
        return dequantized[key]

    replaced = {}  # a module call -> the call that replaced it
    for i, op in enumerate(ops):
        entry = conf.ops.get(op.name)
        if entry is None or entry["recipe"] != "int8":
            continue
        if op.kind == "linear" and entry["activation"] == "dynamic":
            old = op.node
            _dynamic_linear(gm, op, i, conf.weight_bits, factors.get(op.name))
            replaced[old] = op.node
            continue
        for x, q in zip(op.inputs, entry["inputs"]):
            x = replaced.get(x, x)
            op.node.replace_input_with(x, quantized(x, q))
        if op.kind in ("conv2d", "linear"):
            old = op.node
            _static_module_call(gm, op, i, conf.weight_bits)
            replaced[old] = op.node
        elif op.kind == "max_pool2d":  # the output keeps the input's parameters: max is exact in int8
            dqy = _quantize_dequantize(graph, op.node, entry["inputs"][0])
            qy = dqy.args[0]
            op.node.replace_all_uses_with(dqy, delete_user_cb=lambda user: user is not qy)
            pool_outputs[op.node] = dqy
    graph.lint()
    gm.recompile()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(gm, sample, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _quantize_dequantize(graph, x, q):
    """Inserts jitfuse's quantize_per_tensor(x) (uint8, `q`'s parameters) and its dequantize
    right after `x`; returns the dequantize node (its first argument is the quantize node)."""
    with graph.inserting_after(x):
        qx = graph.call_function(torch.ops.jitfuse.quantize_per_tensor, (x, q["scale"], q["zero_point"], torch.uint8))
    with graph.inserting_after(qx):
        return graph.call_function(torch.ops.jitfuse.dequantize_per_tensor, (qx, q["scale"], q["zero_point"]))


def _register(gm, name, tensor):
    gm.register_buffer(name, tensor)
    return gm.graph.get_attr(name)


def _static_module_call(gm, op, index, bits):
    """conv / linear module call -> F.conv2d / F.linear on the dequantized int8 weight."""
    m = gm.get_submodule(op.node.target)
    values, scales = _quantize_weight(m.weight, bits)
    graph = gm.graph
    with graph.inserting_before(op.node):
        # aten::dequantize of the int8 values (their float value: it is on constant propagation's
        # skip list, so freezing keeps the weight int8 for the int8 passes), times the scales
        wf = graph.call_function(torch.dequantize, (_register(gm, f"_jitfuse_qweight_{index}", values),))
        shape = [-1] + [1] * (values.dim() - 1)
        w = graph.call_function(torch.mul, (wf, _register(gm, f"_jitfuse_wscales_{index}", scales.view(shape))))
        bias = None
        if m.bias is not None:
            bias = _register(gm, f"_jitfuse_bias_{index}", m.bias.detach().float().clone())
        x = op.node.args[0]
        if op.kind == "conv2d":
            call = graph.call_function(F.conv2d, (x, w, bias, m.stride, m.padding, m.dilation, m.groups))
        else:
            call = graph.call_function(F.linear, (x, w, bias))
    op.node.replace_all_uses_with(call)
    graph.erase_node(op.node)
    op.node = call


def _dynamic_linear(gm, op, index, bits, smooth):
    """linear module call -> jitfuse::qlinear_dynamic: rows quantized at run time, the weight
    (multiplied by the smoothing factors, when any) int8 per output channel."""
    m = gm.get_submodule(op.node.target)
    weight = m.weight.detach().float()
    if smooth is not None:
        weight = weight * smooth
    values, scales = _quantize_weight(weight, bits)
    graph = gm.graph
    with graph.inserting_before(op.node):
        s = _register(gm, f"_jitfuse_smooth_{index}", smooth.clone()) if smooth is not None else None
        bias = _register(gm, f"_jitfuse_bias_{index}", m.bias.detach().float().clone()) if m.bias is not None else None
        call = graph.call_function(torch.ops.jitfuse.qlinear_dynamic,
                                   (op.node.args[0], s, _register(gm, f"_jitfuse_qweight_{index}", values),
                                    _register(gm, f"_jitfuse_wscales_{index}", scales), bias))
    op.node.replace_all_uses_with(call)
    gm.graph.erase_node(op.node)
    op.node = call


# ---- autotune ------------------------------------------------------------------------------


def autotune(model, conf, calib_inputs, evaluate, tolerance, sample_input=None):
    """Keep the fewest, most sensitive ops in fp32 until `evaluate` holds.

    `evaluate(module) -> float` scores a module (higher is better: accuracy, cosine to a
    reference, ...); the int8 module must score at least evaluate(fp32 model) - `tolerance`.
    `conf` holds a recipe (calibrated, or loaded); `calib_inputs` is a list of input tuples (or
    tensors) that calibrate it when it has none yet. Each int8 op is scored alone in fp32, then
    the most sensitive ones are put back in float, one at a time, until the score holds. The
    choice is written into `conf` ("recipe": "fp32" with a "fallback" reason). Returns
    (int8 module, conf); raises ValueError if even every op in fp32 misses.
    """
    inputs = [x if isinstance(x, tuple) else (x,) for x in calib_inputs]
    if not inputs:
        raise ValueError("autotune: calib_inputs is empty")
    sample = sample_input if sample_input is not None else inputs[0]
    sample = sample if isinstance(sample, tuple) else (sample,)
    if not conf.ops or any(not e["inputs"] for e in conf.ops.values()):
        prepared, conf = prepare(model, conf)
        with torch.no_grad():
            for x in inputs:
                with calibrate(conf):
                    prepared(*x)
    with torch.no_grad():
        target = float(evaluate(model)) - tolerance
        qmodel = convert(model, conf, sample)
        score = float(evaluate(qmodel))
    if score >= target:
        return qmodel, conf
    candidates = [name for name, e in conf.ops.items() if e["recipe"] == "int8"]
    gains = {}
    for name in candidates:
        trial = copy.deepcopy(conf)
        trial.ops[name]["recipe"] = "fp32"
        with torch.no_grad():
            gains[name] = float(evaluate(convert(model, trial, sample)))
    for name in sorted(candidates, key=lambda n: -gains[n]):
        conf.ops[name]["recipe"] = "fp32"
        conf.ops[name]["fallback"] = (f"autotune: int8 score {score:.6g} < target {target:.6g}; "
                                      f"this op alone in fp32 scores {gains[name]:.6g}")
        with torch.no_grad():
            qmodel = convert(model, conf, sample)
            score = float(evaluate(qmodel))
        if score >= target:
            return qmodel, conf
    raise ValueError(f"autotune: score {score:.6g} misses the target {target:.6g} even with every op in fp32")

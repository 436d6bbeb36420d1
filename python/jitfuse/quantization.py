"""INT8 calibration flow: QuantConf (a JSON recipe), prepare, calibrate, convert.

The Python side only observes and writes the recipe; convert builds a reference quantized
TorchScript module (quantize_per_tensor / dequantize around the ops of the recipe, weights
quantized per output channel) that stock PyTorch runs as it is. jitfuse's C++ passes then rewrite
its dequantize -> op -> quantize chains into int8 kernels.

Recipe file (version 1), one entry per quantizable op, keyed by a stable name
"<module path>:<op kind>[.<n>]" (the n-th op of that kind in that module, from 1):

    {"version": 1, "dtype": "int8", "observer": "minmax",
     "activation": {"dtype": "uint8", "qscheme": "per_tensor_affine"},
     "weight": {"dtype": "int8", "qscheme": "per_channel_symmetric", "quant_min": -64, "quant_max": 63},
     "ops": {"layer1.0.conv1:conv2d": {"kind": "conv2d", "recipe": "int8",
                                        "inputs": [{"scale": 0.02, "zero_point": 0,
                                                    "min": 0.0, "max": 5.1}]}, ...}}

"recipe" is "int8" or "fp32" (set it by hand to keep an op in float). Activations are uint8,
asymmetric, per tensor; weights int8 in [-63, 63], symmetric, per output channel.
"""
import contextlib
import json
import math
import operator
import os
import warnings

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
from torch.fx.experimental.optimization import fuse as _fold_batch_norms

FORMAT_VERSION = 1
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
KINDS = ("conv2d", "linear", "bmm", "matmul", "add", "max_pool2d")
_ACTIVATION = {"dtype": "uint8", "qscheme": "per_tensor_affine"}
# Weights use 7 of their 8 bits: CPUs without VNNI multiply u8 x s8 pairs into saturating int16,
# exact only for weights in [-64, 64].
_WEIGHT = {"dtype": "int8", "qscheme": "per_channel_symmetric", "quant_min": -63, "quant_max": 63}


class QuantConfError(ValueError):
    """A recipe that cannot be used: names the file and the field."""


# ---- the recipe file ----------------------------------------------------------------------


class QuantConf:
    """Quantization settings and observed statistics: QuantConf(dtype=torch.int8) for a first
    calibration, QuantConf("int8_conf.json") to re-use a saved recipe."""

    def __init__(self, path=None, dtype=torch.int8, observer="minmax"):
        if dtype != torch.int8:
            raise ValueError(f"QuantConf: only dtype=torch.int8 is supported, got {dtype}")
        if not isinstance(observer, str) or observer not in OBSERVERS:
            raise ValueError(f"QuantConf: observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
        self.path = None
        self.observer = observer
        self.ops = {}  # name -> {"kind", "recipe", "inputs": [{"scale", "zero_point", "min", "max"}]}
        self._observers = {}  # (name, input index) -> torch.ao observer, while calibrating
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
        ops = {name: dict(e, recipe=e["recipe"] if default_recipe else "int8") for name, e in self.ops.items()}
        doc = {"version": FORMAT_VERSION, "dtype": "int8", "observer": self.observer,
               "activation": _ACTIVATION, "weight": _WEIGHT, "ops": ops}
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
    if doc["version"] != FORMAT_VERSION or isinstance(doc["version"], bool):
        fail("version", f"unknown version {doc['version']!r} (this jitfuse reads version {FORMAT_VERSION})")
    if doc.get("dtype", "int8") != "int8":
        fail("dtype", f"expected \"int8\", got {doc['dtype']!r}")
    observer = doc.get("observer", "minmax")
    if not isinstance(observer, str) or observer not in OBSERVERS:
        fail("observer", f"expected one of {sorted(OBSERVERS)}, got {observer!r}")
    for key, expected in (("activation", _ACTIVATION), ("weight", _WEIGHT)):
        if key in doc and doc[key] != expected:
            fail(key, f"expected {json.dumps(expected)}, got {json.dumps(doc[key])}")
    ops = doc.get("ops")
    if not isinstance(ops, dict):
        fail("ops", "missing or not an object")
    conf.observer = observer
    for op_name, entry in ops.items():
        where = f"ops.{op_name}"
        if not isinstance(entry, dict):
            fail(where, "expected an object")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            fail(f"{where}.kind", f"expected one of {list(KINDS)}, got {kind!r}")
        if not isinstance(entry.get("recipe"), str) or entry["recipe"] not in ("int8", "fp32"):
            fail(f"{where}.recipe", f"expected \"int8\" or \"fp32\", got {entry.get('recipe')!r}")
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
        conf.ops[op_name] = {"kind": kind, "recipe": entry["recipe"],
                             "inputs": [{"scale": float(q["scale"]), "zero_point": q["zero_point"],
                                         **{k: float(q[k]) for k in ("min", "max") if k in q}}
                                        for q in inputs]}


SCALE_RANGE = (1e-12, 1e12)  # what an observer gives for float32 activations; outside: a broken file


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
    def __init__(self, name, kind, node, inputs, operand_from_weighted=False):
        self.name, self.kind, self.node, self.inputs = name, kind, node, inputs
        self.operand_from_weighted = operand_from_weighted  # an add whose operand a conv/linear made


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


def _quantizable_ops(gm):
    """The ops the recipe can quantize, in graph order, with the input nodes that get quantized."""
    ops, counts = [], {}
    produced_by_weighted = set()
    for node in gm.graph.nodes:
        kind, path = None, ""
        if node.op == "call_module":
            kind, path = _module_kind(gm, node), node.target
            if kind in ("conv2d", "linear"):
                produced_by_weighted.add(node)
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
            if a[0] in produced_by_weighted:
                inputs = [a[1]]
            elif a[1] in produced_by_weighted:
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
        ops.append(_Op(name, kind, node, inputs, kind == "add" and inputs[0] in produced_by_weighted))
    return ops


def _default_recipe(ops):
    """int8 for every conv, linear, product and pool; an add when its operand is quantized for
    another op anyway (then the sum costs no extra rounding) or made by a conv / linear (a ResNet
    downsample: that op then writes int8 and the sum reads it inside the int8 kernel, as stock
    PyTorch's int8 add does)."""
    quantized = {}
    for op in ops:
        if op.kind != "add":
            for x in op.inputs:
                quantized[x] = True
    return {op.name: "int8" if op.kind != "add" or op.inputs[0] in quantized or op.operand_from_weighted
            else "fp32" for op in ops}


# ---- prepare / calibrate ------------------------------------------------------------------


class _Observe(nn.Module):
    """Passes a tensor through; under quantization.calibrate(conf) its observer records it."""

    def __init__(self, conf, key):
        super().__init__()
        self.conf, self.key = conf, key

    def forward(self, x):
        if self.conf._calibrating:
            self.conf._observers[self.key](x.detach().float())
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
    conf.ops, conf._observers = {}, {}
    return _Prepared(getattr(model, "_jitfuse_source", model), conf), conf


def _observed(model, conf, num_inputs):
    gm = _graph_module(model, num_inputs)
    ops = _quantizable_ops(gm)
    recipe = _default_recipe(ops)
    conf._observers = {}
    conf.ops = {}
    for op in ops:
        conf.ops[op.name] = {"kind": op.kind, "recipe": recipe[op.name], "inputs": [], "num_inputs": len(op.inputs)}
        for i, x in enumerate(op.inputs):
            key = (op.name, i)
            conf._observers[key] = _new_observer(conf)
            attr = f"_jitfuse_observe_{len(conf._observers)}"
            gm.add_module(attr, _Observe(conf, key))
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
        if entry["kind"] != by_name[name].kind:
            raise QuantConfError(f"{where}: field 'ops.{name}.kind': the model's op is a "
                                 f"{by_name[name].kind}, the file says {entry['kind']}")
        if entry["recipe"] == "int8" and len(entry["inputs"]) != len(by_name[name].inputs):
            raise QuantConfError(f"{where}: field 'ops.{name}.inputs': not observed (calibrate first)")


def _quantize_weight(w):
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=_WEIGHT["quant_min"], quant_max=_WEIGHT["quant_max"])
    obs(w)
    scales, zero_points = obs.calculate_qparams()
    return torch.quantize_per_channel(w.detach().float(), scales.double(), zero_points.long(), 0, torch.qint8)


def convert(model, conf, sample_input):
    """A frozen int8 TorchScript module: the reference quantized graph of `model` under `conf`'s
    recipe. Ops absent from the recipe, or marked "fp32", stay float."""
    sample = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    gm = _graph_module(model, len(sample))
    ops = _quantizable_ops(gm)
    _check_against_model(conf, ops)
    graph = gm.graph
    dequantized = {}  # (node, scale, zero point) -> its dequantize(quantize(...)) node
    pool_outputs = {}  # an int8 pool's output node -> its dequantize: already int8

    def quantized(x, q):
        if x in pool_outputs:
            return pool_outputs[x]
        key = (x, q["scale"], q["zero_point"])
        if key not in dequantized:
            dequantized[key] = _quantize_dequantize(graph, x, q)
        return dequantized[key]

    replaced = {}  # a module call -> the F.conv2d / F.linear call that replaced it
    for i, op in enumerate(ops):
        entry = conf.ops.get(op.name)
        if entry is None or entry["recipe"] != "int8":
            continue
        for x, q in zip(op.inputs, entry["inputs"]):
            x = replaced.get(x, x)
            op.node.replace_input_with(x, quantized(x, q))
        if op.kind in ("conv2d", "linear"):
            old = op.node
            _quantize_module_call(gm, op, i)
            replaced[old] = op.node
        elif op.kind == "max_pool2d":  # the output keeps the input's parameters: max is exact in int8
            dqy = _quantize_dequantize(graph, op.node, entry["inputs"][0])
            qy = dqy.args[0]
            op.node.replace_all_uses_with(dqy, delete_user_cb=lambda user: user is not qy)
            pool_outputs[op.node] = dqy
    graph.lint()
    gm.recompile()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(gm, sample, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _quantize_dequantize(graph, x, q):
    """Inserts quantize_per_tensor(x) (uint8, `q`'s parameters) and its dequantize right after
    `x`; returns the dequantize node (its argument is the quantize node)."""
    with graph.inserting_after(x):
        qx = graph.call_function(torch.quantize_per_tensor, (x, q["scale"], q["zero_point"], torch.quint8))
    with graph.inserting_after(qx):
        return graph.call_method("dequantize", (qx,))


def _quantize_module_call(gm, op, index):
    """conv / linear module call -> F.conv2d / F.linear on the dequantized per-channel weight."""
    m = gm.get_submodule(op.node.target)
    qweight = f"_jitfuse_qweight_{index}"
    gm.register_buffer(qweight, _quantize_weight(m.weight))
    bias = None
    graph = gm.graph
    with graph.inserting_before(op.node):
        w = graph.call_method("dequantize", (graph.get_attr(qweight),))
        if m.bias is not None:
            gm.register_buffer(f"_jitfuse_bias_{index}", m.bias.detach().float().clone())
            bias = graph.get_attr(f"_jitfuse_bias_{index}")
        x = op.node.args[0]
        if op.kind == "conv2d":
            call = graph.call_function(F.conv2d, (x, w, bias, m.stride, m.padding, m.dilation, m.groups))
        else:
            call = graph.call_function(F.linear, (x, w, bias))
    op.node.replace_all_uses_with(call)
    graph.erase_node(op.node)
    op.node = call

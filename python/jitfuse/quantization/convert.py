"""convert: the reference int8 TorchScript module of a model under a recipe, on plain int8/uint8
tensors with jitfuse's conversion ops, for the C++ passes to fuse; export: the same graph as a
torch.export program, fused."""
import warnings

import torch
import torch.nn.functional as F

from .graph import _graph_module, _quantizable_ops
from .recipe import QuantConfError


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
    sample = _as_tuple(sample_input)
    gm = _reference_graph(model, conf, sample)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(gm, sample, check_trace=False)
        return torch.jit.freeze(traced.eval())


def export(model, conf, sample_input):
    """The same reference int8 graph as convert's, as a torch.export program with jitfuse's int8
    ops fused in (jitfuse.export.fuse_program), for torch.compile, AOTInductor
    (jitfuse.export.package) and C++ without TorchScript."""
    from jitfuse.export import fuse_program

    sample = _as_tuple(sample_input)
    return fuse_program(_reference_graph(model, conf, sample), sample)


def _as_tuple(sample_input):
    return sample_input if isinstance(sample_input, tuple) else (sample_input,)


def _reference_graph(model, conf, sample):
    """The model's FX graph with the recipe's int8 ops in their reference spelling: jitfuse's
    quantize/dequantize around the float op, weights int8 with their scales beside them."""
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
    return gm


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

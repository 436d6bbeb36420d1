"""The model's quantizable ops, found on its FX graph (batch norms folded first), and the flow's
default recipe for each."""
import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse as _fold_batch_norms

from .recipe import DEFAULT_ALPHA


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

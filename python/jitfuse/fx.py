"""jitfuse's fusions on FX graphs (torch.export, torch.compile), without TorchScript modules.

The patterns are written once, as the pass tables in passes/ (pattern IR, replacement, filters with
their reasons). This front-end runs those very passes: it writes an ATen-level FX graph as
TorchScript IR text, with its weights as constants (as freezing leaves them), lets the C++ pass
list rewrite it (jitfuse::_optimize_ir), and reads the result back into FX. So a pattern fuses the
same way on both front-ends, and the fusion report's switches (JITFUSE_DISABLE,
set_pattern_enabled) mean the same.

fuse(gm) takes a GraphModule whose call_function nodes are ATen OpOverloads and whose weights are
attributes (what `torch.export.export(model, args).module()` gives) and returns a new one.
"""
import operator
import warnings

import torch
from torch._prims_common import suggest_memory_format

import jitfuse

_ops = torch.ops.jitfuse

_DTYPE_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.bfloat16: "BFloat16", torch.float16: "Half",
                torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char",
                torch.uint8: "Byte", torch.bool: "Bool"}


# The tables match graphs specialized to their shapes, as the TorchScript executor's are.
_SYMBOLIC = "symbolic shapes (torch.compile(..., dynamic=False) compiles each shape fused)"


def _tensor_type(t):
    """A tensor's IR type: dtype, sizes, strides (the post-pass graphs the tables match are specialized)."""
    if any(not isinstance(s, int) for s in (*t.shape, *t.stride())):
        raise _Unsupported(_SYMBOLIC)
    if t.dtype not in _DTYPE_NAMES:
        return "Tensor"
    sizes = ", ".join(str(s) for s in t.shape)
    strides = ", ".join(str(s) for s in t.stride())
    sep = ", " if sizes else ""
    return f"{_DTYPE_NAMES[t.dtype]}({sizes}{sep}strides=[{strides}], requires_grad=0, device={t.device.type})"


def _value_type(val):
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        raise _Unsupported(_SYMBOLIC)
    if isinstance(val, torch.Tensor):
        return _tensor_type(val)
    if isinstance(val, (list, tuple)) and val and all(isinstance(v, torch.Tensor) for v in val):
        return "Tensor[]"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(val), None)


class _IRWriter:
    """An FX graph as IR text: one line per value, constants spelled as prim::Constant nodes."""

    def __init__(self):
        self.lines, self.names, self.count = [], {}, 0
        self.unpacked = {}  # list-valued node -> the names of its elements
        self.constant_inputs = []  # (IR name, tensor): the graph's trailing inputs, as freezing's constants
        self.tensors = {}  # IR name -> the constant tensor it stands for

    def add_constant(self, name, tensor):
        self.constant_inputs.append((name, tensor))
        self.tensors[name] = tensor

    def constant_tensor(self, arg):
        """The tensor a node argument stands for when it is a constant (a weight), else None."""
        return self.tensors.get(self.names.get(arg)) if isinstance(arg, torch.fx.Node) else None

    def fresh(self):
        """A name for a constant or list; values of FX nodes keep their FX names (the report shows them)."""
        self.count += 1
        return f"%_{self.count}"

    def constant(self, value):
        name = self.fresh()
        if value is None:
            self.lines.append(f"{name} : NoneType = prim::Constant()")
        elif isinstance(value, bool):
            self.lines.append(f"{name} : bool = prim::Constant[value={int(value)}]()")
        elif isinstance(value, int):
            self.lines.append(f"{name} : int = prim::Constant[value={value}]()")
        elif isinstance(value, float):
            text = repr(value)
            if text in ("inf", "-inf", "nan"):
                raise _Unsupported(f"the constant {text}")
            self.lines.append(f"{name} : float = prim::Constant[value={text}]()")
        elif isinstance(value, str):
            if '"' in value or "\\" in value:
                raise _Unsupported(f"the string constant {value!r}")
            self.lines.append(f'{name} : str = prim::Constant[value="{value}"]()')
        elif isinstance(value, torch.dtype):
            if value not in _SCALAR_TYPES:
                raise _Unsupported(f"the dtype {value}")
            self.lines.append(f"{name} : int = prim::Constant[value={_SCALAR_TYPES[value]}]()")
        elif isinstance(value, torch.device):
            self.lines.append(f'{name} : Device = prim::Constant[value="{value}"]()')
        elif isinstance(value, torch.layout):
            self.lines.append(f"{name} : int = prim::Constant[value={_LAYOUTS.index(value)}]()")
        elif isinstance(value, torch.memory_format):
            self.lines.append(f"{name} : int = prim::Constant[value={_MEMORY_FORMATS.index(value)}]()")
        else:
            raise _Unsupported(f"a constant of type {type(value).__name__}")
        return name

    def argument(self, arg):
        if isinstance(arg, torch.fx.Node):
            if arg not in self.names:
                raise _Unsupported(f"the value {arg.name}")
            return self.names[arg]
        if isinstance(arg, (list, tuple)):
            if all(isinstance(a, torch.fx.Node) for a in arg) and arg:
                element = "Tensor"
            elif all(isinstance(a, bool) for a in arg) and arg:
                element = "bool"
            elif all(isinstance(a, int) and not isinstance(a, bool) for a in arg):
                element = "int"
            elif all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in arg):
                element = "float"
            else:
                raise _Unsupported(f"the list {arg}")
            items = [self.argument(float(a) if element == "float" else a) for a in arg]
            name = self.fresh()
            self.lines.append(f"{name} : {element}[] = prim::ListConstruct({', '.join(items)})")
            return name
        return self.constant(arg)


class _Unsupported(Exception):
    pass


# c10's numbering of layouts and memory formats, as TorchScript passes them (ints too)
_LAYOUTS = [torch.strided, torch.sparse_coo]
_MEMORY_FORMATS = [torch.contiguous_format, torch.preserve_format, torch.channels_last, torch.channels_last_3d]


# c10::ScalarType's numbering, as TorchScript passes a dtype (an int)
_SCALAR_TYPES = {torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4, torch.float16: 5,
                 torch.float32: 6, torch.float64: 7, torch.bool: 11, torch.bfloat16: 15}


def _full_arguments(node):
    """The node's arguments in schema order, defaults filled in (traced graphs spell them all)."""
    schema = node.target._schema
    out = []
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            out.append(node.args[i])
        elif arg.name in node.kwargs:
            out.append(node.kwargs[arg.name])
        elif arg.has_default_value():
            out.append(arg.default_value)
        else:
            raise _Unsupported(f"{node.target} without its argument {arg.name}")
    return out


# ---- PT2E's int8 spelling ---------------------------------------------------------------------
# A model quantized with PT2E (X86InductorQuantizer; torchao.quantization.pt2e) spells its int8
# chains with quantized_decomposed ops. The int8 table (passes/int8_fusion.cpp) matches the spelling
# jitfuse.quantization.convert writes. Where the two mean the same, these writers put PT2E's ops in
# that spelling, so one table fuses both; each returns False to have the node written as it is.

_FULL_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _dtype_of(arg):
    val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def _is_affine(scale, zero_point):
    return isinstance(scale, float) and scale > 0 and isinstance(zero_point, int) and not isinstance(zero_point, bool)


def _write_quantize_per_tensor(writer, node, args):
    x, scale, zero_point, quant_min, quant_max, dtype = args
    # jitfuse's quantize clamps to the dtype's whole range and reads float32 (PT2E converts to it first)
    if _FULL_RANGE.get(dtype) != (quant_min, quant_max) or not _is_affine(scale, zero_point) or \
            _dtype_of(x) != torch.float32:
        return False
    line = f"jitfuse::quantize_per_tensor({writer.argument(x)}, {writer.argument(scale)}, " \
           f"{writer.argument(zero_point)}, {writer.argument(dtype)})"
    writer.lines.append(f"%{node.name} : {_value_type(node.meta['val'])} = {line}")
    writer.names[node] = f"%{node.name}"
    return True


def _write_dequantize_per_tensor(writer, node, args):
    q, scale, zero_point, _quant_min, _quant_max, dtype, out_dtype = args  # no clamp: the range is unused
    if dtype not in _FULL_RANGE or _dtype_of(q) != dtype or out_dtype not in (None, torch.float32) or \
            not _is_affine(scale, zero_point):
        return False
    line = f"jitfuse::dequantize_per_tensor({writer.argument(q)}, {writer.argument(scale)}, {writer.argument(zero_point)})"
    writer.lines.append(f"%{node.name} : {_value_type(node.meta['val'])} = {line}")
    writer.names[node] = f"%{node.name}"
    return True


def _write_dequantize_per_channel(writer, node, args):
    """A constant int8 weight with symmetric scales along dim 0: aten::dequantize(weight) * scales,
    the scales shaped [N, 1, ...]."""
    weight, scales, zero_points, axis, _quant_min, _quant_max, dtype, out_dtype = args
    w, s = writer.constant_tensor(weight), writer.constant_tensor(scales)
    z = writer.constant_tensor(zero_points)
    if w is None or s is None or w.dtype != torch.int8 or dtype != torch.int8 or axis != 0 or w.dim() < 1 or \
            s.dtype != torch.float32 or s.dim() != 1 or s.numel() != w.size(0) or \
            out_dtype not in (None, torch.float32) or not (zero_points is None or (z is not None and not z.any())):
        return False
    name, result_type = f"%{node.name}", _value_type(node.meta["val"])
    shaped = f"{name}.scales"  # FX names have no dots: no clash
    writer.add_constant(shaped, s.reshape([-1] + [1] * (w.dim() - 1)).contiguous())
    writer.lines.append(f"{name}.values : {result_type} = aten::dequantize({writer.argument(weight)})")
    writer.lines.append(f"{name} : {result_type} = aten::mul({name}.values, {shaped})")
    writer.names[node] = name
    return True


def _pt2e_spellings():
    decomposed = getattr(torch.ops, "quantized_decomposed", None)
    if decomposed is None or not hasattr(decomposed, "quantize_per_tensor"):
        return {}  # nothing registered these ops: no graph can hold them
    return {decomposed.quantize_per_tensor.default: _write_quantize_per_tensor,
            decomposed.dequantize_per_tensor.default: _write_dequantize_per_tensor,
            decomposed.dequantize_per_channel.default: _write_dequantize_per_channel}


def to_ir(gm):
    """(IR text, the constant tensors its last inputs stand for) of an FX graph of ATen ops."""
    writer = _IRWriter()
    placeholders, outputs = [], []
    int8_spellings = _pt2e_spellings()
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        writes_a_value = node.op == "placeholder" or (
            node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and
            bool(node.target._schema.returns))
        if val is None and writes_a_value:
            raise _Unsupported(f"the node {node.name} has no shape metadata (meta['val']): pass what "
                               "torch.export.export(model, args).module() gives")
        if node.op == "placeholder":
            placeholders.append(node)
            writer.names[node] = f"%{node.name}"
        elif node.op == "get_attr":
            tensor = gm
            for part in node.target.split("."):
                tensor = getattr(tensor, part)
            if not isinstance(tensor, torch.Tensor):
                raise _Unsupported(f"the attribute {node.target}")
            writer.names[node] = f"%{node.name}"
            writer.add_constant(writer.names[node], tensor.detach())
        elif node.op == "call_module" and node.target == "_guards_fn":
            continue  # torch.export's input guards: the new module gets its own
        elif node.op == "call_function" and node.target is operator.getitem:
            source, index = node.args
            unpacked = writer.unpacked.get(source)
            if unpacked is None:
                raise _Unsupported("an index into a value that is not a list of tensors")
            writer.names[node] = unpacked[index]
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and \
                not node.target._schema.returns:
            continue  # export's checks of its example inputs' metadata: the re-export makes its own
        elif node.op == "call_function" and node.target in int8_spellings and \
                int8_spellings[node.target](writer, node, _full_arguments(node)):
            continue
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            args = [writer.argument(a) for a in _full_arguments(node)]
            qualified = node.target._schema.name
            if isinstance(val, (list, tuple)):  # a list of tensors, unpacked as traced graphs do
                whole = f"%{node.name}"
                writer.lines.append(f"{whole} : Tensor[] = {qualified}({', '.join(args)})")
                parts = [f"%{node.name}.{i}" for i in range(len(val))]  # FX names have no dots
                types = ", ".join(f"{p} : {_tensor_type(v)}" for p, v in zip(parts, val))
                writer.lines.append(f"{types} = prim::ListUnpack({whole})")
                writer.names[node] = whole
                writer.unpacked[node] = parts
            else:
                name = f"%{node.name}"
                out_type = _value_type(val) or "Tensor"
                writer.lines.append(f"{name} : {out_type} = {qualified}({', '.join(args)})")
                writer.names[node] = name
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
            if not all(isinstance(r, torch.fx.Node) for r in results):
                raise _Unsupported("an output that is not a flat list of tensors")
            outputs = [writer.names[r] for r in results]
        else:
            raise _Unsupported(f"the node {node.format_node()}")
    inputs = [f"{writer.names[p]} : {_value_type(p.meta.get('val')) or 'Tensor'}" for p in placeholders]
    inputs += [f"{name} : {_tensor_type(t)}" for name, t in writer.constant_inputs]
    text = "graph(" + ",\n      ".join(inputs) + "):\n  " + "\n  ".join(writer.lines)
    text += f"\n  return ({', '.join(outputs)})\n"
    return text, [t for _, t in writer.constant_inputs]


def _overload(node):
    """The OpOverload a TorchScript node calls (its schema says which overload)."""
    schema = node.schema()
    if schema == "(no schema)":
        raise _Unsupported(f"{node.kind()} with arguments no schema of it takes")
    parsed = torch._C.parse_schema(schema)
    namespace, name = parsed.name.split("::")
    packet = getattr(getattr(torch.ops, namespace), name)
    return getattr(packet, parsed.overload_name or "default")


def _writes_into_twins():
    """in-place op -> (its twin that returns nothing, the argument it writes) (ops/traits.h). The
    TorchScript executor runs the in-place sums the sum_in_place pass chose. Functionalization
    (export, compile) takes no custom op that returns its mutated input, but takes one that
    returns nothing: it becomes auto_functionalized, which inductor turns back into the in-place
    call where nothing reads the argument afterwards, saving the copy an out-of-place sum makes."""
    twins = {}
    for inplace, into in _ops._writes_into_twins():
        op = getattr(_ops, into.split("::")[1]).default
        twins[inplace] = (op, next(i for i, a in enumerate(op._schema.arguments) if a.alias_info and a.alias_info.is_write))
    return twins


def _ir_memory_format(value):
    """The memory format a value's IR type suggests (Tensor.suggest_memory_format's rule)."""
    t = value.type()
    sizes, strides = t.sizes(), t.strides()
    if sizes is None or strides is None or len(sizes) not in (4, 5):
        return torch.contiguous_format
    return suggest_memory_format(torch.empty_strided(sizes, strides, device="meta"))


def _to_channels_last(fx, node, ins):
    rank = node.inputsAt(0).type().dim()
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(rank)
    return ins[0] if fmt is None else fx.call_function(torch.ops.aten.contiguous.default, (ins[0],),
                                                       {"memory_format": fmt})


def _like_memory_format(fx, node, ins):
    if node.inputsAt(0).type().dim() != node.inputsAt(1).type().dim():
        return ins[0]
    return fx.call_function(torch.ops.aten.contiguous.default, (ins[0],),
                            {"memory_format": _ir_memory_format(node.inputsAt(1))})


def _dtype_constant(fx, node, ins):
    dtype = node.inputsAt(0).type().dtype()
    if dtype is None:
        raise _Unsupported("prim::dtype of a tensor whose dtype the graph does not say")
    return dtype


# The layout ops return their input where it is already in the format (Tensor(a) -> Tensor(a)),
# which functionalization does not take from a custom op: in FX they are ATen's contiguous, which
# inductor turns into its own copy (or nothing). prim::dtype (which a replacement may read) is a
# constant of the specialized graph.
_FUNCTIONAL_SPELLINGS = {
    "jitfuse::to_channels_last": _to_channels_last,
    "jitfuse::like_memory_format": _like_memory_format,
    "prim::dtype": _dtype_constant,
}


def from_ir(text, constants, original, owner):
    """The IR the passes returned as a new FX graph that takes and returns what `original` does
    (same placeholders, same output structure); `owner` holds its constants."""
    graph = torch._C.parse_ir(text)
    placeholders = [n for n in original.nodes if n.op == "placeholder"]
    fx = torch.fx.Graph()
    fx.set_codegen(original._codegen)  # torch.export's pytree in/out specs
    values = {}
    inputs = list(graph.inputs())
    for value, placeholder in zip(inputs, placeholders):
        values[value.debugName()] = fx.placeholder(placeholder.name)
    for i, (value, tensor) in enumerate(zip(inputs[len(placeholders):], constants)):
        attr = f"_jitfuse_constant_{i}"
        owner.register_buffer(attr, tensor)
        values[value.debugName()] = fx.get_attr(attr)
    twins = _writes_into_twins()
    for node in graph.nodes():
        kind = node.kind()
        outs = list(node.outputs())
        ins = [values[v.debugName()] for v in node.inputs()]
        if kind == "prim::Constant":
            values[outs[0].debugName()] = outs[0].toIValue()
        elif kind == "prim::ListConstruct":
            values[outs[0].debugName()] = list(ins)
        elif kind == "prim::ListUnpack":
            for i, out in enumerate(outs):
                values[out.debugName()] = fx.call_function(operator.getitem, (ins[0], i))
        elif kind in _FUNCTIONAL_SPELLINGS:
            values[outs[0].debugName()] = _FUNCTIONAL_SPELLINGS[kind](fx, node, ins)
        elif kind.startswith(("aten::", "jitfuse::", "quantized_decomposed::")):
            op, written = twins.get(kind, (_overload(node), None))  # same arguments
            args, kwargs = [], {}
            for arg, value in zip(op._schema.arguments, ins):
                if arg.kwarg_only:
                    kwargs[arg.name] = value
                else:
                    args.append(value)
            call = fx.call_function(op, tuple(args), kwargs)
            if written is not None:  # the result is the argument it wrote
                values[outs[0].debugName()] = ins[written]
            elif len(outs) == 1:
                values[outs[0].debugName()] = call
            else:
                for i, out in enumerate(outs):
                    values[out.debugName()] = fx.call_function(operator.getitem, (call, i))
        else:
            raise _Unsupported(f"{kind} in the fused graph")
    results = [values[v.debugName()] for v in graph.outputs()]
    original_output = next(n for n in original.nodes if n.op == "output").args[0]
    fx.output(results[0] if isinstance(original_output, torch.fx.Node) else type(original_output)(results))
    return fx


def graph_module_of(model, example_inputs):
    """The ATen FX graph this front-end reads, for an exported program, a torch.compile'd module
    (its original module, exported: the ATen ops the backend sees) or a plain module."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    with torch.no_grad():
        return torch.export.export(model, tuple(example_inputs), strict=False).module()


def report(model, example_inputs):
    """(table, entries) of the fusion report for `model` through this front-end."""
    text, constants = to_ir(graph_module_of(model, example_inputs))
    return _ops._report_ir(text, constants)


def fuse(gm):
    """A copy of `gm` (ATen ops, weights as attributes) with jitfuse's fusions applied, or `gm`
    itself when jitfuse is disabled or the graph holds something this front-end cannot write (it
    warns, naming what)."""
    if not jitfuse.is_enabled():
        return gm
    try:
        text, constants = to_ir(gm)
        fused_text, fused_constants = _ops._optimize_ir(text, constants)
        owner = torch.nn.Module()
        out = torch.fx.GraphModule(owner, from_ir(fused_text, fused_constants, gm.graph, owner))
    except (_Unsupported, RuntimeError) as e:
        warnings.warn(f"jitfuse.fx: the graph is left unfused: {e}", stacklevel=2)
        return gm
    out.graph.lint()
    return out

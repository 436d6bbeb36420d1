"""How close one jitfuse call runs to its own kernels' peak on the same shapes.

Every compute op of the optimized plan (convolutions, linears, matmuls, attention) is called again on
its own, on the very arguments it got inside the model (captured by making the plan return them),
many times over with its weights hot in cache: the median of those calls is that kernel's peak on
that shape. Summed over the plan, it is the fastest the call could be with these kernels and no time
between them; beside the call's own median and the plan's FLOPs it says whether a cell is short
because of jitfuse's plumbing (call >> sum of peaks) or because of the kernels themselves (call ~ sum).
"""
import statistics
import time

import torch

import jitfuse

# Ops whose arithmetic is counted; the rest (norms, pools, layout) are memory-bound and left out of
# both the FLOPs and the peaks, so the ratio below compares like with like.
CONV_PREFIXES = ("jitfuse::conv", "jitfuse::qconv")
MATMUL_PREFIXES = ("jitfuse::linear", "jitfuse::qlinear", "jitfuse::matmul", "jitfuse::qbmm")
ATTENTION = "jitfuse::attention"


def is_compute(kind):
    return kind.startswith(CONV_PREFIXES + MATMUL_PREFIXES) or kind == ATTENTION


def flops(kind, args, schema_names, out):
    """Multiply-adds x 2 of one call, from its arguments and output."""
    named = dict(zip(schema_names, args))
    if kind == ATTENTION:
        q, k = named["q"], named["k"]
        return 4 * q.numel() * k.shape[-2]  # q.kT and p.v
    if kind.startswith(CONV_PREFIXES):
        weight = named.get("weight", named.get("qweight"))
        return 2 * out.numel() * weight.numel() // out.shape[1]
    weight = named.get("weight", named.get("qweight"))
    if weight is not None:  # a linear: out [..., n], weight n x k (any packing)
        return 2 * out.numel() * weight.numel() // out.shape[-1]
    return 2 * out.numel() * args[0].shape[-1]  # a matmul: out [..., m, n], a [..., m, k]


def _captured_calls(module, inputs):
    """(kind, argument values, output) of every compute op in the plan that
    `module(*inputs)` last ran."""
    with torch.no_grad():
        for _ in range(2):
            module(*inputs)
    plan = torch.jit.last_executed_optimized_graph()
    graph = plan.copy()
    nodes = [n for n in graph.nodes() if is_compute(n.kind())]  # top-level: the plan has no guards here
    slots = []  # per node: list of ("const", value) or ("out", index), then the output's index
    for node in nodes:
        spec = []
        for value in node.inputs():
            if value.node().kind() == "prim::Constant":
                spec.append(("const", value.toIValue()))
            else:
                spec.append(("out", graph.registerOutput(value)))
        # the first output: the product (a _rows op's quantized rows have its shape)
        slots.append((spec, graph.registerOutput(next(node.outputs()))))
    # The graph returned one value; it now returns that and everything captured, as a tuple.
    graph.makeMultiOutputIntoTuple()
    fn = torch._C._create_function_from_graph("jitfuse_peak_capture", graph)
    was = jitfuse.is_enabled()
    jitfuse.set_enabled(False)  # the plan is already fused; run it as it is
    try:
        with torch.no_grad():
            values = fn(module._c, *inputs)
    finally:
        jitfuse.set_enabled(was)
    return [(node.kind(), [v if how == "const" else values[v] for how, v in spec], values[out_index])
            for node, (spec, out_index) in zip(nodes, slots)]


def _op(kind):
    ns, name = kind.split("::")
    return getattr(getattr(torch.ops, ns), name)


def _schema_names(kind):
    return [a.name for a in _op(kind).default._schema.arguments]


def _median_call(op, args, min_calls=20, min_seconds=0.05):
    for _ in range(3):
        op(*args)
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        op(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kernel_peaks(module, inputs):
    """Per op kind: (calls, GFLOP, seconds at peak) for one call of `module`."""
    in_place = {twin for _, twin in torch.ops.jitfuse._in_place_twins()}
    by_kind = {}
    with torch.no_grad():
        for kind, args, out in _captured_calls(module, inputs):
            names = _schema_names(kind)
            if kind in in_place:  # writes into `other`: re-run it on a copy, not the model's tensor
                args = [a.clone() if isinstance(a, torch.Tensor) and n == "other" else a
                        for n, a in zip(names, args)]
            seconds = _median_call(_op(kind), args)
            calls, gflop, total = by_kind.get(kind, (0, 0.0, 0.0))
            by_kind[kind] = (calls + 1, gflop + flops(kind, args, names, out) / 1e9, total + seconds)
    return by_kind


def print_peaks(title, by_kind, call_seconds):
    gflop = sum(g for _, g, _ in by_kind.values())
    peak = sum(s for _, _, s in by_kind.values())
    print(f"\nkernel peak: {title}: {gflop:.1f} GFLOP per call; the call {call_seconds * 1e3:.2f} ms "
          f"({gflop / call_seconds / 1e3:.2f} TFLOP/s); its compute ops alone, each at its peak on "
          f"the same shapes: {peak * 1e3:.2f} ms ({gflop / peak / 1e3:.2f} TFLOP/s) = "
          f"{100 * peak / call_seconds:.0f}% of the call")
    for kind, (calls, g, s) in sorted(by_kind.items(), key=lambda kv: -kv[1][2]):
        print(f"  {kind:32s} {calls:3d} calls {g:8.2f} GFLOP {s * 1e3:8.3f} ms at peak "
              f"({g / s / 1e3:.2f} TFLOP/s)")

"""One harness for every fusion test: freeze a model, let the executor optimize it, compare."""
import torch

import jitfuse

# fp32 fused ops match the unfused graph to ~1e-5 relative (of the output's largest magnitude);
# bf16 ones round once where stock rounds after every op: up to a couple of bf16 ulps.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float64: 1e-12}


def cpu_flags():
    """The CPU's feature flags, as /proc/cpuinfo names them (avx512_bf16, amx_bf16, ...)."""
    with open("/proc/cpuinfo") as f:
        return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())


def node_kinds(graph):
    kinds = {}

    def walk(block):
        for n in block.nodes():
            kinds[n.kind()] = kinds.get(n.kind(), 0) + 1
            for b in n.blocks():
                walk(b)

    walk(graph)
    return kinds


# The FX front-end's spellings of TorchScript's jitfuse ops: an in-place sum as its twin returning
# nothing (functionalization takes no op returning its mutated input); the layout ops not at all
# (aten.contiguous, as they may return their input).
FX_SPELLING = {inplace.split("::")[1]: into.split("::")[1] for inplace, into in torch.ops.jitfuse._writes_into_twins()}
LAYOUT_OPS = {"to_channels_last", "like_memory_format"}


def fx_spelled_jitfuse_ops(kinds):
    """Counts of a TorchScript graph's jitfuse ops (node_kinds) as the FX front-end spells them."""
    ops = {}
    for kind, count in kinds.items():
        name = kind.split("::")[1]
        if kind.startswith("jitfuse::") and name not in LAYOUT_OPS:
            name = FX_SPELLING.get(name, name)
            ops[name] = ops.get(name, 0) + count
    return ops


def optimized(model, inputs, script=False, runs=3):
    """trace (or script) + freeze, run `runs` times; returns (module, optimized graph kinds)."""
    with torch.no_grad():
        m = torch.jit.script(model) if script else torch.jit.trace(model, inputs, check_trace=False)
        m = torch.jit.freeze(m.eval())
        for _ in range(runs):
            m(*inputs)
        return m, node_kinds(m.graph_for(*inputs))


def max_rel_err(got, ref):
    got, ref = got.double(), ref.double()
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def assert_matches(module, model, inputs, dtype):
    """Outputs agree within the dtype's tolerance and no input was written."""
    before = [x.clone() for x in inputs]
    with torch.no_grad():
        got, ref = module(*inputs), model(*inputs)
    for x, x0 in zip(inputs, before):
        assert torch.equal(x, x0), "an input was modified"
    assert got.shape == ref.shape and got.dtype == ref.dtype
    err = max_rel_err(got, ref)
    assert err <= TOLERANCE[dtype], f"relative error {err:.2e} > {TOLERANCE[dtype]}"
    return got


def fused_ops(kinds):
    return {k: v for k, v in kinds.items() if k.startswith("jitfuse::")}

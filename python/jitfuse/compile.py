"""torch.compile(model, backend="jitfuse"): jitfuse's fusions, then inductor for the rest.

Registered under the "torch_dynamo_backends" entry point (pyproject.toml), so the name works after
`pip install jitfuse` without importing it first. Like inductor's freezing, it treats the model's
parameters and buffers as constants, and so fuses only where no gradient is asked for (under
torch.no_grad() or torch.inference_mode()); with gradients on, the graph goes to inductor as it is.
"""
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import jitfuse
from jitfuse import fx


def _is_weight(t):
    # dynamo marks the parameters and buffers of the modules it inlined as static inputs
    return getattr(t, "_dynamo_static_input_type", None) is not None


def frozen_aten_graph(gm, example_inputs):
    """(An ATen graph of `gm` whose weights are constants, the indices of the inputs it still takes)."""
    weights = {i: t for i, t in enumerate(example_inputs) if _is_weight(t)}
    kept = [i for i in range(len(example_inputs)) if i not in weights]

    def with_weights(*activations):
        full = list(example_inputs)
        for i, a in zip(kept, activations):
            full[i] = a
        return gm(*full)

    # pre_dispatch keeps the ops the tables spell (aten.conv2d, aten.linear, aten.layer_norm...)
    aten = make_fx(with_weights, pre_dispatch=True)(*[example_inputs[i] for i in kept])
    return aten, kept


# Inductor's C++ wrapper around the fused graph: its Python wrapper costs ~25 us per extern op
# call, 2-3 ms a call on BERT-base and ResNet-50 (3-5 % at batch 1, AMD EPYC Zen 4).
FUSED_GRAPH_OPTIONS = {"cpp_wrapper": True}


def backend(gm, example_inputs, mode=None, options=None):
    """torch.compile's `mode` and `options` mean what they mean to inductor, which compiles the graph
    the fusions leave (options={"cpp_wrapper": False} takes the Python wrapper back)."""
    from torch._inductor import config, list_mode_options
    from torch._inductor.compile_fx import compile_fx

    options = {**(list_mode_options(mode) if mode else {}), **(options or {})}
    if not jitfuse.is_enabled() or torch.is_grad_enabled():
        with config.patch(options):
            return compile_fx(gm, example_inputs)
    aten, kept = frozen_aten_graph(gm, example_inputs)
    fused = fx.fuse(aten)
    activations = [example_inputs[i] for i in kept]
    with config.patch({**FUSED_GRAPH_OPTIONS, **options}):
        compiled = compile_fx(fused, activations)

    def run(*args):
        return compiled(*[args[i] for i in kept])

    run.jitfuse_graph = fused  # what the fusions left, for jitfuse.report and tests
    return run

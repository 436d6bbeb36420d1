"""int8 without TorchScript: a model quantized with PT2E (torchao's X86InductorQuantizer:
quantized_decomposed quantize/dequantize ops on plain int8 tensors) fuses its dequant -> op ->
quant chains into the same jitfuse int8 ops as the QuantConf flow, through jitfuse.fx, the
torch.compile backend and AOTInductor; what those ops cannot compute exactly as PT2E's graph
does is left as it is. And the QuantConf flow exports: jitfuse.quantization.export fuses the same
int8 ops as its TorchScript module.

Tolerance: the int8 ops accumulate in int32 where the reference graph convolves the dequantized
values in float32, so a requantized value may round the other way: 1e-2 of the output's largest
magnitude (one quantum of an intermediate, carried through a few layers)."""
import collections
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
import jitfuse.compile
import jitfuse.export
import jitfuse.fx
from harness import fx_spelled_jitfuse_ops, max_rel_err, node_kinds
from jitfuse import QuantConf, quantization

import torchao.quantization.pt2e.quantize_pt2e as pt2e
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
from torchao.quantization.pt2e import move_exported_model_to_eval

INT8_TOLERANCE = 1e-2


class Net(nn.Module):
    """What X86InductorQuantizer quantizes in a CNN: conv+relu, a residual conv+add+relu, a conv
    alone, and the classifier's linear (the max pool stays float: the quantizer leaves a pool
    whose input it has not quantized; ResNet-50's is int8, see bench/run.py --compile)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        a = self.pool(F.relu(self.stem(x)))
        b = F.relu(self.conv(a) + a)
        c = self.head(b)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(c, 1), 1))


def inputs(batch=2):
    return (torch.randn(batch, 3, 16, 16),)


def pt2e_model(model, reduce_range=False):
    """PT2E's flow as its tutorial runs it: export, prepare, calibrate, convert, eval; then exported
    again, as jitfuse.fx.fuse takes it (convert_pt2e's new nodes carry no shape metadata)."""
    torch.manual_seed(0)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    prepared = pt2e.prepare_pt2e(torch.export.export(model.eval(), inputs()).module(), quantizer)
    with torch.no_grad():
        for _ in range(4):
            prepared(*inputs())
    converted = pt2e.convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return torch.export.export(converted, inputs()).module()


def ops(gm, namespace):
    return collections.Counter(n.target.name().split("::")[1] for n in gm.graph.nodes
                               if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                               and n.target.namespace == namespace)


def aten_heavy(gm):
    return {name: n for name, n in ops(gm, "aten").items() if name in ("conv2d", "linear", "add.Tensor")}


@pytest.fixture(scope="module")
def converted():
    return pt2e_model(Net())


def test_pt2e_chains_fuse_into_jitfuse_int8_ops(converted):
    fused = jitfuse.fx.fuse(converted)
    found = ops(fused, "jitfuse")
    for op in ("qconv2d_relu", "qconv2d_sum_relu", "qconv2d", "qlinear"):
        assert found[op] == 1, op
    # PT2E's own quantize/dequantize pairs (around the average pool and flatten, which it
    # quantizes as their input is) become jitfuse's, and compute the same
    assert not ops(fused, "quantized_decomposed") and not aten_heavy(fused)
    x = inputs()
    with torch.no_grad():
        assert max_rel_err(fused(*x), converted(*x)) <= INT8_TOLERANCE


def test_pt2e_through_the_compile_backend_and_aotinductor(converted, tmp_path):
    x = inputs()
    seen = []

    def recording(gm, example_inputs):
        compiled = jitfuse.compile.backend(gm, example_inputs)
        seen.append(compiled.jitfuse_graph)
        return compiled

    with torch.no_grad():
        ref = converted(*x)
        torch._dynamo.reset()
        assert max_rel_err(torch.compile(converted, backend=recording)(*x), ref) <= INT8_TOLERANCE
        torch._dynamo.reset()
        assert ops(seen[0], "jitfuse")["qconv2d_sum_relu"] == 1 and not aten_heavy(seen[0])
        path = jitfuse.export.package(converted, x, tmp_path / "int8.pt2")
        assert max_rel_err(torch._inductor.aoti_load_package(path)(*x), ref) <= INT8_TOLERANCE


def test_ranges_jitfuse_does_not_clamp_to_stay_pt2e_ops():
    """reduce_range quantizes activations to [0, 127]: jitfuse's quantize clamps to the whole uint8
    range, so those quantizes stay; the int8 convolutions before them write float32."""
    model = pt2e_model(Net(), reduce_range=True)
    quantizes = [n for n in model.graph.nodes if n.target == torch.ops.quantized_decomposed.quantize_per_tensor.default]
    assert quantizes and all(n.args[3:5] == (0, 127) for n in quantizes)
    fused = jitfuse.fx.fuse(model)
    assert ops(fused, "quantized_decomposed")["quantize_per_tensor"] == len(quantizes)
    assert ops(fused, "jitfuse")["qconv2d_relu"] == 1 and not ops(fused, "jitfuse")["quantize_per_tensor"]
    x = inputs()
    with torch.no_grad():
        assert max_rel_err(fused(*x), model(*x)) <= INT8_TOLERANCE


def test_weights_with_zero_points_are_left_alone(converted):
    """jitfuse's int8 weights are symmetric: where a per-channel zero point is not 0, the weight's
    dequantize is left as PT2E wrote it (freezing then folds it into a float weight), and its
    convolution is fused in float32, not int8."""
    model = copy.deepcopy(converted)
    dequantizes = [n for n in model.graph.nodes
                   if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    first = dequantizes[0]
    zero_points = getattr(model, first.args[2].target)
    zero_points.fill_(1)
    fused = jitfuse.fx.fuse(model)
    found = ops(fused, "jitfuse")
    assert found["conv2d_relu"] == 1 and not found["qconv2d_relu"] and found["qconv2d_sum_relu"] == 1
    x = inputs()
    with torch.no_grad():
        assert max_rel_err(fused(*x), model(*x)) <= INT8_TOLERANCE


class QuantConfNet(nn.Module):
    """The QuantConf flow's kinds: static convs (with a residual sum), a pool, dynamic linears."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        a = self.stem(x)
        b = F.relu(self.conv(a) + a)
        t = self.pool(b).flatten(2)
        return self.fc2(F.gelu(self.fc1(t)))


def test_quantconf_exports_the_int8_ops_of_its_torchscript_module():
    torch.manual_seed(0)
    model, x = QuantConfNet().eval(), torch.randn(2, 3, 8, 8)
    prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
    with torch.no_grad():
        for _ in range(3):
            with quantization.calibrate(conf):
                prepared(torch.randn(2, 3, 8, 8))
        scripted = quantization.convert(prepared, conf, x)
        for _ in range(3):
            expected = scripted(x)
        ts_ops = collections.Counter(fx_spelled_jitfuse_ops(node_kinds(scripted.graph_for(x))))
        program = quantization.export(prepared, conf, x)
        assert isinstance(program, torch.export.ExportedProgram)
        exported = ops(program.module(), "jitfuse")
        assert exported == ts_ops and exported["qconv2d_sum_relu"] == 1
        assert max_rel_err(program.module()(x), expected) <= INT8_TOLERANCE

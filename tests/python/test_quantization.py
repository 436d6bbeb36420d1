"""The INT8 calibration flow: QuantConf JSON round trips (version 2, and version 1 files), broken
files, convert with and without a saved recipe, per-op fp32 fallback, SmoothQuant and dynamic rows,
autotune, no deprecated quantized dtype anywhere, and end-to-end accuracy of ResNet-50, BERT-base
and the pretrained all-MiniLM-L6-v2."""
import json
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import node_kinds
from jitfuse import QuantConf, quantization
from jitfuse.quantization import QuantConfError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

HEAVY = {"aten::_convolution", "aten::conv2d", "aten::linear", "aten::addmm"}


class Net(nn.Module):
    """conv+relu, a residual conv+sum+relu, a pool, linears with activations, attention's bmm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 16)

    def forward(self, x):
        a = self.stem(x)
        b = F.relu(self.conv(a) + a)
        t = self.pool(b).flatten(2)                  # N, 8, 16
        u = F.gelu(self.fc1(t))
        v = torch.sigmoid(self.fc3(self.fc2(u) + t))
        return torch.bmm(v, v.transpose(1, 2)) / 4.0


def calibrated(model, batches, shape=(2, 3, 8, 8), observer="minmax"):
    torch.manual_seed(0)
    conf = QuantConf(dtype=torch.int8, observer=observer)
    prepared, conf = quantization.prepare(model, conf)
    with torch.no_grad():
        for _ in range(batches):
            with quantization.calibrate(conf):
                prepared(torch.randn(shape))
    return prepared, conf


def run(qmodel, x, times=3):
    with torch.no_grad():
        for _ in range(times):
            out = qmodel(x)
    return out, node_kinds(qmodel.graph_for(x))


def graph_tensors(module):
    """The tensor constants of a frozen module's graph (its weights)."""
    out = []
    for n in module.graph.findAllNodes("prim::Constant"):
        v = n.output().toIValue()
        if isinstance(v, torch.Tensor):
            out.append(v)
    return out


def cos(a, b):
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Net().eval()
    model.stem[1].running_mean.uniform_(-0.5, 0.5)
    model.stem[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
def test_flow_runs_int8_and_stays_close(net, observer):
    prepared, conf = calibrated(net, 10, observer=observer)
    x = torch.randn(2, 3, 8, 8)
    qmodel = quantization.convert(prepared, conf, x)
    assert isinstance(qmodel, torch.jit.ScriptModule)
    out, kinds = run(qmodel, x)
    assert not HEAVY & set(kinds), kinds
    for op in ("qconv2d_relu", "qconv2d_sum_relu", "qmax_pool2d", "qlinear_dynamic_gelu_rows", "qlinear_rows"):
        assert f"jitfuse::{op}" in kinds, (op, kinds)
    assert kinds.get("aten::bmm") == 1, "products stay float by default (jitfuse's int8 product computes in float)"
    with torch.no_grad():
        assert cos(out, net(x)) >= 0.99


def test_reference_graph_runs_unfused(net):
    """convert's module is a reference int8 graph that runs as it is (jitfuse's conversions and
    stock float ops): the same numbers as jitfuse's int8 kernels, within their rounding."""
    prepared, conf = calibrated(net, 4)
    x = torch.randn(2, 3, 8, 8)
    jitfuse.set_enabled(False)
    plain, plain_kinds = run(quantization.convert(prepared, conf, x), x)
    jitfuse.set_enabled(True)
    fused, _ = run(quantization.convert(prepared, conf, x), x)
    assert "aten::_convolution" in plain_kinds and not any(k.startswith("jitfuse::qconv") for k in plain_kinds)
    assert cos(fused, plain) >= 0.999


def test_no_deprecated_quantized_dtype_anywhere(net):
    """prepare, calibrate, convert and calls create no quint8/qint8/qint32 tensor (deprecated
    since torch 2.13: the flow and its ops use plain uint8/int8 tensors)."""
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prepared, conf = calibrated(net, 2)
        x = torch.randn(2, 3, 8, 8)
        run(quantization.convert(prepared, conf, x), x)
    assert not [w for w in seen if "quantized tensor creation" in str(w.message)]
    with torch.no_grad():
        q = quantization.convert(prepared, conf, x)
    tensors = graph_tensors(q)
    assert any(t.dtype == torch.int8 for t in tensors) and not any(t.is_quantized for t in tensors)


def test_recipe_round_trips_through_json(net, tmp_path):
    prepared, conf = calibrated(net, 4)
    path = tmp_path / "int8_conf.json"
    conf.save(path, default_recipe=True)
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["ops"] and doc["weight"]["bits"] == quantization.native_weight_bits()
    assert {e["kind"] for e in doc["ops"].values()} >= {"conv2d", "linear", "add", "max_pool2d", "bmm"}
    again = QuantConf(path)
    assert again.ops.keys() == conf.ops.keys()
    for name, entry in conf.ops.items():
        assert again.ops[name]["recipe"] == entry["recipe"]
        assert [q["scale"] for q in again.ops[name]["inputs"]] == [q["scale"] for q in entry["inputs"]]
    # A fresh model object with the same weights and the saved file gives the same int8 module.
    x = torch.randn(2, 3, 8, 8)
    first, _ = run(quantization.convert(prepared, conf, x), x)
    fresh = Net().eval()
    fresh.load_state_dict(net.state_dict())
    second, _ = run(quantization.convert(fresh, QuantConf(str(path)), x), x)
    assert torch.equal(first, second)


def test_default_recipe_false_marks_every_op_int8(net, tmp_path):
    prepared, conf = calibrated(net, 2)
    conf.save(tmp_path / "all.json", default_recipe=False)
    doc = json.loads((tmp_path / "all.json").read_text())
    assert {e["recipe"] for e in doc["ops"].values()} == {"int8"}


def test_fp32_fallback_per_op_is_honoured(net, tmp_path):
    prepared, conf = calibrated(net, 2)
    path = tmp_path / "conf.json"
    conf.save(path)
    doc = json.loads(path.read_text())
    assert "conv:conv2d" in doc["ops"], list(doc["ops"])
    doc["ops"]["conv:conv2d"]["recipe"] = "fp32"
    path.write_text(json.dumps(doc))
    x = torch.randn(2, 3, 8, 8)
    _, with_all = run(quantization.convert(net, QuantConf(path), x), x)
    qconvs = sum(v for k, v in with_all.items() if k.startswith("jitfuse::qconv2d"))
    assert qconvs == 1, with_all  # the stem only: `conv` (and the sum after it) stay float
    assert any(k.startswith("jitfuse::conv2d") or k == "aten::_convolution" for k in with_all), with_all


def test_convert_needs_calibration(net):
    _, conf = quantization.prepare(net, QuantConf())
    with pytest.raises(QuantConfError, match="calibrate"):
        quantization.convert(net, conf, torch.randn(2, 3, 8, 8))


def test_version_1_files_still_load_and_convert(net, tmp_path):
    """A version 1 recipe (static per-tensor activations everywhere, 7-bit weights) converts as
    it meant: every linear static, weights within [-63, 63]."""
    prepared, conf = calibrated(net, 2)
    path = tmp_path / "v2.json"
    conf.save(path)
    doc = json.loads(path.read_text())
    v1 = {"version": 1, "dtype": "int8", "observer": "minmax",
          "activation": {"dtype": "uint8", "qscheme": "per_tensor_affine"},
          "weight": {"dtype": "int8", "qscheme": "per_channel_symmetric", "quant_min": -63, "quant_max": 63},
          "ops": {name: {k: v for k, v in e.items() if k in ("kind", "recipe", "inputs")} for name, e in doc["ops"].items()}}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    old = QuantConf(tmp_path / "v1.json")
    assert old.weight_bits == 7 and {e["activation"] for e in old.ops.values()} == {"static"}
    x = torch.randn(2, 3, 8, 8)
    q = quantization.convert(net, old, x)
    out, kinds = run(q, x)
    assert kinds.get("jitfuse::qlinear_gelu") == 1 and "jitfuse::qlinear_dynamic" not in kinds, kinds
    weights = [t for t in graph_tensors(q) if t.dtype == torch.int8]
    assert weights and max(t.abs().max().item() for t in weights) <= 63
    with torch.no_grad():
        assert cos(out, net(x)) >= 0.99
    # and saved again, it is a version 2 file that means the same
    old.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["version"] == 2 and again["weight"]["bits"] == 7


class LayerNormed(nn.Module):
    """LayerNorm -> three linears (Q, K, V shape) and a fourth: the smoothing's candidates."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.q, self.k, self.v, self.out = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x):
        h = self.ln(x)
        return self.out(self.q(h) * self.k(h) + self.v(h))


def test_smoothing_is_recorded_and_shared_by_linears_of_one_input(tmp_path):
    torch.manual_seed(0)
    model = LayerNormed().eval()
    model.ln.weight.data[3] = 20.0  # an outlier channel, as pretrained transformers have
    prepared, conf = quantization.prepare(model, QuantConf())
    with torch.no_grad(), quantization.calibrate(conf):
        prepared(torch.randn(4, 8, 16))
    smoothed = {n for n, e in conf.ops.items() if "smooth" in e}
    assert smoothed == {"q:linear", "k:linear", "v:linear"}, smoothed  # out reads no LayerNorm
    assert all(len(conf.ops[n]["smooth"]["channel_max"]) == 16 for n in smoothed)
    conf.save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["ops"]["q:linear"]["smooth"]["alpha"] == 0.5 and doc["ops"]["q:linear"]["activation"] == "dynamic"
    x = torch.randn(4, 8, 16)
    out, kinds = run(quantization.convert(model, QuantConf(tmp_path / "s.json"), x), x)
    # one merged, smoothed q/k/v product (one quantization of h), and the output projection
    assert kinds.get("jitfuse::qlinear_dynamic") == 2 and "aten::split_with_sizes" in kinds, kinds
    with torch.no_grad():
        assert cos(out, model(x)) >= 0.999


def test_bad_smoothing_fields_are_named(net, tmp_path):
    torch.manual_seed(0)
    model = LayerNormed().eval()
    prepared, conf = quantization.prepare(model, QuantConf())
    with torch.no_grad(), quantization.calibrate(conf):
        prepared(torch.randn(4, 8, 16))
    conf.save(tmp_path / "s.json")
    for field, value in [("alpha", 2.0), ("alpha", "half"), ("channel_max", [1.0, -2.0])]:
        doc = json.loads((tmp_path / "s.json").read_text())
        doc["ops"]["q:linear"]["smooth"][field] = value
        (tmp_path / "bad.json").write_text(json.dumps(doc))
        with pytest.raises(QuantConfError, match=rf"bad\.json.*ops\.q:linear\.smooth\.{field}"):
            QuantConf(tmp_path / "bad.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["ops"]["q:linear"]["smooth"]["channel_max"] = [1.0] * 5  # not the linear's width
    (tmp_path / "narrow.json").write_text(json.dumps(doc))
    with pytest.raises(QuantConfError, match=r"narrow\.json.*ops\.q:linear\.smooth\.channel_max"):
        quantization.convert(model, QuantConf(tmp_path / "narrow.json"), torch.randn(4, 8, 16))


class Planted(nn.Module):
    """Four linears; the third one's input has one channel a thousand times larger than the rest,
    and its weight reads only that channel: int8 rows cannot hold both ranges."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = self.b(h)
        h = h * torch.tensor([1000.0] + [1.0] * 15)
        return self.d(self.c(h))


def test_autotune_keeps_the_planted_sensitive_layer_in_fp32(tmp_path):
    torch.manual_seed(0)
    model = Planted().eval()
    with torch.no_grad():
        model.c.weight.zero_()
        model.c.weight[:, 1:] = torch.randn(16, 15)  # reads the small channels only
    calib = [torch.randn(8, 16) for _ in range(4)]
    x = torch.randn(64, 16)
    with torch.no_grad():
        ref = model(x)

    def evaluate(m):
        with torch.no_grad():
            return cos(m(x), ref)

    qmodel, conf = quantization.autotune(model, QuantConf(), calib, evaluate, tolerance=1e-4)
    fallbacks = {n for n, e in conf.ops.items() if e["recipe"] == "fp32"}
    assert fallbacks == {"c:linear"}, {n: e.get("fallback") for n, e in conf.ops.items()}
    assert "autotune" in conf.ops["c:linear"]["fallback"]
    assert evaluate(qmodel) >= evaluate(model) - 1e-4
    conf.save(tmp_path / "tuned.json")
    doc = json.loads((tmp_path / "tuned.json").read_text())
    assert doc["ops"]["c:linear"]["recipe"] == "fp32" and "fallback" in doc["ops"]["c:linear"]
    assert QuantConf(tmp_path / "tuned.json").ops["c:linear"]["fallback"] == conf.ops["c:linear"]["fallback"]


VALID = None


def broken_cases():
    """(label, mutate(doc) -> text, field the error must name)."""
    def edit(fn):
        def apply(doc):
            fn(doc)
            return json.dumps(doc)
        return apply

    first = lambda d: next(iter(d["ops"].values()))  # noqa: E731
    return [
        ("truncated", lambda d: json.dumps(d)[:40], ""),
        ("empty", lambda d: "", ""),
        ("not an object", lambda d: "[1, 2, 3]", ""),
        ("no version", edit(lambda d: d.pop("version")), "version"),
        ("unknown version", edit(lambda d: d.update(version=99)), "version"),
        ("no ops", edit(lambda d: d.pop("ops")), "ops"),
        ("bad kind", edit(lambda d: first(d).update(kind="conv9d")), ".kind"),
        ("bad recipe", edit(lambda d: first(d).update(recipe="int4")), ".recipe"),
        ("negative scale", edit(lambda d: first(d)["inputs"][0].update(scale=-1.0)), ".scale"),
        ("NaN scale", edit(lambda d: first(d)["inputs"][0].update(scale=float("nan"))), ".scale"),
        ("string scale", edit(lambda d: first(d)["inputs"][0].update(scale="0.1")), ".scale"),
        ("zero point range", edit(lambda d: first(d)["inputs"][0].update(zero_point=1000)), ".zero_point"),
        ("missing inputs", edit(lambda d: first(d).pop("inputs")), ".inputs"),
        ("weight bits", edit(lambda d: d["weight"].update(bits=4)), "weight.bits"),
        ("bad activation", edit(lambda d: first(d).update(activation="per_token")), ".activation"),
        ("fallback type", edit(lambda d: first(d).update(fallback=3)), ".fallback"),
    ]


@pytest.mark.parametrize("label, mutate, field", broken_cases(), ids=[c[0] for c in broken_cases()])
def test_broken_recipe_file_raises_one_clear_error(net, tmp_path, label, mutate, field):
    _, conf = calibrated(net, 1)
    good = tmp_path / "good.json"
    conf.save(good)
    bad = tmp_path / f"broken_{label.replace(' ', '_')}.json"
    bad.write_text(mutate(json.loads(good.read_text())))
    with pytest.raises(QuantConfError) as e:
        QuantConf(bad)
    assert bad.name in str(e.value)
    assert field in str(e.value)


def test_unknown_op_name_is_reported_at_convert(net, tmp_path):
    _, conf = calibrated(net, 1)
    path = tmp_path / "renamed.json"
    conf.save(path)
    doc = json.loads(path.read_text())
    doc["ops"]["gone.conv:conv2d"] = doc["ops"].pop("conv:conv2d")
    path.write_text(json.dumps(doc))
    with pytest.raises(QuantConfError, match=r"renamed\.json.*ops\.gone\.conv:conv2d.*no such op"):
        quantization.convert(net, QuantConf(path), torch.randn(2, 3, 8, 8))


def test_resnet50_int8_accuracy():
    from resnet50 import resnet50
    model = resnet50()
    prepared, conf = calibrated(model, 10, shape=(1, 3, 224, 224))
    x = torch.randn(1, 3, 224, 224)
    out, kinds = run(quantization.convert(prepared, conf, x), x)
    assert not HEAVY & set(kinds), kinds
    with torch.no_grad():
        c = cos(out, model(x))
    print(f"resnet50 int8 cosine to fp32: {c:.4f}")
    assert c >= 0.99


def test_bert_base_int8_accuracy():
    from encoder import bert_base
    model = bert_base()
    torch.manual_seed(0)
    ids = lambda: torch.randint(0, 30522, (1, 128))  # noqa: E731
    mask = torch.ones(1, 128, dtype=torch.long)
    conf = QuantConf(dtype=torch.int8)
    prepared, conf = quantization.prepare(model, conf)
    with torch.no_grad():
        for _ in range(10):
            with quantization.calibrate(conf):
                prepared(ids(), mask)
        x = ids()
        qmodel = quantization.convert(prepared, conf, (x, mask))
        for _ in range(3):
            out = qmodel(x, mask)
        kinds = node_kinds(qmodel.graph_for(x, mask))
        ref = model(x, mask)
    assert "aten::linear" not in kinds and kinds.get("jitfuse::qlinear_dynamic", 0) > 0, kinds
    c = cos(out[0], ref[0])
    print(f"bert-base int8 cosine to fp32: {c:.4f}")
    assert c >= 0.99


def test_a_module_called_twice_quantizes_both_calls():
    """Found by the recipe fuzzer: a Linear applied twice (`fc(y)`, then `fc(y).t()` into a bmm)
    gets two recipe entries and converts (both calls int8)."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 8)

        def forward(self, y):
            return torch.bmm(self.fc(y), self.fc(y).transpose(1, 2))

    model = Twice().eval()
    prepared, conf = quantization.prepare(model, QuantConf())
    with torch.no_grad():
        for _ in range(3):
            with quantization.calibrate(conf):
                prepared(torch.randn(2, 4, 16))
    assert {"fc:linear", "fc:linear.2", ":bmm"} <= set(conf.ops)
    x = torch.randn(2, 4, 16)
    out, kinds = run(quantization.convert(model, conf, x), x)
    assert kinds.get("jitfuse::qlinear_dynamic") and "aten::linear" not in kinds, kinds  # freezing may merge the two
    with torch.no_grad():
        assert cos(out, model(x)) >= 0.99


def attention_flags(graph):
    """The low_precision argument of every jitfuse::attention node."""
    return [n.inputsAt(7).toIValue() for n in graph.nodes() if n.kind() == "jitfuse::attention"]


def small_encoder():
    from encoder import Encoder
    torch.manual_seed(0)
    return Encoder(hidden=128, heads=4, ffn=256, layers=2).eval()


def int8_encoder(x, mask):
    model = small_encoder()
    prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
    with torch.no_grad(), quantization.calibrate(conf):
        prepared(x, mask)
    return model, quantization.convert(prepared, conf, (x, mask))


@pytest.mark.parametrize("enabled", [True, False])
def test_attention_between_int8_linears_may_compute_in_bf16(enabled):
    """attention_low_precision marks the attention whose q, k, v an int8 linear wrote (through the
    merged Q/K/V split and the head views); turned off, every attention stays exact."""
    torch.manual_seed(0)
    x, mask = torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    model, qmodel = int8_encoder(x, mask)
    jitfuse.set_pattern_enabled("attention_low_precision", enabled)
    try:
        with torch.no_grad():
            for _ in range(3):
                out = qmodel(x, mask)
            flags = attention_flags(qmodel.graph_for(x, mask))
            ref = model(x, mask)
    finally:
        jitfuse.set_pattern_enabled("attention_low_precision", True)
    assert flags == [enabled] * 2, flags
    assert cos(out, ref) >= 0.99


def test_float_models_keep_exact_attention():
    """A float32 model's attention is never marked: only int8 linears' outputs may be rounded."""
    model = small_encoder()
    x, mask = torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(model, (x, mask)))
        for _ in range(3):
            m(x, mask)
        assert attention_flags(m.graph_for(x, mask)) == [False] * 2


def test_low_precision_attention_numerics():
    """low_precision=True: bf16 products where oneDNN has native bf16 (within bf16's tolerance of
    the float32 result, and not bit-equal to it), exactly the float32 op elsewhere."""
    torch.manual_seed(0)
    qkv = torch.randn(2, 32, 3 * 64)
    q, k, v = (t.view(2, 32, 4, 16).transpose(1, 2) for t in qkv.split(64, -1))
    mask = torch.zeros(2, 1, 1, 32)
    mask[..., 28:] = -10000.0
    exact = torch.ops.jitfuse.attention(q, k, v, mask, 4.0, True, True, False)
    low = torch.ops.jitfuse.attention(q, k, v, mask, 4.0, True, True, True)
    ref = (torch.softmax(q @ k.transpose(-1, -2) / 4.0 + mask, -1) @ v).transpose(1, 2)
    assert low.dtype == torch.float32 and low.shape == exact.shape == ref.shape
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-5)
    if jitfuse.onednn_isa().startswith(("avx512_core_bf16", "avx512_core_amx", "avx512_core_fp16")):
        torch.testing.assert_close(low, ref, rtol=2e-2, atol=2e-2)
        assert not torch.equal(low, exact)
    else:
        assert torch.equal(low, exact)

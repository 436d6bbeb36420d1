"""jitfuse vs what a CPU user would pick instead, on the same models, interleaved in one run.

Variants, each built from the same eager model:
  stock          torch.jit.trace + torch.jit.freeze (jitfuse disabled), in the row's dtype
  ofi            torch.jit.optimize_for_inference (fp32; jitfuse disabled; --full)
  onednn         stock with torch.jit.enable_onednn_fusion(True): the oneDNN Graph fuser
  stock-int8     ResNet-50: FX post-training quantization, x86 backend, traced and frozen;
                 BERT: torch.ao.quantization.quantize_dynamic on its Linears, traced and frozen
  openvino-*     OpenVINO (f32; bf16 by its precision hint; int8 through NNCF), bench/peers.py
  ort-*          ONNX Runtime (fp32; int8: static QDQ for ResNet-50, dynamic for BERT)
  jitfuse        trace + freeze with jitfuse enabled (int8: jitfuse.quantization's flow)
  inductor       torch.compile with freezing (fp32, bf16; --compile)
  jitfuse-compile  torch.compile(backend="jitfuse"): the same fusions without TorchScript, inductor
                 for the rest (fp32, bf16; --compile)
  inductor-int8  PT2E (X86InductorQuantizer, static), torch.compile with freezing (int8; --compile)
  jitfuse-pt2e   the same PT2E model, torch.compile(backend="jitfuse") (int8; --compile)
Every int8 variant is calibrated on the same batches. OpenVINO and ONNX Runtime come with the
[bench] extra; without them the run says so and times the rest. Each (model, batch, dtype) cell
is one interleaved run that also times stock fp32, so every row has two ratios: to stock fp32
trace+freeze, and to the anchor: the fastest of the alternatives a user would pick instead
(everything but stock, ofi and jitfuse) in that cell.

The default run is quick: batch 1, every dtype (a progress line per cell on stderr); --full runs
every batch of every model and the stock bf16 and ofi rows too.

--compile adds the torch.compile rows (each compiles for tens of seconds per cell).
--profile adds, per cell, where one jitfuse call's time goes: each fused op, each ATen op left,
conversions and reorders, as shares of the call (torch.profiler, self times; an int8 op's
activation quantization is its own row, `jitfuse::quantize_rows`, apart from the product).
--peak adds, per cell, the FLOPs of one call and the time of its compute ops each re-run alone at
its peak on the very same arguments (bench/peak.py): how far the call is from its kernels' limit.
Writes the table (markdown) and a bar chart (PNG) to bench/results/.
"""
import argparse
import copy
import os
import statistics
import sys
import time
import warnings

import torch

import jitfuse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peak  # noqa: E402
import peers  # noqa: E402
from encoder import bert_base  # noqa: E402
from resnet50 import resnet50  # noqa: E402


def resnet50_inputs(batch):
    return (torch.randn(batch, 3, 224, 224),)


def bert_inputs(batch, seq=128):
    ids = torch.randint(0, 30522, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:, seq * 3 // 4:] = 0  # padded tail, as in a real batch
    return ids, mask


# model name: (builder, inputs for a batch size, batch sizes of --full)
MODELS = {
    "resnet50": (resnet50, resnet50_inputs, "1,16"),
    "bert-base": (bert_base, bert_inputs, "1,8"),
}
# Rows that are not an alternative to jitfuse: the anchor is the fastest of the others.
NOT_ANCHORS = ("stock fp32", "stock", "ofi", "jitfuse", "jitfuse-compile", "jitfuse-pt2e")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# torch 2.13 warns on every stock-int8 and QuantConf build (torch.ao's and the quantized dtypes'
# deprecations) and transformers on every BERT: noise in a timing table.
for category in (DeprecationWarning, FutureWarning, UserWarning):
    warnings.filterwarnings("ignore", category=category)


def cpu_line():
    """The CPU, the ISA flags that matter here, and what oneDNN 3.2 dispatches to."""
    name, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return (f"CPU: {name} ({os.cpu_count()} cores visible; {' '.join(isa)}); "
            f"oneDNN dispatches to {jitfuse.onednn_isa()}")


class Variant:
    """A module, the dtype it takes, and the switches it was optimized under (re-applied on every
    call, so a re-optimization by the executor sees the same ones)."""

    def __init__(self, name, module, dtype, jitfuse_on=False, onednn_fuser=False):
        self.name, self.module, self.dtype = name, module, dtype
        self.jitfuse_on, self.onednn_fuser = jitfuse_on, onednn_fuser

    def cast(self, inputs):
        return tuple(t.to(self.dtype) if t.is_floating_point() else t for t in inputs)

    def __call__(self, *inputs):
        jitfuse.set_enabled(self.jitfuse_on)
        torch.jit.enable_onednn_fusion(self.onednn_fuser)
        try:
            return self.module(*self.cast(inputs))
        finally:
            jitfuse.set_enabled(True)
            torch.jit.enable_onednn_fusion(False)


def frozen(model, inputs, jitfuse_on=False):
    jitfuse.set_enabled(jitfuse_on)
    try:
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(model, inputs, check_trace=False, strict=False))
    finally:
        jitfuse.set_enabled(True)


def make_variant(name, model, inputs, dtype):
    """`name` is one of stock, ofi, onednn, jitfuse."""
    cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    module = frozen(model, cast, jitfuse_on=name == "jitfuse")
    if name == "ofi":
        jitfuse.set_enabled(False)
        try:
            module = torch.jit.optimize_for_inference(module)
        finally:
            jitfuse.set_enabled(True)
    return Variant(name, module, dtype, jitfuse_on=name == "jitfuse", onednn_fuser=name == "onednn")


def compile_variants(model, dtype):
    """inductor with freezing (what torch.compile users run for inference) and the jitfuse backend."""
    import torch._inductor.config
    # Set as users set it: passed in torch.compile's options, freezing measured 47 ms against 30 ms
    # for ResNet-50 bf16 batch 1 here (AMD EPYC Zen 4), as if it did not apply.
    torch._inductor.config.freezing = True
    return [Variant("inductor", torch.compile(model, backend="inductor", dynamic=False), dtype),
            Variant("jitfuse-compile", torch.compile(model, backend="jitfuse", dynamic=False), dtype, jitfuse_on=True)]


def stock_int8_variant(model_name, model, inputs, calibration):
    """What stock PyTorch offers in int8: static FX quantization (x86) for the CNN, dynamic
    quantization of the Linears for BERT (static FX does not trace it)."""
    if model_name == "resnet50":
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), inputs)
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        qmodel = convert_fx(prepared)
    else:
        qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return Variant("stock-int8", frozen(qmodel, inputs), torch.float32)


def jitfuse_int8_variant(model, inputs, calibration):
    """jitfuse's int8 flow: prepare, calibrate, convert; the executor then fuses the int8 chains."""
    from jitfuse import QuantConf, quantization
    prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
    with torch.no_grad():
        for batch in calibration:
            with quantization.calibrate(conf):
                prepared(*batch)
        qmodel = quantization.convert(prepared, conf, inputs)
    return Variant("jitfuse", qmodel, torch.float32, jitfuse_on=True)


def pt2e_variants(model, inputs, calibration):
    """PT2E int8 (torchao's X86InductorQuantizer, static: per-channel int8 weights, uint8
    activations), calibrated on the same batches, compiled by inductor (its own int8 fusions, with
    freezing) and by the jitfuse backend."""
    import torch._inductor.config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(copy.deepcopy(model).eval(), inputs).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    torch._inductor.config.freezing = True
    return [Variant("inductor-int8", torch.compile(converted, backend="inductor", dynamic=False), torch.float32),
            Variant("jitfuse-pt2e", torch.compile(converted, backend="jitfuse", dynamic=False), torch.float32,
                    jitfuse_on=True)]


def native_bf16():
    return jitfuse.onednn_isa() in ("avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx",
                                    "avx512_core_amx_fp16")


def interleaved(variants, inputs, warmup, iters, block=5):
    """Median seconds per call of each variant. Variants take turns in blocks of `block` timed
    calls, each after a pause and one untimed call: OpenVINO's and ONNX Runtime's worker threads
    spin on after a call and would slow whatever runs next (jitfuse ran ResNet-50 2x slower
    right after ONNX Runtime when calls alternated one by one)."""
    times = {v.name: [] for v in variants}
    with torch.no_grad():
        for v in variants:
            for _ in range(warmup):
                v(*inputs)
        for _ in range(max(1, (iters + block - 1) // block)):
            for v in variants:
                time.sleep(0.2)
                v(*inputs)
                for _ in range(block):
                    t = time.perf_counter()
                    v(*inputs)
                    times[v.name].append(time.perf_counter() - t)
    return {k: statistics.median(t) for k, t in times.items()}


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def check_outputs(variants, inputs, reference, min_cos):
    with torch.no_grad():
        for v in variants:
            got = first(v(*inputs)).float()
            cos = torch.nn.functional.cosine_similarity(got.flatten(), reference.flatten(), dim=0)
            if cos < min_cos:
                raise SystemExit(f"{v.name}: output differs from eager fp32 (cosine {cos:.5f})")


CONVERSIONS = ("jitfuse::to_channels_last", "jitfuse::like_memory_format", "aten::contiguous", "aten::copy_",
               "aten::to", "aten::_to_copy", "aten::clone", "aten::quantize_per_tensor", "aten::dequantize",
               "aten::reshape", "aten::view", "aten::permute", "aten::transpose")


def profile(variant, inputs, calls=5):
    """Where one call's time goes, by op: (kind, name, ms per call, share), largest first."""
    with torch.no_grad():
        for _ in range(2):
            variant(*inputs)
        with torch.profiler.profile() as prof:
            for _ in range(calls):
                variant(*inputs)
    rows, total = [], 0.0
    for e in prof.key_averages():
        if e.key in ("forward",) or e.key.startswith("Profiler"):
            continue
        ms = e.self_cpu_time_total / 1e3 / calls
        total += ms
        kind = ("conversion" if e.key in CONVERSIONS else "jitfuse op" if e.key.startswith("jitfuse::")
                else "stock fused" if e.key.startswith("Llga") else "ATen op")
        rows.append((kind, e.key, ms))
    rows.sort(key=lambda r: -r[2])
    return [(k, n, ms, ms / total if total else 0.0) for k, n, ms in rows], total


def print_profile(title, rows, total, top=14):
    print(f"\nprofile: {title}: {total:.2f} ms of op time per call")
    by_kind = {}
    for kind, _, ms, share in rows:
        by_kind[kind] = by_kind.get(kind, 0.0) + share
    print("  " + ", ".join(f"{k} {100 * s:.1f}%" for k, s in sorted(by_kind.items(), key=lambda kv: -kv[1])))
    for kind, name, ms, share in rows[:top]:
        print(f"  {100 * share:5.1f}%  {ms:8.3f} ms  {kind:11s} {name}")


def peer_variants(name, model32, inputs, dtype, calibration, args):
    """The OpenVINO and ONNX Runtime variants of a cell, as far as they are installed."""
    have, bert = peers.available(), name == "bert-base"
    made = []
    if "openvino" in have:
        if dtype == "int8":
            made.append(peers.openvino(model32, inputs, "f32", args.threads, calibration, transformer=bert))
        else:
            made.append(peers.openvino(model32, inputs, "bf16" if dtype == "bf16" else "f32", args.threads))
    if "ort" in have and dtype != "bf16":  # ONNX Runtime's CPU provider has no bf16 kernels to speak of
        int8 = None if dtype == "fp32" else "dynamic" if bert else "static"
        made.append(peers.ort(model32, inputs, args.threads, int8=int8, calibration=calibration))
    return made


def bench_group(name, batch, dtype, args):
    """Median seconds per variant of one (model, batch, dtype) cell, stock fp32 included."""
    build, make_inputs, _ = MODELS[name]
    model32, inputs = build(), make_inputs(batch)
    with torch.no_grad():
        reference = first(model32(*inputs))
    baseline = make_variant("stock", model32, inputs, torch.float32)
    baseline.name = "stock fp32"
    if dtype == "int8":
        torch.manual_seed(1)  # the same calibration batches for every int8 variant
        calibration = [make_inputs(batch) for _ in range(args.calibration)]
        variants = [stock_int8_variant(name, model32, inputs, calibration),
                    *peer_variants(name, model32, inputs, dtype, calibration, args),
                    jitfuse_int8_variant(model32, inputs, calibration)]
        if args.compile:
            variants += pt2e_variants(model32, inputs, calibration)
        check_outputs(variants, inputs, reference, min_cos=0.99)
    elif dtype == "fp32":
        names = ("ofi", "onednn", "jitfuse") if args.full else ("onednn", "jitfuse")
        variants = [make_variant(n, model32, inputs, torch.float32) for n in names]
        variants[-1:-1] = peer_variants(name, model32, inputs, dtype, None, args)
        if args.compile:
            variants += compile_variants(model32, torch.float32)
        check_outputs(variants, inputs, reference, min_cos=0.999)
    else:
        # Stock bf16 (no fuser) is seconds per ResNet-50 call on CPUs without bf16 instructions.
        names = ("stock", "onednn", "jitfuse") if args.full and native_bf16() else ("onednn", "jitfuse")
        model = build().to(torch.bfloat16)
        variants = [make_variant(n, model, inputs, torch.bfloat16) for n in names]
        variants[-1:-1] = peer_variants(name, model32, inputs, dtype, None, args)
        if args.compile:
            variants += compile_variants(model, torch.bfloat16)
        check_outputs(variants, inputs, reference, min_cos=0.999)
    warmup, iters = args.warmup, args.iters
    block = 5
    if batch > 1:  # a call takes ~batch times longer; fewer calls keep the run short
        warmup, iters, block = max(3, warmup // 4), max(6, iters // 3), 2
    medians = interleaved([baseline] + variants, inputs, warmup, iters, block)
    ours = next(v for v in variants if v.name == "jitfuse")
    if args.profile:
        print_profile(f"{name} batch {batch} {dtype} jitfuse", *profile(ours, inputs))
    if args.peak:
        peak.print_peaks(f"{name} batch {batch} {dtype} jitfuse",
                         peak.kernel_peaks(ours.module, ours.cast(inputs)), medians["jitfuse"])
    return medians


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default=None, help="batch sizes for every model (default: 1; --full: per model)")
    ap.add_argument("--dtypes", default="fp32,bf16,int8")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=10, help="int8 calibration batches")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile: inductor with freezing and the jitfuse backend (fp32, bf16; "
                         "int8: on a PT2E model)")
    ap.add_argument("--profile", action="store_true", help="where one jitfuse call's time goes, per group")
    ap.add_argument("--peak", action="store_true",
                    help="per cell, its FLOPs and the peak of jitfuse's own kernels on the same shapes")
    ap.add_argument("--full", action="store_true",
                    help="every batch of every model, and the stock bf16 (where the CPU has bf16 "
                         "instructions) and ofi rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line(), flush=True)
    missing = {"openvino", "ort"} - set(peers.available())
    if missing:
        print(f"not timed: {', '.join(sorted(missing))} (pip install 'jitfuse[bench]')", flush=True)

    cells = [(m, int(b), d) for m in args.models.split(",")
             for b in (args.batches or (MODELS[m][2] if args.full else "1")).split(",")
             for d in args.dtypes.split(",")]
    rows, start = [], time.perf_counter()
    for i, (model_name, batch, dname) in enumerate(cells):
        t0 = time.perf_counter()
        med = bench_group(model_name, batch, dname, args)
        base = med["stock fp32"]
        anchor_name, anchor = min(((n, t) for n, t in med.items() if n not in NOT_ANCHORS),
                                  key=lambda kv: kv[1], default=(None, None))
        for name, t in med.items():
            if name == "stock fp32" and dname != "fp32":
                continue  # shown in the fp32 row of the same batch
            label = "stock" if name == "stock fp32" else name
            vs_anchor = anchor / t if anchor else float("nan")
            rows.append((model_name, batch, dname, label, t * 1e3, base / t, vs_anchor))
        mine = med.get("jitfuse")
        print(f"[{i + 1}/{len(cells)}] {model_name} batch {batch} {dname}: jitfuse {mine * 1e3:.1f} ms, "
              f"{anchor / mine:.2f}x the best alternative ({anchor_name}); cell {time.perf_counter() - t0:.0f} s, "
              f"run {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    lines = ["| model | batch | dtype | variant | median ms | vs stock fp32 trace+freeze | vs anchor |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {b} | {d} | {v} | {ms:.1f} | {r:.2f}x | {a:.2f}x |" for m, b, d, v, ms, r, a in rows]
    table = "\n".join(lines)
    print(f"\n{cpu_line()}\n{args.threads} threads, torch {torch.__version__}, jitfuse {jitfuse.__version__}; "
          f"anchor: the fastest alternative in each cell (onednn, stock-int8, openvino-*, ort-*, inductor)\n")
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(cpu_line() + "\n\n" + table + "\n")
    chart(rows, os.path.join(RESULTS, "results.png"))


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(m, b, d) for m, b, d, *_ in rows}, key=lambda g: (g[0], g[1], ["fp32", "bf16", "int8"].index(g[2])))
    variants = [v for v in ("stock", "ofi", "onednn", "stock-int8", "openvino-f32", "openvino-bf16", "openvino-int8",
                            "ort-fp32", "ort-int8", "jitfuse") if any(r[3] == v for r in rows)]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups)), 4))
    for i, v in enumerate(variants):
        xs, ys = [], []
        for j, g in enumerate(groups):
            for m, b, d, name, ms, ratio, _ in rows:
                if (m, b, d) == g and name == v:
                    xs.append(j + i * width)
                    ys.append(ratio)
        ax.bar(xs, ys, width, label=v)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbs{b} {d}" for m, b, d in groups])
    ax.set_ylabel("speed vs stock fp32 trace+freeze (x)")
    ax.set_title(cpu_line()[:90], fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()

"""jitfuse vs stock PyTorch on the same models, interleaved in one run.

Variants, each traced and frozen from the same eager model:
  stock       torch.jit.trace + torch.jit.freeze (jitfuse disabled)
  ofi         torch.jit.optimize_for_inference (jitfuse disabled)
  onednn      stock with torch.jit.enable_onednn_fusion(True) (jitfuse disabled)
  jitfuse     trace + freeze with jitfuse enabled
int8 rows: jitfuse.quantization's flow (prepare, calibrate on 10 batches, convert), then the
executor runs jitfuse's int8 ops.
Prints median ms per call and the ratio to stock fp32 trace+freeze at the same batch size;
writes the table (markdown) and a bar chart (PNG) to bench/results/.
"""
import argparse
import os
import statistics
import sys
import time

import torch

import jitfuse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder import bert_base  # noqa: E402
from resnet50 import resnet50  # noqa: E402


def resnet50_inputs(batch):
    return (torch.randn(batch, 3, 224, 224),)


def bert_inputs(batch, seq=128):
    ids = torch.randint(0, 30522, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:, seq * 3 // 4:] = 0  # padded tail, as in a real batch
    return ids, mask


# model name: (builder, inputs for a batch size, default batch sizes)
MODELS = {
    "resnet50": (resnet50, resnet50_inputs, "1,16"),
    "bert-base": (bert_base, bert_inputs, "1,8"),
}

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Variant:
    """A frozen module, the dtype it takes, and the switches it was optimized under (re-applied
    on every call, so a re-optimization by the executor sees the same ones)."""

    def __init__(self, name, module, dtype, jitfuse_on=False, onednn_fuser=False):
        self.name, self.module, self.dtype = name, module, dtype
        self.jitfuse_on, self.onednn_fuser = jitfuse_on, onednn_fuser

    def __call__(self, *inputs):
        jitfuse.set_enabled(self.jitfuse_on)
        torch.jit.enable_onednn_fusion(self.onednn_fuser)
        try:
            return self.module(*(t.to(self.dtype) if t.is_floating_point() else t for t in inputs))
        finally:
            jitfuse.set_enabled(True)
            torch.jit.enable_onednn_fusion(False)


def make_variant(name, model, inputs, dtype):
    """`name` is one of stock, ofi, onednn, jitfuse."""
    jitfuse.set_enabled(name == "jitfuse")
    try:
        with torch.no_grad():
            cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
            frozen = torch.jit.freeze(torch.jit.trace(model, cast, check_trace=False, strict=False))
            if name == "ofi":
                frozen = torch.jit.optimize_for_inference(frozen)
    finally:
        jitfuse.set_enabled(True)
    return Variant(name, frozen, dtype, jitfuse_on=name == "jitfuse", onednn_fuser=name == "onednn")


def int8_variant(model, make_inputs, batch, calibration_batches=10):
    """jitfuse's int8 flow: prepare, calibrate, convert; the executor then fuses the int8 chains."""
    from jitfuse import QuantConf, quantization
    prepared, conf = quantization.prepare(model, QuantConf(dtype=torch.int8))
    with torch.no_grad():
        for _ in range(calibration_batches):
            with quantization.calibrate(conf):
                prepared(*make_inputs(batch))
        qmodel = quantization.convert(prepared, conf, make_inputs(batch))
    return Variant("jitfuse", qmodel, torch.float32, jitfuse_on=True)


def interleaved(variants, inputs, warmup, iters):
    """Median seconds per call of each variant; calls alternate so noise hits all alike."""
    times = {v.name: [] for v in variants}
    with torch.no_grad():
        for v in variants:
            for _ in range(warmup):
                v(*inputs)
        for _ in range(iters):
            for v in variants:
                t = time.perf_counter()
                v(*inputs)
                times[v.name].append(time.perf_counter() - t)
    return {k: statistics.median(t) for k, t in times.items()}


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def check_outputs(variants, inputs, reference, min_cos=0.999):
    with torch.no_grad():
        for v in variants:
            got = first(v(*inputs)).float()
            cos = torch.nn.functional.cosine_similarity(got.flatten(), reference.flatten(), dim=0)
            if cos < min_cos:
                raise SystemExit(f"{v.name}: output differs from eager fp32 (cosine {cos:.5f})")


def bench_model(name, batch, dtype, args):
    """Median seconds per variant. Every row's baseline, stock fp32 trace+freeze, is timed in the
    same interleaved run."""
    build, make_inputs, _ = MODELS[name]
    model32, inputs = build(), make_inputs(batch)
    with torch.no_grad():
        reference = first(model32(*inputs))
    baseline = make_variant("stock", model32, inputs, torch.float32)
    baseline.name = "stock fp32"
    if dtype == "int8":
        variants = [int8_variant(model32, make_inputs, batch)]
        check_outputs(variants, inputs, reference, min_cos=0.99)
    elif dtype == torch.float32:
        variants = [make_variant(n, model32, inputs, dtype) for n in ("ofi", "onednn", "jitfuse")]
    else:
        # Stock bf16 kernels are slow on CPUs without bf16 instructions (seconds per ResNet-50
        # call at batch 1): timed only with --full.
        names = ("stock", "ofi", "onednn", "jitfuse") if args.full else ("jitfuse",)
        model = build().to(dtype)
        variants = [make_variant(n, model, inputs, dtype) for n in names]
    if dtype != "int8":
        check_outputs(variants, inputs, reference)
    warmup, iters = args.warmup, args.iters
    if batch > 1:  # a call takes ~batch times longer; fewer calls keep the run short
        warmup, iters = max(3, warmup // 4), max(5, iters // 3)
    return interleaved([baseline] + variants, inputs, warmup, iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default=None, help="batch sizes for every model (default: per model)")
    ap.add_argument("--dtypes", default="fp32,bf16,int8")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true",
                    help="also time stock bf16 variants (slow without bf16 instructions)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": "int8"}

    rows = []
    for model_name in args.models.split(","):
        batches = args.batches or MODELS[model_name][2]
        for batch in [int(b) for b in batches.split(",")]:
            for dname in args.dtypes.split(","):
                med = bench_model(model_name, batch, dtypes[dname], args)
                base = med["stock fp32"]
                for name, t in med.items():
                    if name == "stock fp32" and dname != "fp32":
                        continue  # shown in the fp32 row of the same batch
                    label = "stock" if name == "stock fp32" else name
                    rows.append((model_name, batch, dname, label, t * 1e3, base / t))
                print(f"done {model_name} batch {batch} {dname}", file=sys.stderr, flush=True)

    lines = ["| model | batch | dtype | variant | median ms | vs stock fp32 trace+freeze |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {b} | {d} | {v} | {ms:.1f} | {r:.2f}x |" for m, b, d, v, ms, r in rows]
    table = "\n".join(lines)
    print(f"\n{args.threads} threads, torch {torch.__version__}, jitfuse {jitfuse.__version__}\n")
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(table + "\n")
    chart(rows, os.path.join(RESULTS, "results.png"))


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(m, b, d) for m, b, d, *_ in rows}, key=lambda g: (g[0], g[1], g[2] != "fp32"))
    variants = ["stock", "ofi", "onednn", "jitfuse"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups)), 4))
    for i, v in enumerate(variants):
        xs, ys = [], []
        for j, g in enumerate(groups):
            for m, b, d, name, ms, ratio in rows:
                if (m, b, d) == g and name == v:
                    xs.append(j + i * width)
                    ys.append(ratio)
        ax.bar(xs, ys, width, label=v)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbs{b} {d}" for m, b, d in groups])
    ax.set_ylabel("speed vs stock fp32 trace+freeze (x)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()

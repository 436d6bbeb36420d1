"""Throughput of a fused model behind Ray Serve on this machine, with 1, 2, ... replicas
(replicas x threads = cores), beside direct calls in one process: what the README's serving table
shows.

    python examples/serve/measure.py [--model small|resnet50] [--precision fp32|bf16|int8]
        [--requests 400] [--clients 8] [--replicas 1 2]
"""
import argparse
import os
import platform
import socket
import sys
import tempfile
import time

import ray
import torch
from ray import serve

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import app  # noqa: E402
import client  # noqa: E402
import prepare  # noqa: E402
import wire  # noqa: E402


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def direct(path, info, requests, cores):
    """Requests per second of one process calling the file on one sample at a time."""
    import jitfuse  # noqa: F401
    torch.set_num_threads(cores)
    model = torch.jit.load(path)
    dtype = wire.DTYPES[info["input_dtype"]]
    inputs = [x.unsqueeze(0).to(dtype) for x in client.make_inputs(info, requests)]
    with torch.no_grad():
        for x in inputs[:20]:
            model(x)
        start = time.perf_counter()
        for x in inputs:
            model(x)
    return requests / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(prepare.MODELS), default="small")
    ap.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--replicas", type=int, nargs="+", default=None, help="replica counts to try (1 2 4 ... up to the cores)")
    ap.add_argument("--max-batch-size", type=int, default=8)
    args = ap.parse_args()
    cores = os.cpu_count()
    counts = args.replicas or [r for r in (1, 2, 4, 8, 16) if r <= cores]

    with tempfile.TemporaryDirectory() as tmp:
        path = prepare.prepare(tmp, args.model, [args.precision])[args.precision]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, runtime_env={"working_dir": HERE})
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        rows = []
        try:
            for replicas in counts:
                serve.run(app.build({"model": path, "replicas": str(replicas), "cores": str(cores),
                                     "max_batch_size": str(args.max_batch_size)}), name="measure", route_prefix="/")
                url = f"http://127.0.0.1:{port}/"
                info = client.describe(url)
                client.send(url, client.make_inputs(info, 50, seed=1), args.clients)  # warm-up
                answers, wall = client.send(url, client.make_inputs(info, args.requests), args.clients)
                rows.append((f"{replicas} x {info['threads']} threads", client.summary(answers, wall)))
                serve.delete("measure")
        finally:
            serve.shutdown()
            ray.shutdown()
        rps = direct(path, info, args.requests, cores)

    print(f"CPU: {cpu_name()}, {cores} cores, oneDNN {info['onednn_isa']}; {args.model} {args.precision}, "
          f"input {info['input_shape']}, one sample per request, {args.clients} clients, raw tensors, "
          f"max_batch_size {args.max_batch_size}")
    print(f"| replicas | requests/s | p50 ms | p99 ms | requests per model call | failed |")
    print(f"|---|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['requests_per_s']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
              f"{s['requests_per_call']:.1f} | {sum(s['failed'].values())} |")
    print(f"| direct calls, one process, {cores} threads, batch 1 | {rps:.0f} | | | | |")


if __name__ == "__main__":
    main()

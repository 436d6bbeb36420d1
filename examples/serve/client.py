"""Load for examples/serve/app.py: concurrent clients send requests, then throughput and latency
percentiles are printed; --check MODEL.pt compares every answer with a direct call of the file.

    python examples/serve/client.py http://127.0.0.1:8000/ [--requests 500] [--clients 8]
        [--samples 1] [--format raw|json] [--retries 2] [--check MODEL.pt]
"""
import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import torch

import wire


@dataclass
class Answer:
    index: int
    status: int              # HTTP status; 0: no response (connection failed, timed out)
    seconds: float           # latency of the last try
    output: torch.Tensor = None
    error: str = ""
    replica: str = ""        # X-Replica: the replica that answered
    batch_requests: int = 0  # X-Batch-Requests: how many requests shared its model call
    retried_after: list = field(default_factory=list)  # (status, error) of the tries before


def describe(url, timeout=30):
    """What the server serves: GET's JSON (input_shape, input_dtype, threads, ...)."""
    r = requests.get(url, timeout=timeout)
    r.raise_for_status()
    return r.json()


def make_inputs(info, count, samples=1, seed=0):
    """`count` requests' inputs, each [samples, *input_shape] (one sample: no batch dim)."""
    gen = torch.Generator().manual_seed(seed)
    shape = info["input_shape"] if samples == 1 else [samples, *info["input_shape"]]
    return [torch.randn(shape, generator=gen) for _ in range(count)]


def post(session, url, x, fmt, timeout=30):
    """(status, output or None, error text, response headers) of one request."""
    if fmt == "raw":
        body, headers = wire.tensor_to_raw(x)
        r = session.post(url, data=body, headers=headers, timeout=timeout)
        out = wire.raw_to_tensor(r.content, r.headers) if r.status_code == 200 else None
    else:
        r = session.post(url, json={"inputs": x.tolist()}, timeout=timeout)
        out = wire.json_to_output(r.json()) if r.status_code == 200 else None
    return r.status_code, out, "" if out is not None else r.text, r.headers


def send(url, inputs, clients=8, fmt="raw", retries=0, timeout=30, on_answer=None):
    """Sends every input once from `clients` threads; returns (answers in input order, wall s).
    A request that gets a 5xx or no response is sent again up to `retries` times: inference is
    idempotent, and Serve's proxy answers a request whose replica died under it with a bare
    "500 Internal Server Error". on_answer(answer) is called as each request finishes."""
    local = threading.local()

    def one(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        failures = []
        for _ in range(retries + 1):
            start = time.perf_counter()
            try:
                status, out, err, headers = post(local.session, url, inputs[i], fmt, timeout)
            except requests.RequestException as e:
                status, out, err, headers = 0, None, f"{type(e).__name__}: {e}", {}
            answer = Answer(i, status, time.perf_counter() - start, out, err,
                            headers.get("x-replica", ""), int(headers.get("x-batch-requests", 0)), failures)
            if status == 200 or 400 <= status < 500:
                break
            failures = failures + [(status, err)]
        if on_answer:
            on_answer(answer)
        return answer

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(len(inputs))))
    return answers, time.perf_counter() - start


def summary(answers, wall, samples_per_request=1):
    """Throughput and latency percentiles of the answers that came back 200."""
    ok = sorted(a.seconds for a in answers if a.status == 200)
    failed = {}
    for a in answers:
        if a.status != 200:
            failed[a.status] = failed.get(a.status, 0) + 1
    if not ok:
        return {"requests": len(answers), "ok": 0, "failed": failed}
    q = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) > 1 else [ok[0]] * 99
    return {"requests": len(answers), "ok": len(ok), "failed": failed, "seconds": wall,
            "requests_per_s": len(ok) / wall, "samples_per_s": len(ok) * samples_per_request / wall,
            "p50_ms": q[49] * 1e3, "p90_ms": q[89] * 1e3, "p99_ms": q[98] * 1e3, "max_ms": ok[-1] * 1e3,
            "requests_per_call": statistics.mean(a.batch_requests for a in answers if a.status == 200)}


def direct_outputs(model_path, inputs, dtype):
    """What a direct call of the file answers to each request ([N, *input_shape] each)."""
    import jitfuse  # noqa: F401  (the fused ops)
    model = torch.jit.load(model_path)
    with torch.no_grad():
        for _ in range(2):
            model(inputs[0].to(dtype))  # the executor's optimized plan, as the server runs it
        return [model(x.to(dtype)) for x in inputs]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1, help="samples per request (1: one sample, no batch dim)")
    ap.add_argument("--format", choices=["raw", "json"], default="raw")
    ap.add_argument("--retries", type=int, default=2,
                    help="resend a request that got a 5xx or no answer (a replica that died under it)")
    ap.add_argument("--warmup", type=int, default=20, help="requests sent first and not counted")
    ap.add_argument("--check", metavar="MODEL.pt", help="compare every answer with a direct call of this file")
    args = ap.parse_args()

    info = describe(args.url)
    print(f"serving {info['model']}: input {info['input_shape']} {info['input_dtype']}, "
          f"{info['threads']} threads per replica, oneDNN {info['onednn_isa']}")
    send(args.url, make_inputs(info, args.warmup, args.samples, seed=1), args.clients, args.format)
    inputs = make_inputs(info, args.requests, args.samples)
    answers, wall = send(args.url, inputs, args.clients, args.format, args.retries)
    s = summary(answers, wall, args.samples)
    retried = sum(bool(a.retried_after) for a in answers)
    print(f"{s['ok']}/{s['requests']} answered" + (f", failed by status: {s['failed']}" if s["failed"] else "")
          + (f", {retried} after a retry" if retried else ""))
    if s["ok"]:
        print(f"throughput {s['requests_per_s']:.1f} requests/s ({s['samples_per_s']:.1f} samples/s) from "
              f"{args.clients} clients; latency ms p50 {s['p50_ms']:.2f} p90 {s['p90_ms']:.2f} "
              f"p99 {s['p99_ms']:.2f} max {s['max_ms']:.2f}; {s['requests_per_call']:.1f} requests per model call")
    for a in answers:
        if a.status != 200:
            print(f"request {a.index}: {a.status} {a.error[:200]}")
            break
    wrong = 0
    if args.check:
        dtype = wire.DTYPES[info["input_dtype"]]
        one = args.samples == 1
        direct = direct_outputs(args.check, [x.unsqueeze(0) if one else x for x in inputs], dtype)
        for a in answers:
            if a.status == 200:
                wrong += not torch.equal(a.output, direct[a.index][0] if one else direct[a.index])
        print(f"--check {args.check}: {wrong} answers differ from a direct call")
    raise SystemExit(1 if wrong or s["ok"] < s["requests"] else 0)


if __name__ == "__main__":
    main()

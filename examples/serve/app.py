"""A model fused offline by jitfuse, served by Ray Serve: replicas, request batching, JSON and raw
tensors over HTTP.

    python examples/serve/prepare.py /tmp/models          # fused fp32 / bf16 / int8 files
    serve run --app-dir examples/serve --working-dir examples/serve app:build \
        model=/tmp/models/small_fp32.pt replicas=2
    python examples/serve/client.py http://127.0.0.1:8000/ --requests 500 --clients 8

Arguments (serve run's key=value):
  model           a file from prepare.py, or any jitfuse.optimize'd TorchScript file given
                  input_shape=3,64,64 (one sample, no batch) and input_dtype=float32|bfloat16
  replicas        replicas (1)
  threads         torch threads per replica (cores // replicas). Ray reserves as many CPUs per
                  replica, so replicas x threads never exceeds the cores of any node.
  cores           CPUs to plan for (this machine's, or the cluster's when Ray is already up):
                  give the cluster's total when `serve run --address` runs on another machine
  max_batch_size  requests merged into one model call (8)
  batch_wait_ms   how long the first request of a batch waits for more (5)
  max_samples     samples one request may carry (64)
  health_check_s  how often Serve checks that a replica is alive (10): a dead one is replaced

HTTP, at the route prefix (/ by default); tensor formats in wire.py:
  POST, Content-Type: application/json         {"inputs": one sample or a list of samples}
  POST, Content-Type: application/octet-stream raw tensor [N, *input_shape] or one sample
  GET                                          what this replica serves (shape, dtype, threads)
Answers carry X-Replica (which replica) and X-Batch-Requests (how many requests shared the call).
A request the server cannot read gets a 4xx and {"error": "..."} saying why; a model failure 500.
"""
import asyncio
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import wire

def no_request_format(path):
    return (f"{path} has no {wire.META_FILE} (not written by prepare.py): give input_shape=C,H,W "
            "(one sample) and input_dtype=float32|bfloat16")


class UnsupportedType(wire.WireError):
    """A body in a format the server does not read (415)."""


def error(status, message):
    return JSONResponse({"error": message}, status_code=status)


@serve.deployment
class FusedModel:
    def __init__(self, model_path, threads, max_batch_size, batch_wait_s, max_samples,
                 input_shape=None, input_dtype=None):
        import jitfuse  # registers the fused ops: the file cannot load without them

        torch.set_num_threads(threads)
        extra = {wire.META_FILE: ""}
        self.model = torch.jit.load(model_path, _extra_files=extra)
        meta = json.loads(extra[wire.META_FILE]) if extra[wire.META_FILE] else {}
        shape, dtype = input_shape or meta.get("input_shape"), input_dtype or meta.get("input_dtype", "float32")
        if shape is None:
            raise ValueError(no_request_format(model_path))
        self.sample_shape, self.dtype = tuple(shape), wire.dtype_named(dtype)
        self.max_samples = max_samples
        self._infer.set_max_batch_size(max_batch_size)
        self._infer.set_batch_wait_timeout_s(batch_wait_s)
        # One model call at a time, off the event loop so requests keep arriving while it runs;
        # torch's threads work inside it.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # The profiling executor optimizes on the 2nd call: do that before taking traffic.
        for _ in range(3):
            out = self._forward(torch.zeros(1, *self.sample_shape, dtype=self.dtype))
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != 1:
            raise ValueError(f"{model_path}: the model must return one tensor, batch first")
        self.info = {"model": os.path.basename(model_path), "input_shape": list(self.sample_shape),
                     "input_dtype": wire.DTYPE_NAMES[self.dtype], "output_dtype": str(out.dtype).removeprefix("torch."),
                     "threads": torch.get_num_threads(), "pid": os.getpid(),
                     "replica": serve.get_replica_context().replica_tag,
                     "jitfuse": jitfuse.__version__, "onednn_isa": jitfuse.onednn_isa(),
                     "max_batch_size": max_batch_size, "batch_wait_s": batch_wait_s}

    def _forward(self, x):
        with torch.no_grad():  # grad mode is per thread: set it in the model's thread
            return self.model(x)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _infer(self, inputs):
        """Requests' samples in one call, then each request's rows back to it, with the number of
        requests that shared the call."""
        sizes = [x.shape[0] for x in inputs]
        batch = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        out = await asyncio.get_running_loop().run_in_executor(self._pool, self._forward, batch)
        return [(rows, len(inputs)) for rows in torch.split(out, sizes)]

    async def _read(self, request):
        """(samples [N, *input_shape] in the model's dtype, whether the request sent one sample,
        whether it sent a raw tensor: the answer comes back the same way)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body = await request.body()
        if content_type == "application/json":
            try:
                x = wire.json_to_tensor(json.loads(body))
            except json.JSONDecodeError as e:
                raise wire.WireError(f"the body is not JSON: {e}") from None
        elif content_type == wire.RAW_TYPE:
            x = wire.raw_to_tensor(body, request.headers)
            if x.dtype not in (torch.float32, self.dtype):
                raise wire.WireError(f"this model takes float32 or {wire.DTYPE_NAMES[self.dtype]}, not {x.dtype}")
        else:
            raise UnsupportedType(f"Content-Type {content_type or 'missing'}: send application/json or {wire.RAW_TYPE}")
        single = tuple(x.shape) == self.sample_shape
        if single:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.sample_shape or not 1 <= x.shape[0] <= self.max_samples:
            raise wire.WireError(f"inputs of shape {list(x.shape)}: this model takes one sample of shape "
                                 f"{list(self.sample_shape)} or 1 to {self.max_samples} of them, "
                                 f"[N, {', '.join(map(str, self.sample_shape))}]")
        return x.to(self.dtype), single, content_type == wire.RAW_TYPE

    async def __call__(self, request: Request):
        if request.method == "GET":
            return JSONResponse(self.info)
        if request.method != "POST":
            return error(405, f"{request.method} is not served: POST a tensor, GET the model's description")
        try:
            x, single, raw = await self._read(request)
        except UnsupportedType as e:
            return error(415, str(e))
        except wire.WireError as e:
            return error(400, str(e))
        try:
            y, shared_with = await self._infer(x)
        except Exception as e:  # noqa: BLE001  (the client gets the reason, the replica lives on)
            return error(500, f"the model failed: {type(e).__name__}: {e}")
        y = y[0] if single else y
        served_by = {"X-Replica": self.info["replica"], "X-Batch-Requests": str(shared_with)}
        if raw:
            body, headers = wire.tensor_to_raw(y)
            return Response(body, headers={**headers, **served_by}, media_type=wire.RAW_TYPE)
        return JSONResponse(wire.tensor_to_json(y), headers=served_by)


def has_request_format(path):
    """Whether a TorchScript file (a zip archive) carries prepare.py's serve.json."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith(f"/extra/{wire.META_FILE}") for name in z.namelist())
    except zipfile.BadZipFile:
        raise ValueError(f"model {path} is not a TorchScript file (torch.jit.save writes a zip archive)") from None


def available_cores():
    """The cluster's CPUs when this process is connected to Ray, else this machine's."""
    import ray
    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", os.cpu_count()))
    return os.cpu_count()


def build(args):
    """The application of serve run's key=value arguments (module docstring)."""
    known = {"model", "replicas", "threads", "cores", "max_batch_size", "batch_wait_ms", "max_samples",
             "health_check_s", "input_shape", "input_dtype"}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)}; known: {sorted(known)}")
    if "model" not in args:
        raise ValueError("model=PATH is required (a file from examples/serve/prepare.py)")
    model = os.path.abspath(args["model"])
    if not os.path.isfile(model):
        raise ValueError(f"model {model} not found (on a cluster the file must exist on every node)")
    replicas = int(args.get("replicas", 1))
    cores = int(args.get("cores", available_cores()))
    threads = int(args.get("threads", max(1, cores // replicas)))
    if replicas < 1 or threads < 1 or replicas * threads > cores:
        raise ValueError(f"{replicas} replicas x {threads} threads on {cores} cores: "
                         "replicas x threads must be at most the cores")
    max_batch_size = int(args.get("max_batch_size", 8))
    shape = args.get("input_shape")
    if isinstance(shape, str):
        shape = [int(d) for d in shape.split(",")]
    if shape is None and not has_request_format(model):  # say so here, not in a replica's crash loop
        raise ValueError(no_request_format(model))
    deployment = FusedModel.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=2 * max_batch_size,  # the next batch gathers while one runs
        health_check_period_s=float(args.get("health_check_s", 10)))
    return deployment.bind(model, threads, max_batch_size, float(args.get("batch_wait_ms", 5)) / 1000,
                           int(args.get("max_samples", 64)), shape, args.get("input_dtype"))

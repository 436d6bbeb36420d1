"""How tensors travel over HTTP between examples/serve/app.py and its clients.

JSON:  request  {"inputs": <nested list of numbers>}
       response {"outputs": <nested list>, "shape": [...], "dtype": "float32"}
Raw:   request  body = the tensor's bytes (C order, little endian), headers X-Shape: "2,3,64,64"
                and X-Dtype: float32 | bfloat16 (float32 when absent),
                Content-Type: application/octet-stream
       response the same, in the model's output dtype (bfloat16 stays bfloat16: no rounding).

Errors raise WireError with a message meant for the person who sent the request.
"""
import math
import sys

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
RAW_TYPE = "application/octet-stream"
# What a served file says about its requests (input_shape per sample, input_dtype): a JSON file
# inside the TorchScript archive (torch.jit.save's _extra_files), written by prepare.py.
META_FILE = "serve.json"


class WireError(ValueError):
    """A request the server cannot read; the message says what to change."""


def dtype_named(name):
    try:
        return DTYPES[name]
    except KeyError:
        raise WireError(f"X-Dtype {name!r} is not one of {sorted(DTYPES)}") from None


def tensor_to_raw(t):
    """(body, headers) of a tensor in the raw format."""
    if t.dtype not in DTYPE_NAMES:
        raise WireError(f"dtype {t.dtype} cannot travel raw; use one of {sorted(DTYPES)}")
    data = t.detach().contiguous().view(torch.uint8).numpy().tobytes()
    assert sys.byteorder == "little", "the raw format is little endian"
    return data, {"Content-Type": RAW_TYPE, "X-Shape": ",".join(map(str, t.shape)),
                  "X-Dtype": DTYPE_NAMES[t.dtype]}


def raw_to_tensor(body, headers):
    """The tensor a raw request or response carries; `headers` is any case-insensitive mapping
    (starlette's, requests')."""
    shape_text = headers.get("x-shape")
    if shape_text is None:
        raise WireError("a raw tensor needs an X-Shape header, e.g. 'X-Shape: 1,3,64,64'")
    try:
        shape = [int(d) for d in shape_text.split(",")]
    except ValueError:
        raise WireError(f"X-Shape {shape_text!r} is not comma-separated integers") from None
    if any(d < 0 for d in shape):
        raise WireError(f"X-Shape {shape_text!r} has a negative size")
    dtype = dtype_named(headers.get("x-dtype", "float32"))
    expected = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if len(body) != expected:
        raise WireError(f"the body has {len(body)} bytes; X-Shape {shape_text} of "
                        f"{DTYPE_NAMES[dtype]} needs {expected}")
    if expected == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(body), dtype=dtype).reshape(shape)


def json_to_tensor(obj):
    """The float32 tensor of a JSON request's "inputs"."""
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise WireError('the JSON body must be an object with an "inputs" field: {"inputs": [[...]]}')
    try:
        return torch.tensor(obj["inputs"], dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise WireError(f'"inputs" must be a rectangular nested list of numbers ({e})') from None


def tensor_to_json(t):
    out = t.detach().float()  # bfloat16 -> float32 is exact
    return {"outputs": out.tolist(), "shape": list(out.shape), "dtype": DTYPE_NAMES.get(t.dtype, str(t.dtype))}


def json_to_output(obj):
    """The tensor of a JSON response, in the dtype it names."""
    return torch.tensor(obj["outputs"], dtype=torch.float32).reshape(obj["shape"]).to(DTYPES[obj["dtype"]])

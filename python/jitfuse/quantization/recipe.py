"""The recipe: QuantConf, its JSON file (format in the package's docstring) and what a file must
hold to be used (QuantConfError names the file and the field)."""
import json
import math
import os

import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
KINDS = ("conv2d", "linear", "bmm", "matmul", "add", "max_pool2d")
ACTIVATIONS = ("static", "dynamic")
_ACTIVATION = {"dtype": "uint8", "qscheme": "per_tensor_affine"}
_WEIGHT_SCHEME = {"dtype": "int8", "qscheme": "per_channel_symmetric"}
_V1_WEIGHT = dict(_WEIGHT_SCHEME, quant_min=-63, quant_max=63)
DEFAULT_ALPHA = 0.5
SCALE_RANGE = (1e-12, 1e12)  # what an observer gives for float32 activations; outside: a broken file


class QuantConfError(ValueError):
    """A recipe that cannot be used: names the file and the field."""


def native_weight_bits():
    """8 where oneDNN computes full int8 weights exactly on this CPU (VNNI, AMX), else 7."""
    return int(torch.ops.jitfuse._int8_weight_bits())



class QuantConf:
    """Quantization settings and observed statistics: QuantConf(dtype=torch.int8) for a first
    calibration, QuantConf("int8_conf.json") to re-use a saved recipe."""

    def __init__(self, path=None, dtype=torch.int8, observer="minmax", weight_bits=None):
        if dtype != torch.int8:
            raise ValueError(f"QuantConf: only dtype=torch.int8 is supported, got {dtype}")
        if not isinstance(observer, str) or observer not in OBSERVERS:
            raise ValueError(f"QuantConf: observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
        if weight_bits not in (None, 7, 8):
            raise ValueError(f"QuantConf: weight_bits must be 7 or 8, got {weight_bits!r}")
        self.path = None
        self.observer = observer
        self.weight_bits = weight_bits or native_weight_bits()
        self.ops = {}  # name -> {"kind", "recipe", "activation", "inputs", ["smooth"], ["fallback"]}
        self._observers = {}  # (name, input index) -> torch.ao observer, while calibrating
        self._channel_observers = {}  # name -> per input channel min / max (smoothed linears)
        self._calibrating = False
        if path is not None:
            self.path = os.fspath(path)
            _load(self, self.path)

    def save(self, path, default_recipe=True):
        """Write the recipe as JSON. default_recipe=True keeps the int8/fp32 choice the flow made
        for each op (an add whose operand nothing else quantizes stays fp32); False marks every
        op int8."""
        if not self.ops or any(not e["inputs"] for e in self.ops.values()):
            raise QuantConfError("QuantConf.save: nothing observed yet: run the model under "
                                 "quantization.calibrate(conf) first")
        ops = {}
        for name, e in self.ops.items():
            entry = {k: v for k, v in e.items() if not k.startswith("_")}
            if not default_recipe:
                entry["recipe"] = "int8"
                entry.pop("fallback", None)
            ops[name] = entry
        doc = {"version": FORMAT_VERSION, "dtype": "int8", "observer": self.observer,
               "activation": _ACTIVATION, "weight": dict(_WEIGHT_SCHEME, bits=self.weight_bits), "ops": ops}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)

    def _collect(self):
        """Observed statistics -> quantization parameters of each op input."""
        for name, entry in self.ops.items():
            inputs = []
            for i in range(entry["num_inputs"] if "num_inputs" in entry else len(entry["inputs"])):
                obs = self._observers.get((name, i))
                if obs is None or not torch.isfinite(obs.min_val).item():
                    break  # never ran: this op stays unobserved
                scale, zero_point = obs.calculate_qparams()
                inputs.append({"scale": float(scale), "zero_point": int(zero_point),
                               "min": float(obs.min_val), "max": float(obs.max_val)})
            else:
                entry["inputs"] = inputs
                entry.pop("num_inputs", None)
                channels = self._channel_observers.get(name)
                observed = channels is not None and channels.min_val.numel() > 0  # an empty range until it runs
                if "smooth" in entry and observed and torch.isfinite(channels.min_val).all():
                    channel_max = torch.maximum(channels.max_val, -channels.min_val)  # absolute maxima
                    entry["smooth"]["channel_max"] = [float(v) for v in channel_max]


def _load(conf, path):
    def fail(field, why):
        raise QuantConfError(f"QuantConf {path}: field '{field}': {why}" if field else f"QuantConf {path}: {why}")

    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        fail("", f"cannot read the file ({e.strerror})")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        fail("", f"not a valid JSON file ({e})")
    if not isinstance(doc, dict):
        fail("", f"expected a JSON object at the top level, got {type(doc).__name__}")
    if "version" not in doc:
        fail("version", "missing")
    version = doc["version"]
    if isinstance(version, bool) or version not in READS_VERSIONS:
        fail("version", f"unknown version {version!r} (this jitfuse reads versions {', '.join(map(str, READS_VERSIONS))})")
    if doc.get("dtype", "int8") != "int8":
        fail("dtype", f"expected \"int8\", got {doc['dtype']!r}")
    observer = doc.get("observer", "minmax")
    if not isinstance(observer, str) or observer not in OBSERVERS:
        fail("observer", f"expected one of {sorted(OBSERVERS)}, got {observer!r}")
    if "activation" in doc and doc["activation"] != _ACTIVATION:
        fail("activation", f"expected {json.dumps(_ACTIVATION)}, got {json.dumps(doc['activation'])}")
    if version == 1:
        if "weight" in doc and doc["weight"] != _V1_WEIGHT:
            fail("weight", f"expected {json.dumps(_V1_WEIGHT)}, got {json.dumps(doc['weight'])}")
        bits = 7
    else:
        w = doc.get("weight")
        if not isinstance(w, dict) or {k: v for k, v in w.items() if k != "bits"} != _WEIGHT_SCHEME:
            fail("weight", f"expected {json.dumps(dict(_WEIGHT_SCHEME, bits=8))} (bits 7 or 8), got {json.dumps(w)}")
        bits = w.get("bits")
        if isinstance(bits, bool) or bits not in (7, 8):
            fail("weight.bits", f"expected 7 or 8, got {bits!r}")
    ops = doc.get("ops")
    if not isinstance(ops, dict):
        fail("ops", "missing or not an object")
    conf.observer, conf.weight_bits = observer, bits
    for op_name, entry in ops.items():
        where = f"ops.{op_name}"
        if not isinstance(entry, dict):
            fail(where, "expected an object")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            fail(f"{where}.kind", f"expected one of {list(KINDS)}, got {kind!r}")
        if not isinstance(entry.get("recipe"), str) or entry["recipe"] not in ("int8", "fp32"):
            fail(f"{where}.recipe", f"expected \"int8\" or \"fp32\", got {entry.get('recipe')!r}")
        activation = entry.get("activation", "static")
        if version == 1 and "activation" in entry:
            fail(f"{where}.activation", "not a version 1 field")
        if activation not in ACTIVATIONS or (activation == "dynamic" and kind != "linear"):
            allowed = '"static" or "dynamic"' if kind == "linear" else '"static"'
            fail(f"{where}.activation", f"expected {allowed}, got {activation!r}")
        inputs = entry.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != _num_inputs(kind):
            fail(f"{where}.inputs", f"expected a list of {_num_inputs(kind)} input(s)")
        for i, q in enumerate(inputs):
            at = f"{where}.inputs[{i}]"
            if not isinstance(q, dict):
                fail(at, "expected an object")
            s = _number(q.get("scale"))
            if s is None or not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
                fail(f"{at}.scale", f"expected a number in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}], got {q.get('scale')!r}")
            zp = q.get("zero_point")
            if isinstance(zp, bool) or not isinstance(zp, int) or not 0 <= zp <= 255:
                fail(f"{at}.zero_point", f"expected an integer in [0, 255], got {zp!r}")
            for bound in ("min", "max"):
                if bound in q and _number(q[bound]) is None:
                    fail(f"{at}.{bound}", f"expected a finite number, got {q[bound]!r}")
        parsed = {"kind": kind, "recipe": entry["recipe"], "activation": activation,
                  "inputs": [{"scale": float(q["scale"]), "zero_point": q["zero_point"],
                              **{k: float(q[k]) for k in ("min", "max") if k in q}} for q in inputs]}
        if "smooth" in entry:
            parsed["smooth"] = _smooth_entry(entry["smooth"], kind, f"{where}.smooth", fail)
        if "fallback" in entry:
            if not isinstance(entry["fallback"], str):
                fail(f"{where}.fallback", f"expected a string, got {entry['fallback']!r}")
            parsed["fallback"] = entry["fallback"]
        conf.ops[op_name] = parsed


def _smooth_entry(smooth, kind, where, fail):
    if kind != "linear":
        fail(where, "smoothing applies to linears only")
    if not isinstance(smooth, dict):
        fail(where, "expected an object")
    alpha = _number(smooth.get("alpha"))
    if alpha is None or not 0.0 <= alpha <= 1.0:
        fail(f"{where}.alpha", f"expected a number in [0, 1], got {smooth.get('alpha')!r}")
    out = {"alpha": alpha}
    if "channel_max" in smooth:
        cm = smooth["channel_max"]
        if not isinstance(cm, list) or not cm or any(_number(v) is None or v < 0 for v in cm):
            fail(f"{where}.channel_max", "expected a list of non-negative numbers, one per input channel")
        out["channel_max"] = [float(v) for v in cm]
    return out


def _number(v):
    """`v` as a finite float, or None (bools, strings, NaN, infinities, ints beyond float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _num_inputs(kind):
    return 2 if kind in ("bmm", "matmul") else 1

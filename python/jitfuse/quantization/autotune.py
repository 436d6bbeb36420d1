"""autotune: keep the fewest, most sensitive ops in fp32 until a score holds."""
import copy

import torch

from .convert import convert
from .observe import calibrate, prepare


def autotune(model, conf, calib_inputs, evaluate, tolerance, sample_input=None):
    """Keep the fewest, most sensitive ops in fp32 until `evaluate` holds.

    `evaluate(module) -> float` scores a module (higher is better: accuracy, cosine to a
    reference, ...); the int8 module must score at least evaluate(fp32 model) - `tolerance`.
    `conf` holds a recipe (calibrated, or loaded); `calib_inputs` is a list of input tuples (or
    tensors) that calibrate it when it has none yet. Each int8 op is scored alone in fp32, then
    the most sensitive ones are put back in float, one at a time, until the score holds. The
    choice is written into `conf` ("recipe": "fp32" with a "fallback" reason). Returns
    (int8 module, conf); raises ValueError if even every op in fp32 misses.
    """
    inputs = [x if isinstance(x, tuple) else (x,) for x in calib_inputs]
    if not inputs:
        raise ValueError("autotune: calib_inputs is empty")
    sample = sample_input if sample_input is not None else inputs[0]
    sample = sample if isinstance(sample, tuple) else (sample,)
    if not conf.ops or any(not e["inputs"] for e in conf.ops.values()):
        prepared, conf = prepare(model, conf)
        with torch.no_grad():
            for x in inputs:
                with calibrate(conf):
                    prepared(*x)
    with torch.no_grad():
        target = float(evaluate(model)) - tolerance
        qmodel = convert(model, conf, sample)
        score = float(evaluate(qmodel))
    if score >= target:
        return qmodel, conf
    candidates = [name for name, e in conf.ops.items() if e["recipe"] == "int8"]
    gains = {}
    for name in candidates:
        trial = copy.deepcopy(conf)
        trial.ops[name]["recipe"] = "fp32"
        with torch.no_grad():
            gains[name] = float(evaluate(convert(model, trial, sample)))
    for name in sorted(candidates, key=lambda n: -gains[n]):
        conf.ops[name]["recipe"] = "fp32"
        conf.ops[name]["fallback"] = (f"autotune: int8 score {score:.6g} < target {target:.6g}; "
                                      f"this op alone in fp32 scores {gains[name]:.6g}")
        with torch.no_grad():
            qmodel = convert(model, conf, sample)
            score = float(evaluate(qmodel))
        if score >= target:
            return qmodel, conf
    raise ValueError(f"autotune: score {score:.6g} misses the target {target:.6g} even with every op in fp32")

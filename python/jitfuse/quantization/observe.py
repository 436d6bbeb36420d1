"""prepare and calibrate: observers on the inputs of the quantizable ops (torch.ao's), recording
into a QuantConf."""
import contextlib

import torch
import torch.nn as nn
from torch.ao.quantization.observer import PerChannelMinMaxObserver

from .graph import _default_entries, _graph_module, _quantizable_ops
from .recipe import OBSERVERS


class _Observe(nn.Module):
    """Passes a tensor through; under quantization.calibrate(conf) its observer records it (and,
    for a smoothed linear, its per-channel observer the range of each input channel)."""

    def __init__(self, conf, key):
        super().__init__()
        self.conf, self.key = conf, key

    def forward(self, x):
        if self.conf._calibrating:
            x32 = x.detach().float()
            self.conf._observers[self.key](x32)
            channels = self.conf._channel_observers.get(self.key[0])
            if channels is not None:
                channels(x32)
        return x


def _new_observer(conf):
    return OBSERVERS[conf.observer](dtype=torch.quint8, qscheme=torch.per_tensor_affine)


def _new_channel_observer():
    """Min and max per input channel (the last dim): SmoothQuant's activation maxima."""
    return PerChannelMinMaxObserver(ch_axis=-1, dtype=torch.quint8, qscheme=torch.per_channel_affine)


class _Prepared(nn.Module):
    """What prepare returns: `model` with observers, traced at its first call (when the number of
    inputs is known)."""

    def __init__(self, model, conf):
        super().__init__()
        self._jitfuse_source, self.conf, self.observed = model, conf, None

    def forward(self, *inputs):
        if self.observed is None:
            self.observed = _observed(self._jitfuse_source, self.conf, len(inputs))
        return self.observed(*inputs)


def prepare(model, conf):
    """`model` with observers on the inputs of its quantizable ops; they record what runs under
    calibrate(conf). Returns (prepared model, conf)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"jitfuse.quantization.prepare: expected an nn.Module, got {type(model).__name__}")
    conf.ops, conf._observers, conf._channel_observers = {}, {}, {}
    return _Prepared(getattr(model, "_jitfuse_source", model), conf), conf


def _observed(model, conf, num_inputs):
    gm = _graph_module(model, num_inputs)
    ops = _quantizable_ops(gm)
    defaults = _default_entries(ops)
    conf._observers, conf._channel_observers, conf.ops = {}, {}, {}
    for op in ops:
        conf.ops[op.name] = dict(defaults[op.name], inputs=[], num_inputs=len(op.inputs))
        if "smooth" in defaults[op.name]:
            conf._channel_observers[op.name] = _new_channel_observer()
        for i, x in enumerate(op.inputs):
            key = (op.name, i)
            conf._observers[key] = _new_observer(conf)
            attr = f"_jitfuse_observe_{len(conf._observers)}"
            gm.add_module(attr, _Observe(conf, key))
            with gm.graph.inserting_before(op.node):
                observed = gm.graph.call_module(attr, (x,))
            op.node.replace_input_with(x, observed)
    gm.recompile()
    return gm


@contextlib.contextmanager
def calibrate(conf):
    """Within this block, calls of a prepared model record statistics into `conf`."""
    conf._calibrating = True
    try:
        yield conf
    finally:
        conf._calibrating = False
        conf._collect()

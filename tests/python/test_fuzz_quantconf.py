"""Fuzzed recipe files: hypothesis mutates a valid QuantConf JSON (truncation, wrong types,
missing and extra keys, NaN / negative / huge scales, unknown op names, huge numbers). Every case
either loads a valid conf that converts to a working int8 module, or raises QuantConfError
naming the file and the field; nothing else escapes, and the user's model is never modified."""
import copy
import json
import os
import tempfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitfuse import QuantConf, quantization
from jitfuse.quantization import QuantConfError


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(16, 8)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = F.max_pool2d(y + y, 2).flatten(2)
        return torch.bmm(self.fc(y), self.fc(y).transpose(1, 2))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Small().eval()
    prepared, conf = quantization.prepare(model, QuantConf())
    with torch.no_grad():
        for _ in range(3):
            with quantization.calibrate(conf):
                prepared(torch.randn(2, 3, 8, 8))
    folder = tempfile.mkdtemp()
    conf.save(os.path.join(folder, "valid.json"))
    with open(os.path.join(folder, "valid.json")) as f:
        return model, json.load(f), folder


ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1.0, 0.0, 1e-300, 1e308, 255, 256, -1]),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def paths(doc, prefix=()):
    """Every path to a value in the document."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, prefix + (i,))
    return out


def parent(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutations(draw, doc):
    doc = copy.deepcopy(doc)
    kind = draw(st.sampled_from(["truncate", "replace", "delete", "add", "rename_op", "several"]))
    steps = draw(st.integers(2, 4)) if kind == "several" else 1
    for _ in range(steps):
        k = kind if kind != "several" else draw(st.sampled_from(["replace", "delete", "add", "rename_op"]))
        all_paths = paths(doc)
        if k == "replace" and all_paths:
            p = draw(st.sampled_from(all_paths))
            parent(doc, p)[p[-1]] = draw(ODD_VALUES)
        elif k == "delete" and all_paths:
            p = draw(st.sampled_from(all_paths))
            del parent(doc, p)[p[-1]]
        elif k == "add":
            dicts = [p for p in all_paths if isinstance(parent(doc, p + ("x",)), dict)] + [()]
            p = draw(st.sampled_from(dicts))
            target = parent(doc, p + ("x",)) if p else doc
            target[draw(st.text(min_size=1, max_size=6))] = draw(ODD_VALUES)
        elif k == "rename_op" and isinstance(doc.get("ops"), dict) and doc["ops"]:
            old = draw(st.sampled_from(sorted(doc["ops"])))
            doc["ops"][draw(st.text(min_size=1, max_size=12))] = doc["ops"].pop(old)
    text = json.dumps(doc, allow_nan=True)
    if kind == "truncate":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    return text


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_recipe_loads_or_fails_clearly(setup, data):
    model, valid, folder = setup
    text = data.draw(mutations(valid))
    path = os.path.join(folder, "mutated_recipe.json")
    with open(path, "w") as f:
        f.write(text)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    try:
        conf = QuantConf(path)
        qmodel = quantization.convert(model, conf, x)
    except QuantConfError as e:
        assert "mutated_recipe.json" in str(e), str(e)
        assert "field '" in str(e) or "JSON" in str(e) or "top level" in str(e), str(e)
    else:
        with torch.no_grad():
            for _ in range(3):
                out = qmodel(x)
        assert out.shape == (2, 4, 4)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items()), "the model was modified"

"""Every pattern row's name is its op's name, but for the families the README lists under
"Names that differ"; this holds each row against the op its replacement calls."""
import re
from pathlib import Path

import torch

import jitfuse  # noqa: F401  (loads the ops)

README = Path(__file__).resolve().parents[2] / "README.md"
# int8 rows: dequant_<core><tail>[_quant | _dequant] calls jitfuse::q<core op><tail>.
INT8_CORES = {"conv": "conv2d", "linear": "linear", "bmm": "bmm", "max_pool2d": "max_pool2d"}
INT8_ROW = re.compile(r"dequant_(conv|linear|bmm|max_pool2d)(_[a-z_]*)?$")


def expected_op(name):
    if name == "matmul_bf16":
        return "matmul"
    int8 = INT8_ROW.match(name)
    if int8:
        tail = re.sub(r"_(quant|dequant)$", "", int8.group(2) or "")
        return "q" + INT8_CORES[int8.group(1)] + tail
    return name


def test_every_row_calls_the_op_its_name_says():
    rows = torch.ops.jitfuse._pattern_ops()
    assert len(rows) > 100
    wrong = {(name, op) for name, op in rows if op != "jitfuse::" + expected_op(name)}
    assert not wrong


def test_the_readme_lists_the_names_that_differ():
    text = README.read_text()
    section = text[text.index("Names that differ"):][:1500]
    names = {name for name, _ in torch.ops.jitfuse._pattern_ops() if expected_op(name) != name}
    assert "matmul_bf16" in names and any(n.startswith("dequant_") for n in names)
    assert "`matmul_bf16`" in section and "`dequant_<core><tail>" in section
    for own in torch.ops.jitfuse._pattern_names():  # patterns applied by a pass's own code
        if own not in {name for name, _ in torch.ops.jitfuse._pattern_ops()}:
            assert f"`{own}`" in section, own

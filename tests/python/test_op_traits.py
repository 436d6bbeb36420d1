"""ops/traits.h against the registered schemas: what the passes take for granted about jitfuse's
ops holds for the ops as they are defined."""
import torch

import jitfuse  # noqa: F401  (registers the ops)


def jitfuse_schemas():
    return {s.name: s for s in torch._C._jit_get_all_schemas() if s.name.startswith("jitfuse::")}


def writes(argument):
    return argument.alias_info is not None and argument.alias_info.is_write


def test_every_in_place_twin_is_its_op_writing_into_other():
    schemas = jitfuse_schemas()
    twins = torch.ops.jitfuse._in_place_twins()
    assert twins
    for out_of_place, in_place in twins:
        a, b = schemas[out_of_place], schemas[in_place]
        assert [(x.name, str(x.type)) for x in a.arguments] == [(x.name, str(x.type)) for x in b.arguments], in_place
        assert [x.name for x in b.arguments if writes(x)] == ["other"], in_place
        assert not any(writes(x) for x in a.arguments), out_of_place
        other = next(x for x in b.arguments if x.name == "other")
        assert b.returns[0].alias_info is not None and b.returns[0].alias_info.before_set == other.alias_info.before_set


def test_every_writes_into_twin_is_its_in_place_op_returning_nothing():
    # jitfuse.fx writes the in-place op as this twin and takes the written argument as its result.
    schemas = jitfuse_schemas()
    twins = torch.ops.jitfuse._writes_into_twins()
    assert {in_place for in_place, _ in twins} == {in_place for _, in_place in torch.ops.jitfuse._in_place_twins()}
    for in_place, into in twins:
        a, b = schemas[in_place], schemas[into]
        assert [(x.name, str(x.type), writes(x)) for x in a.arguments] == \
            [(x.name, str(x.type), writes(x)) for x in b.arguments], into
        assert not b.returns, into


def test_every_op_that_writes_into_an_argument_is_a_twin_in_the_table():
    # One the tables missed would never be chosen by the pass or spelled by jitfuse.fx (and one
    # they name must exist).
    writers = {name for name, s in jitfuse_schemas().items() if any(writes(a) for a in s.arguments)}
    assert writers == ({in_place for _, in_place in torch.ops.jitfuse._in_place_twins()} |
                       {into for _, into in torch.ops.jitfuse._writes_into_twins()})


def conv_arguments(schema, dims):
    """Arguments for a fused conv op by its schema's names: a 16-channel channels_last input."""
    spatial = [6] * dims
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    x = torch.randn(1, 16, *spatial).contiguous(memory_format=fmt)
    out_shape = (1, 16, *spatial)
    values = {
        "input": x, "weight": torch.randn(16, 16, *([3] * dims)), "bias": torch.randn(16),
        "stride": [1] * dims, "padding": [1] * dims, "dilation": [1] * dims, "groups": 1,
        "other": torch.randn(out_shape).contiguous(memory_format=fmt), "alpha": 1.0, "min_val": 0.0, "max_val": 6.0,
    }
    return [values[a.name] for a in schema.arguments]


def test_every_fused_conv_computes_in_channels_last_as_the_table_says():
    # A conv op missing from the table would keep its NCHW input and pay a reorder per call; one
    # that did not return channels_last for a channels_last input would send NCHW to the next op,
    # which the pass then leaves unconverted (right results, a reorder in every call).
    schemas = jitfuse_schemas()
    listed = set(torch.ops.jitfuse._channels_last_ops())
    convs = {name for name in schemas if name.startswith(("jitfuse::conv2d", "jitfuse::conv3d"))}
    assert listed == convs
    for name in sorted(listed):
        dims = 2 if name.startswith("jitfuse::conv2d") else 3
        op = getattr(torch.ops.jitfuse, name.split("::")[1])
        out = op(*conv_arguments(schemas[name], dims))
        fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
        assert out.is_contiguous(memory_format=fmt) and not out.is_contiguous(), name


def test_ops_said_to_keep_a_layout_keep_it():
    schemas = jitfuse_schemas()
    follows = torch.ops.jitfuse._layout_follows()
    assert follows
    for name, argument in follows:
        assert argument in [a.name for a in schemas[name].arguments], name
    x = torch.randn(1, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    assert torch.ops.jitfuse.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False).is_contiguous(
        memory_format=torch.channels_last)

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


def test_every_op_that_writes_into_an_argument_is_a_twin_in_the_table():
    # One the table missed would never be chosen by the pass (and one it names must exist).
    writers = {name for name, s in jitfuse_schemas().items() if any(writes(a) for a in s.arguments)}
    assert writers == {in_place for _, in_place in torch.ops.jitfuse._in_place_twins()}

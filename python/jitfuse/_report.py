"""jitfuse.report: why a model did or did not fuse. The work is in C++ (passes/report.cpp,
jitfuse::report); this wraps its entries as plain dicts that print as a table."""
import torch

FIELDS = ("status", "pattern", "op", "node", "location", "reason", "fused_as", "replaced")


class FusionReport(list):
    """A list of dicts, one per entry (keys: FIELDS; "replaced" is a list), that prints as the
    report's table. status is "fused", "rejected", "left" (no pattern's shape fits the op) or
    "note"."""

    def __init__(self, entries, table):
        super().__init__(entries)
        self.table = table

    def __str__(self):
        return self.table

    def fused(self):
        return [e for e in self if e["status"] == "fused"]

    def rejected(self):
        return [e for e in self if e["status"] == "rejected"]

    def left(self):
        return [e for e in self if e["status"] == "left"]

    def notes(self):
        return [e["reason"] for e in self if e["status"] == "note"]


def report(module, *inputs) -> FusionReport:
    """Runs jitfuse's passes on a copy of `module` (a traced or scripted module, frozen or not
    yet frozen), called twice with `inputs` as TorchScript's executor would at the first calls,
    and says for every node a pattern could start from which pattern took it, or for each
    pattern whose shape fit, the first rule that refused it. `module` is not changed.
    Without TorchScript, `module` may be a torch.export program, a torch.compile'd module or an
    eager one: the report is then that of the FX front-end (jitfuse.fx), on the model's ATen graph
    with its weights as constants. print() the result for the table; iterate it for the entries."""
    if isinstance(module, torch.jit.ScriptModule):
        table, entries = torch.ops.jitfuse._report(module._c, list(inputs))
    elif isinstance(module, (torch.nn.Module, torch.export.ExportedProgram)):
        from jitfuse import fx
        table, entries = fx.report(module, inputs)
    else:
        raise TypeError(f"jitfuse.report: expected a TorchScript module, a torch.export program or an "
                        f"nn.Module, got {type(module).__name__}")
    rows = []
    for e in entries:
        row = {k: e[k] for k in FIELDS}
        row["replaced"] = row["replaced"].split(", ") if row["replaced"] else []
        rows.append(row)
    return FusionReport(rows, table)

// Why a row did not fuse: a second matcher that finds where a row's shape fits the graph, whoever
// else reads the values inside it and whatever its filters say, and names the row's first
// objection. It runs only while a report is made or JITFUSE_VERBOSE=2 prints refusals.
#pragma once

#include <torch/csrc/jit/ir/ir.h>

#include <vector>

#include "passes/recorder.h"
#include "passes/rewrite.h"

namespace jitfuse {

// Every shape match of `row` in `graph`, each with the row's first objection: an inner value
// read outside the pattern (a fused op would not produce it), else the first refusing filter
// (its reason with the {name...} forms filled in).
std::vector<ShapeMatch> shape_matches(torch::jit::Graph& graph, const Rewrite& row);

}  // namespace jitfuse

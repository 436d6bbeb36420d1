// How the fusion report names graph nodes and values for a user: where a node comes from in the
// user's code, and what a value is (its origin, type, constant).
#pragma once

#include <torch/csrc/jit/ir/ir.h>

#include <string>

namespace jitfuse {

// Where a node comes from: the module path (traced: block.conv; scripted: from the inlined
// calls) and the first source line outside torch's own files, as far as TorchScript kept them.
std::string location(const torch::jit::Node* n);
// "aten::linear %x.3": the node's kind and first output.
std::string describe_node(const torch::jit::Node* n);
// "%x (a graph input, float64 [2, 3])"-style pieces for a value, as a filter reason's
// {name:origin}, {name:type} and {name:value} forms say (rewrite.h).
std::string value_origin(const torch::jit::Value* v);
std::string value_type(const torch::jit::Value* v);
std::string value_constant(const torch::jit::Value* v);

}  // namespace jitfuse

// Pattern tables: a fusion is a named row (pattern IR, replacement IR, filters) applied with
// torch::jit::SubgraphRewriter. Shared by every fusion family in passes/.
#pragma once

#include <torch/csrc/jit/ir/subgraph_matcher.h>
#include <torch/csrc/jit/passes/subgraph_rewrite.h>

#include <optional>
#include <string>
#include <vector>

#include "passes/passes.h"

namespace jitfuse {

using torch::jit::Match;
using torch::jit::Value;
using ValueMap = std::unordered_map<std::string, Value*>;
using Filter = std::function<bool(const Match&, const ValueMap&)>;

struct Rewrite {
  std::string name;         // pattern name: op name, JITFUSE_DISABLE entry, test row
  std::string pattern;      // IR of the subgraph to find
  std::string replacement;  // IR of what replaces it
  std::vector<Filter> filters;  // every one must accept the match
};

// Applies each enabled row in order; JITFUSE_VERBOSE=1 prints one line per rewrite.
void apply_rewrites(GraphPtr& graph, const std::vector<Rewrite>& rewrites);

// An IR graph from its input list, statements (one per line) and returned value.
std::string graph_ir(const std::string& inputs, const std::string& statements,
                     const std::string& output);

// Expands "{_}" into both the out-of-place and the in-place spelling of an op
// ("aten::relu{_}" -> "aten::relu", "aten::relu_"), every combination.
std::vector<std::string> inplace_variants(const std::string& ir);

// The pattern tables of the fusion families (one file each in passes/).
const std::vector<Rewrite>& conv_rewrites();
const std::vector<Rewrite>& linear_rewrites();
const std::vector<Rewrite>& transformer_rewrites();
const std::vector<Rewrite>& int8_rewrites();
const std::vector<Rewrite>& pool_rewrites();
// Patterns applied by a pass of their own rather than a table row.
constexpr const char* kLinearX3 = "linear_linear_linear";

// Whether JITFUSE_VERBOSE is set (switches.cpp).
bool verbose();

// A jitfuse::conv2d* / conv3d* node (fused by the conv table, in-place forms included).
bool is_fused_conv(const torch::jit::Node* n);

// For JITFUSE_VERBOSE: one line naming the pattern and the nodes it replaces.
void report_rewrite(const std::string& name, std::vector<torch::jit::Node*> nodes);

// ---- filter helpers: what a match binds, as constants and types ----
Value* bound(const Match& match, const ValueMap& vmap, const std::string& name);
std::optional<torch::jit::IValue> constant(Value* v);
bool is_constant_int_list(Value* v);
bool is_constant_int(Value* v);
bool is_constant_bool(Value* v, bool expected);
bool is_constant_number(Value* v, double expected);  // an int or float constant equal to expected
bool is_constant_scalar(Value* v);                   // an int or float constant
bool alpha_is_one(const Match& m, const ValueMap& v);  // the bound %alpha is the constant 1
// A frozen weight: a constant strided CPU float32/bfloat16 tensor of `rank` dims.
std::optional<at::Tensor> frozen_weight(Value* v, int64_t rank);
// A constant None, or a constant tensor of `weight`'s dtype or float32.
bool is_constant_bias_for(Value* v, const at::Tensor& weight);

}  // namespace jitfuse

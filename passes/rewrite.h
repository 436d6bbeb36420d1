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

// A condition every match must meet, and what the fusion report says when one does not. In the
// reason, {name} stands for the value the pattern bound to %name, {name:origin} for where that
// value comes from (a graph input, a module attribute, a constant, the node that makes it),
// {name:type} for its dtype and shape, {name:value} for the constant it holds.
struct Filter {
  std::function<bool(const Match&, const ValueMap&)> accepts;
  std::string reason;
  // Completes the pattern's shape rather than judging a match (a 3-D conv is not the conv2d
  // rows' shape, a float32 matmul not the bfloat16 row's): where it refuses, the report is silent.
  bool shape = false;
};

struct Rewrite {
  std::string name;         // pattern name: op name, JITFUSE_DISABLE entry, test row
  std::string pattern;      // IR of the subgraph to find
  std::string replacement;  // IR of what replaces it
  std::vector<Filter> filters;  // every one must accept the match, tried in order
  // The pattern value whose node the report files a match under (the conv of conv + relu), so
  // that every row that could take that node is listed with it; "" means the pattern's output.
  std::string lead;
};

// Applies each enabled row in order; JITFUSE_VERBOSE=1 prints one line per rewrite.
void apply_rewrites(GraphPtr& graph, const std::vector<Rewrite>& rewrites);

// An IR graph from its input list, statements (one per line) and returned value.
std::string graph_ir(const std::string& inputs, const std::string& statements,
                     const std::string& output);

// Expands "{_}" into both the out-of-place and the in-place spelling of an op
// ("aten::relu{_}" -> "aten::relu", "aten::relu_"), every combination.
std::vector<std::string> inplace_variants(const std::string& ir);

// One step of optimize_graph: a pass, the pattern table it applies (null for passes with none),
// and the patterns it applies by its own code. driver.cpp lists them once, in the order they run;
// optimize_graph and pattern_names() (the switches, JITFUSE_DISABLE, the report,
// jitfuse.patterns() and the tests that walk it) read that list.
struct Pass {
  const char* name;
  void (*run)(GraphPtr& graph);
  const std::vector<Rewrite>& (*table)();
  std::vector<std::string> own_patterns;
};
const std::vector<Pass>& passes_in_order();

// The pattern tables of the fusion families (one file each in passes/).
const std::vector<Rewrite>& conv_rewrites();
const std::vector<Rewrite>& linear_rewrites();
const std::vector<Rewrite>& transformer_rewrites();
const std::vector<Rewrite>& int8_rewrites();
const std::vector<Rewrite>& pool_rewrites();
// Patterns applied by a pass of their own rather than a table row.
constexpr const char* kLinearX3 = "linear_linear_linear";
// jitfuse::attention between int8 linears, told it may multiply in bf16 (lower_int8_attention).
constexpr const char* kAttentionLowPrecision = "attention_low_precision";

// A jitfuse::conv2d* / conv3d* node (fused by the conv table, in-place forms included).
bool is_fused_conv(const torch::jit::Node* n);

// The position of the argument `name` in the schema of the registered op `kind`. Passes find
// op arguments this way, never by a fixed position: an op whose schema lost the name fails
// here, loudly, rather than being rewritten wrong.
size_t argument_index(c10::Symbol kind, const char* name);

// The op a row's replacement calls first ("jitfuse::conv2d_relu"), for the report.
std::string fused_op_name(const std::string& replacement_ir);

// The graph nodes a match covers, in graph order.
std::vector<torch::jit::Node*> matched_nodes(const Match& match);

// A pass's own fusion (not a table row's) of `nodes` into `op`, filed under `lead`: the verbose
// line and the fusion report's entry, as apply_rewrites makes them for rows. Before the nodes go.
void record_fusion(const std::string& name, const std::string& op, torch::jit::Node* lead,
                   const std::vector<torch::jit::Node*>& nodes);
// For JITFUSE_VERBOSE: one line naming the pattern and the nodes it replaces (or changes).
void report_rewrite(const std::string& name, std::vector<torch::jit::Node*> nodes);

// ---- filter helpers: what a match binds, as constants and types ----
Value* bound(const Match& match, const ValueMap& vmap, const std::string& name);
std::optional<torch::jit::IValue> constant(Value* v);
bool is_constant_int_list(Value* v);
bool is_constant_int(Value* v);
bool is_constant_bool(Value* v, bool expected);
bool is_constant_number(Value* v, double expected);  // an int or float constant equal to expected
bool is_constant_scalar(Value* v);                   // an int or float constant
// Filters shared by several tables.
extern const Filter kAlphaIsOne;              // the bound %alpha is the constant 1
extern const Filter kGeluApproximationKnown;  // %approximate is the constant "none" or "tanh"
extern const Filter kConvGeometryConstant;    // stride, padding, dilation, groups
extern const Filter kConvNotTransposed;       // %transposed, where the spelling has it, is false
extern const Filter kPoolGeometryConstant;    // max_pool2d's kernel_size ... ceil_mode
// The bound %<name> is a constant (a frozen module's weights are): the reason says to freeze.
Filter weight_is_constant(const std::string& name);
// The bound %bias is None or a constant vector of the weight's dtype or float32.
Filter bias_is_constant_for(const std::string& weight);
// The bound %<name> is a constant int or float.
Filter number_is_constant(const std::string& name);
// The bound %<name> is a constant 0-dim tensor (how tracing records a Python number operand):
// floating-point when `floating`, else of any dtype but complex.
Filter number_is_constant_0d_tensor(const std::string& name, bool floating);
// A frozen weight: a constant strided CPU float32/bfloat16 tensor of `rank` dims.
std::optional<at::Tensor> frozen_weight(Value* v, int64_t rank);
// A constant None, or a constant tensor of `weight`'s dtype or float32.
bool is_constant_bias_for(Value* v, const at::Tensor& weight);

}  // namespace jitfuse

// keep_channels_last: oneDNN runs convolutions in NHWC here, so a NCHW tensor would be reordered
// into and out of every conv. Convert the input of each op that computes in channels_last
// (ops/traits.h: the fused convs) once (a no-op when it already is), let NHWC flow between ops,
// and give graph outputs back the user's format.
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/constants.h>

#include "ops/traits.h"
#include "passes/rewrite.h"

namespace jitfuse {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// Tensor values the graph returns, directly or inside a tuple/list it builds for the return.
std::vector<std::pair<Node*, size_t>> output_uses(torch::jit::Graph& graph) {
  std::vector<std::pair<Node*, size_t>> uses;
  Node* ret = graph.return_node();
  for (size_t i = 0; i < ret->inputs().size(); ++i) {
    Value* v = ret->input(i);
    Node* producer = v->node();
    if (producer->kind() == torch::jit::prim::TupleConstruct ||
        producer->kind() == torch::jit::prim::ListConstruct) {
      for (size_t j = 0; j < producer->inputs().size(); ++j)
        uses.emplace_back(producer, j);
    } else {
      uses.emplace_back(ret, i);
    }
  }
  return uses;
}

const c10::Symbol kLikeMemoryFormat = c10::Symbol::fromQualString("jitfuse::like_memory_format");
const c10::Symbol kToChannelsLast = c10::Symbol::fromQualString("jitfuse::to_channels_last");

bool computes_channels_last(const Node* n) { return traits::computes_channels_last(n->kind().toQualString()); }

// Already NHWC by construction: made by an op that computes in channels_last (ops/traits.h), or
// a conversion this pass placed before (a graph fused offline and loaded runs the passes again;
// older files hold aten::contiguous), or by an op that keeps such a layout.
bool is_channels_last_source(const Node* n) {
  if (computes_channels_last(n) || n->kind() == kToChannelsLast) return true;
  if (const auto argument = traits::layout_follows(n->kind().toQualString()); !argument.empty())
    return is_channels_last_source(n->input(argument_index(n->kind(), std::string(argument).c_str()))->node());
  const auto contiguous = c10::Symbol::fromQualString("aten::contiguous");
  if (n->kind() != contiguous) return false;
  auto format = torch::jit::toIValue(n->input(argument_index(contiguous, "memory_format")));
  return format && format->isInt() &&
         (format->toInt() == static_cast<int64_t>(at::MemoryFormat::ChannelsLast) ||
          format->toInt() == static_cast<int64_t>(at::MemoryFormat::ChannelsLast3d));
}

}  // namespace

void keep_channels_last(GraphPtr& graph) {
  Value* user_tensor = nullptr;  // what the first fused conv read, before conversion
  for (Node* n : graph->nodes()) {
    if (!computes_channels_last(n)) continue;
    const size_t input = argument_index(n->kind(), "input");
    if (is_channels_last_source(n->input(input)->node())) continue;
    Value* x = n->input(input);
    if (!user_tensor) user_tensor = x;
    torch::jit::WithInsertPoint guard(n);
    Node* convert = graph->insertNode(graph->create(kToChannelsLast, {x}));
    convert->output()->setType(x->type());
    n->replaceInput(input, convert->output());
  }
  if (!user_tensor) return;
  for (auto [user, index] : output_uses(*graph)) {
    Value* v = user->input(index);
    if (!v->type()->cast<c10::TensorType>() || v->node()->kind() == torch::jit::prim::Param ||
        v->node()->kind() == kLikeMemoryFormat)
      continue;
    torch::jit::WithInsertPoint guard(user);
    Node* restore = graph->create(kLikeMemoryFormat, {v, user_tensor});
    graph->insertNode(restore);
    restore->output()->setType(v->type());
    user->replaceInput(index, restore->output());
  }
}

}  // namespace jitfuse

// sum_in_place: conv{2,3}d_sum[_relu] adds into a copy of its `other` operand. When nothing reads
// `other` afterwards and it is a fresh tensor (made by a fused conv, so no view aliases it), the
// in-place op (`..._sum_`, `..._sum_relu_`) writes the result into it and saves the copy.
#include <torch/csrc/jit/ir/ir.h>

#include "passes/rewrite.h"

namespace jitfuse {
namespace {

using torch::jit::Node;

constexpr size_t kOtherInput = 7;  // conv args: input, weight, bias, stride, padding, dilation, groups

bool is_out_of_place_sum(const Node* n) {
  const std::string kind = n->kind().toQualString();
  return is_fused_conv(n) && (kind.ends_with("_sum") || kind.ends_with("_sum_relu"));
}

// Every other reader of `other` is a fused conv (reads it, returns a new tensor) that runs
// earlier in the same block; `other` itself was made by a fused conv.
bool other_is_dead_after(Node* sum) {
  auto* other = sum->input(kOtherInput);
  if (!is_fused_conv(other->node())) return false;
  for (const auto& use : other->uses()) {
    if (use.user == sum) {
      if (use.offset != kOtherInput) return false;
      continue;
    }
    if (!is_fused_conv(use.user) || use.user->owningBlock() != sum->owningBlock() ||
        !use.user->isBefore(sum))
      return false;
  }
  return true;
}

}  // namespace

void sum_in_place(GraphPtr& graph) {
  std::vector<Node*> candidates;
  for (Node* n : graph->nodes())
    if (is_out_of_place_sum(n) && other_is_dead_after(n)) candidates.push_back(n);
  for (Node* n : candidates) {
    Node* inplace = graph->create(
        c10::Symbol::fromQualString(std::string(n->kind().toQualString()) + "_"), n->inputs());
    inplace->insertBefore(n);
    inplace->output()->setType(n->output()->type());
    n->output()->replaceAllUsesWith(inplace->output());
    n->destroy();
  }
}

}  // namespace jitfuse

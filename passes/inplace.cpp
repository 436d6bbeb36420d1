// sum_in_place: conv{2,3}d_sum[_relu] and qconv2d_sum[_relu] add into a copy of their `other`
// operand. When nothing reads `other` afterwards and it is a fresh tensor (made by a fused conv,
// so no view aliases it), the op's in-place twin (ops/traits.h) writes the result into it and
// saves the copy. Arguments are found by their schema names.
#include <torch/csrc/jit/ir/ir.h>

#include <optional>
#include <string>

#include "ops/traits.h"
#include "passes/rewrite.h"

namespace jitfuse {
namespace {

using torch::jit::Node;

// jitfuse::qconv2d*: an int8 conv (is_fused_conv covers the float ones).
bool is_fused_int8_conv(const Node* n) {
  return std::string(n->kind().toQualString()).rfind("jitfuse::qconv2d", 0) == 0;
}
// A fused conv that returns a new tensor (or, in place, one only it can reach).
bool makes_fresh_tensor(const Node* n) { return is_fused_conv(n) || is_fused_int8_conv(n); }

std::optional<c10::Symbol> in_place_twin(const Node* n) {
  const auto twin = traits::in_place_twin(n->kind().toQualString());
  if (twin.empty()) return std::nullopt;
  return c10::Symbol::fromQualString(std::string(twin));
}

size_t other_index(const Node* sum) { return argument_index(sum->kind(), "other"); }

torch::jit::Value* out_dtype(Node* int8_conv) {
  return int8_conv->input(argument_index(int8_conv->kind(), "out_dtype"));
}

// An int8 sum can write into `other` only when both hold the same dtype: the sum's out_dtype
// and that of the int8 conv that made `other`, both constants.
bool same_int8_dtype(Node* sum, Node* producer) {
  if (!is_fused_int8_conv(producer)) return false;
  auto out_dtype_of_sum = constant(out_dtype(sum));
  auto other_dtype = constant(out_dtype(producer));
  return out_dtype_of_sum && other_dtype && !out_dtype_of_sum->isNone() && out_dtype_of_sum->isInt() &&
         other_dtype->isInt() && out_dtype_of_sum->toInt() == other_dtype->toInt();
}

// Every other reader of `other` is a fused conv (reads it, returns a new tensor) that runs
// earlier in the same block; `other` itself was made by a fused conv of the sum's family.
bool other_is_dead_after(Node* sum) {
  const size_t index = other_index(sum);
  auto* other = sum->input(index);
  Node* producer = other->node();
  if (is_fused_int8_conv(sum) ? !same_int8_dtype(sum, producer) : !is_fused_conv(producer))
    return false;
  for (const auto& use : other->uses()) {
    if (use.user == sum) {
      if (use.offset != index) return false;
      continue;
    }
    if (!makes_fresh_tensor(use.user) || use.user->owningBlock() != sum->owningBlock() ||
        !use.user->isBefore(sum))
      return false;
  }
  return true;
}

}  // namespace

void sum_in_place(GraphPtr& graph) {
  std::vector<Node*> candidates;
  for (Node* n : graph->nodes())
    if (in_place_twin(n) && other_is_dead_after(n)) candidates.push_back(n);
  for (Node* n : candidates) {
    Node* inplace = graph->create(*in_place_twin(n), n->inputs());
    inplace->insertBefore(n);
    inplace->output()->setType(n->output()->type());
    n->output()->replaceAllUsesWith(inplace->output());
    n->destroy();
  }
}

}  // namespace jitfuse

// sum_in_place: conv{2,3}d_sum[_relu] and qconv2d_sum[_relu] add into a copy of their `other`
// operand. When nothing reads `other` afterwards and it is a fresh tensor (made by a fused conv,
// so no view aliases it), the in-place op (`..._sum_`, `..._sum_relu_`) writes the result into it
// and saves the copy.
#include <torch/csrc/jit/ir/ir.h>

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

// Where `other` sits in each family's sum ops.
constexpr size_t kFloatOther = 7;  // input, weight, bias, stride, padding, dilation, groups
constexpr size_t kInt8Other = 10;  // qx, x_scale, x_zp, qweight, weight_scales, bias, stride, ...

bool is_out_of_place_sum(const Node* n) {
  const std::string kind = n->kind().toQualString();
  return makes_fresh_tensor(n) && (kind.ends_with("_sum") || kind.ends_with("_sum_relu"));
}

size_t other_index(const Node* sum) { return is_fused_int8_conv(sum) ? kInt8Other : kFloatOther; }

// An int8 sum can write into `other` only when both hold the same dtype: the sum's out_dtype
// (its last input) and that of the int8 conv that made `other`, both constants.
bool same_int8_dtype(Node* sum, Node* producer) {
  if (!is_fused_int8_conv(producer)) return false;
  auto out_dtype = constant(sum->inputs().back());
  auto other_dtype = constant(producer->inputs().back());
  return out_dtype && other_dtype && !out_dtype->isNone() && out_dtype->isInt() &&
         other_dtype->isInt() && out_dtype->toInt() == other_dtype->toInt();
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

// Facts about jitfuse's ops that the graph passes rely on, kept beside the ops so that whoever
// changes an op meets them: passes read this table and find arguments by their schema names,
// never by position or by a pattern in an op's name. jitfuse::_in_place_twins lists the table
// for tests/python/test_op_traits.py, which checks it against the registered schemas.
#pragma once

#include <string_view>
#include <utility>

namespace jitfuse::traits {

// Sum ops and their in-place twins: the same arguments, but the twin writes its result into
// `other` (Tensor(a!) other) and returns it. passes/inplace.cpp swaps one for the other when
// nothing reads `other` afterwards.
inline constexpr std::pair<std::string_view, std::string_view> kInPlaceTwins[] = {
    {"jitfuse::conv2d_sum", "jitfuse::conv2d_sum_"},
    {"jitfuse::conv2d_sum_relu", "jitfuse::conv2d_sum_relu_"},
    {"jitfuse::conv3d_sum", "jitfuse::conv3d_sum_"},
    {"jitfuse::conv3d_sum_relu", "jitfuse::conv3d_sum_relu_"},
    {"jitfuse::qconv2d_sum", "jitfuse::qconv2d_sum_"},
    {"jitfuse::qconv2d_sum_relu", "jitfuse::qconv2d_sum_relu_"},
};

// The twin of `op`, or an empty view when it has none.
constexpr std::string_view in_place_twin(std::string_view op) {
  for (const auto& [out_of_place, in_place] : kInPlaceTwins)
    if (op == out_of_place) return in_place;
  return {};
}

}  // namespace jitfuse::traits

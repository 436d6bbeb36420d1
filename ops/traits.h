// Facts about jitfuse's ops that the graph passes rely on, kept beside the ops so that whoever
// changes an op meets them: passes read this table and find arguments by their schema names,
// never by position or by a pattern in an op's name. jitfuse::_in_place_twins, _channels_last_ops
// and _layout_follows list the tables for tests/python/test_op_traits.py, which checks them
// against the registered schemas and the kernels.
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

// In-place sums and their twins that return nothing: the same arguments and the same write into
// `other`, for graphs that functionalization reads (torch.compile, torch.export take no custom op
// returning its mutated input). jitfuse.fx spells each in-place sum as its twin here, whose result
// is `other`; inductor reinplaces it where nothing reads `other` afterwards.
inline constexpr std::pair<std::string_view, std::string_view> kWritesIntoTwins[] = {
    {"jitfuse::conv2d_sum_", "jitfuse::_conv2d_sum_into"},
    {"jitfuse::conv2d_sum_relu_", "jitfuse::_conv2d_sum_relu_into"},
    {"jitfuse::conv3d_sum_", "jitfuse::_conv3d_sum_into"},
    {"jitfuse::conv3d_sum_relu_", "jitfuse::_conv3d_sum_relu_into"},
    {"jitfuse::qconv2d_sum_", "jitfuse::_qconv2d_sum_into"},
    {"jitfuse::qconv2d_sum_relu_", "jitfuse::_qconv2d_sum_relu_into"},
};

// Ops that compute in channels_last: oneDNN's convolutions run in NHWC here, and given a
// channels_last (channels_last_3d) input these return their result that way too.
// passes/layout.cpp converts such an op's input once and lets NHWC flow from one to the next
// (were one to return another layout, the results stay right: the next op reorders).
inline constexpr std::string_view kChannelsLastOps[] = {
    "jitfuse::conv2d",          "jitfuse::conv2d_relu",     "jitfuse::conv2d_sum",     "jitfuse::conv2d_sum_",
    "jitfuse::conv2d_sum_relu", "jitfuse::conv2d_sum_relu_", "jitfuse::conv2d_swish",  "jitfuse::conv2d_sigmoid",
    "jitfuse::conv2d_hardtanh", "jitfuse::conv2d_silu",     "jitfuse::conv2d_elu",
    "jitfuse::conv3d",          "jitfuse::conv3d_relu",     "jitfuse::conv3d_sum",     "jitfuse::conv3d_sum_",
    "jitfuse::conv3d_sum_relu", "jitfuse::conv3d_sum_relu_", "jitfuse::conv3d_swish",  "jitfuse::conv3d_sigmoid",
    "jitfuse::conv3d_hardtanh", "jitfuse::conv3d_silu",     "jitfuse::conv3d_elu",
};

// Ops whose result lies in memory as their argument (named by its schema) does.
inline constexpr std::pair<std::string_view, std::string_view> kLayoutFollows[] = {
    {"jitfuse::max_pool2d", "self"},
};

constexpr bool computes_channels_last(std::string_view op) {
  for (const auto& name : kChannelsLastOps)
    if (op == name) return true;
  return false;
}

// The argument whose layout `op`'s result keeps, or an empty view.
constexpr std::string_view layout_follows(std::string_view op) {
  for (const auto& [name, argument] : kLayoutFollows)
    if (op == name) return argument;
  return {};
}

// The twin of `op`, or an empty view when it has none.
constexpr std::string_view in_place_twin(std::string_view op) {
  for (const auto& [out_of_place, in_place] : kInPlaceTwins)
    if (op == out_of_place) return in_place;
  return {};
}

}  // namespace jitfuse::traits

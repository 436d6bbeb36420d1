// ops/traits.h's tables as registered ops, for the test that checks them against the schemas and
// the kernels (tests/python/test_op_traits.py).
#include "ops/traits.h"

#include <torch/library.h>

#include <string>
#include <vector>

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_in_place_twins() -> str[][]", []() {
    std::vector<std::vector<std::string>> pairs;
    for (const auto& [out_of_place, in_place] : jitfuse::traits::kInPlaceTwins)
      pairs.push_back({std::string(out_of_place), std::string(in_place)});
    return pairs;
  });
  m.def("_writes_into_twins() -> str[][]", []() {
    std::vector<std::vector<std::string>> pairs;
    for (const auto& [in_place, into] : jitfuse::traits::kWritesIntoTwins)
      pairs.push_back({std::string(in_place), std::string(into)});
    return pairs;
  });
  m.def("_channels_last_ops() -> str[]", []() {
    std::vector<std::string> names;
    for (const auto& name : jitfuse::traits::kChannelsLastOps) names.emplace_back(name);
    return names;
  });
  m.def("_layout_follows() -> str[][]", []() {
    std::vector<std::vector<std::string>> pairs;
    for (const auto& [name, argument] : jitfuse::traits::kLayoutFollows)
      pairs.push_back({std::string(name), std::string(argument)});
    return pairs;
  });
}

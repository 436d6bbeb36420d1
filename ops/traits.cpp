// jitfuse::_in_place_twins: ops/traits.h's table as registered ops see it, for the test that
// checks it against the schemas (tests/python/test_op_traits.py).
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
}

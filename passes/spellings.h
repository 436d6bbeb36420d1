// IR spellings several pattern tables share: how tracing and scripting write a convolution, how
// graphs add a tensor to a result, and how a number operand arrives (a Scalar constant, or the 0-dim tensor constant tracing records
// for a Python number). A table expands its rows over them; none writes them out again.
#pragma once

#include <string>
#include <vector>

#include "passes/rewrite.h"

namespace jitfuse {

// aten::_convolution (tracing) and aten::conv{2,3}d (scripting) of `input` and `weight` into
// `result`. `params`: the pattern inputs the call reads besides those two, in order.
struct ConvSpelling {
  std::string params;
  std::string call;
};
std::vector<ConvSpelling> conv_spellings(int dim, const std::string& input, const std::string& weight,
                                         const std::string& result);

// `result` + %other (alpha %alpha) into `sum`, as graphs write it: result first (aten::add, or
// aten::add_ writing into result: "{_}", see inplace_variants) or %other first (aten::add only:
// add_ would write into %other).
struct AddSpelling {
  std::string ir;
  bool result_first;
};
std::vector<AddSpelling> add_spellings(const std::string& sum, const std::string& result);

// The number operand %<name>: a constant int or float (the replacement passes %<name> itself),
// or a constant 0-dim tensor (floating-point when `floating`; the replacement passes its item).
struct NumberSpelling {
  std::string prelude;  // replacement IR that runs first ("" or the aten::item)
  std::string arg;      // what the replacement passes
  Filter filter;        // the spelling's check
};
std::vector<NumberSpelling> number_spellings(const std::string& name, bool floating);

}  // namespace jitfuse

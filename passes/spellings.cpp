#include "passes/spellings.h"

namespace jitfuse {

std::vector<ConvSpelling> conv_spellings(int dim, const std::string& input, const std::string& weight,
                                         const std::string& result) {
  const std::string traced = "%bias, %stride, %padding, %dilation, %transposed, %output_padding, %groups, "
                             "%benchmark, %deterministic, %cudnn_enabled, %allow_tf32";
  const std::string scripted = "%bias, %stride, %padding, %dilation, %groups";
  return {
      {traced, result + " = aten::_convolution(" + input + ", " + weight + ", " + traced + ")"},
      {scripted, result + " = aten::conv" + std::to_string(dim) + "d(" + input + ", " + weight + ", " + scripted + ")"},
  };
}

std::vector<AddSpelling> add_spellings(const std::string& sum, const std::string& result) {
  return {
      {sum + " = aten::add{_}(" + result + ", %other, %alpha)", true},
      {sum + " = aten::add(%other, " + result + ", %alpha)", false},
  };
}

std::vector<NumberSpelling> number_spellings(const std::string& name, bool floating) {
  const std::string item = "%" + name + "_number";
  return {
      {"", "%" + name, number_is_constant(name)},
      {item + " : Scalar = aten::item(%" + name + ")\n", item, number_is_constant_0d_tensor(name, floating)},
  };
}

}  // namespace jitfuse

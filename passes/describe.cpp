#include "passes/describe.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/scope.h>

#include <sstream>

namespace jitfuse {

using torch::jit::Node;
using torch::jit::Value;

namespace {

// A file a user can act on: not one of torch's own, not generated code ("<eval_with_key>.3").
bool user_file(const std::string& file) {
  if (file.empty() || (file[0] == '<' && file != "<stdin>")) return false;
  // torch's files, and the code torch.jit.save writes (code/__torch__/...) when it is loaded
  for (const char* torch_dir : {"-packages/torch/", "/torch/nn/", "/torch/_ops.py", "/torch/functional.py", "__torch__",
                                "___torch_mangle_"})
    if (file.find(torch_dir) != std::string::npos) return false;
  return true;
}

// Traced graphs keep the Python stack as text, innermost frame first: "file.py(42): forward".
std::string first_user_frame(const std::string& stack) {
  std::istringstream lines(stack);
  for (std::string line; std::getline(lines, line);) {
    const auto close = line.find("): ");
    const auto open = close == std::string::npos ? close : line.rfind('(', close);
    if (open == std::string::npos || open + 1 == close ||
        line.find_first_not_of("0123456789", open + 1) != close)
      continue;
    const std::string file = line.substr(0, open);
    if (user_file(file)) return file.substr(file.rfind('/') + 1) + ":" + line.substr(open + 1, close - open - 1);
  }
  return "";
}

std::string file_line(const torch::jit::SourceRange& range) {
  if (!range.source()) return "";
  if (auto flc = range.file_line_col()) {
    const auto& [file, line, col] = *flc;
    if (user_file(file)) return file.substr(file.rfind('/') + 1) + ":" + std::to_string(line);
  }
  return first_user_frame(range.source()->text_str().str());
}

std::string module_path(Node* n) {
  // Traced: the scope names the module ("__module.block/__module.block.conv").
  if (auto scope = n->scope(); scope && !scope->isBlank()) {
    std::string names = scope->namesFromRoot();
    names = names.substr(names.rfind('/') + 1);
    const std::string prefix = "__module.";
    if (names.rfind(prefix, 0) == 0) return names.substr(prefix.size());
  }
  // Scripted: the inlined calls carry the module instances they ran in.
  std::string path;
  if (auto stack = n->callstack())
    for (const auto& entry : (*stack)->vec())
      if (const auto& info = std::get<2>(entry); info && !info->instance_name().empty())
        path += (path.empty() ? "" : ".") + info->instance_name();
  return path;
}

// The innermost source line in the user's files: the node's own, else its inlined call sites'.
std::string user_line(const Node* n) {
  if (auto line = file_line(n->sourceRange()); !line.empty()) return line;
  if (auto stack = n->callstack()) {
    auto entries = (*stack)->vec();
    for (auto it = entries.rbegin(); it != entries.rend(); ++it)
      if (auto line = file_line(std::get<1>(*it)); !line.empty()) return line;
  }
  return "";
}

std::string scalar_type_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

// "self.conv.weight" for a chain of prim::GetAttr.
std::string attribute_path(const Value* v) {
  std::string path;
  while (v->node()->kind() == torch::jit::prim::GetAttr) {
    path = "." + v->node()->s(torch::jit::attr::name) + path;
    v = v->node()->input(0);
  }
  return "self" + path;
}

}  // namespace

std::string location(const Node* n) {
  auto* node = const_cast<Node*>(n);  // Node::scope() is not const
  const std::string path = module_path(node), line = user_line(n);
  if (path.empty()) return line;
  return line.empty() ? path : path + " (" + line + ")";
}

std::string value_origin(const Value* v) {
  const Node* n = v->node();
  if (n->kind() == torch::jit::prim::Param) return "a graph input";
  if (n->kind() == torch::jit::prim::GetAttr)
    return "the module attribute " + attribute_path(v) + " (the module is not frozen)";
  if (n->kind() == torch::jit::prim::Constant) return "a constant";
  const std::string where = location(n);
  std::string out = std::string("made by ") + n->kind().toQualString() + (where.empty() ? "" : " at " + where);
  for (const auto* input : n->inputs())  // w.t() of a module's weight: say where the weight is
    if (input->node()->kind() == torch::jit::prim::GetAttr)
      return out + " from " + value_origin(input);
  return out;
}

std::string value_type(const Value* v) {
  auto tensor = v->type()->cast<c10::TensorType>();
  if (!tensor) return v->type()->kind() == c10::TypeKind::NoneType ? "None" : "a " + v->type()->str();
  std::string out = tensor->scalarType() ? scalar_type_name(*tensor->scalarType()) : "a tensor";
  if (auto sizes = tensor->sizes().concrete_sizes()) {
    out += " [";
    for (size_t i = 0; i < sizes->size(); ++i) out += (i ? ", " : "") + std::to_string((*sizes)[i]);
    out += "]";
  } else if (tensor->dim()) {
    out += " of " + std::to_string(*tensor->dim()) + " dims";
  }
  return out;
}

std::string value_constant(const Value* v) {
  auto c = torch::jit::toIValue(const_cast<Value*>(v));
  if (!c) return "not a constant (" + value_origin(v) + ")";
  if (c->isTensor()) return "a constant " + value_type(v) + " tensor";
  std::ostringstream out;
  out << *c;
  return out.str();
}

std::string describe_node(const Node* n) {
  std::string out = n->kind().toQualString();
  if (n->outputs().size() > 0) out += " %" + n->output(0)->debugName();
  return out;
}

}  // namespace jitfuse

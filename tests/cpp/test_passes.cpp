// The passes on IR-string graphs, in pure C++: what fuses, what is left alone, and that the fused
// graph computes what the original did.
#include <gtest/gtest.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/irparser.h>
#include <torch/torch.h>

#include "passes/passes.h"

namespace {

using torch::jit::Graph;

// Parses `ir` and turns the graph inputs named in `constants` into prim::Constant weights, as
// torch.jit.freeze does.
std::shared_ptr<Graph> frozen_graph(const std::string& ir,
                                    const std::map<std::string, at::Tensor>& constants) {
  auto graph = std::make_shared<Graph>();
  std::unordered_map<std::string, torch::jit::Value*> vmap;
  torch::jit::parseIR(ir, graph.get(), vmap);
  for (const auto& [name, tensor] : constants) {
    auto* input = vmap.at(name);
    torch::jit::WithInsertPoint guard(graph->nodes().front());
    input->replaceAllUsesWith(graph->insertConstant(tensor));
    graph->eraseInput(input->offset());
  }
  return graph;
}

int count(const std::shared_ptr<Graph>& g, const std::string& kind) {
  int n = 0;
  for (auto* node : g->nodes()) n += std::string(node->kind().toQualString()) == kind;
  return n;
}

at::Tensor run(const std::shared_ptr<Graph>& g, std::vector<c10::IValue> inputs) {
  torch::jit::GraphFunction fn("f", g->copy(), nullptr);
  return fn(std::move(inputs)).toTensor();
}

const char* kTracedConvAddRelu = R"IR(
graph(%x : Tensor, %y : Tensor, %w : Tensor, %b : Tensor):
  %one : int = prim::Constant[value=1]()
  %f : bool = prim::Constant[value=0]()
  %t : bool = prim::Constant[value=1]()
  %s : int[] = prim::Constant[value=[1, 1]]()
  %z : int[] = prim::Constant[value=[0, 0]]()
  %c : Tensor = aten::_convolution(%x, %w, %b, %s, %s, %s, %f, %z, %one, %f, %f, %t, %t)
  %a : Tensor = aten::add_(%c, %y, %one)
  %r : Tensor = aten::relu_(%a)
  return (%r)
)IR";

struct PassTest : ::testing::Test {
  at::Tensor w = torch::randn({16, 8, 3, 3});
  at::Tensor b = torch::randn({16});
  at::Tensor x = torch::randn({2, 8, 10, 10});
  at::Tensor y = torch::randn({2, 16, 10, 10});
  void SetUp() override { jitfuse::set_enabled(true); }
};

TEST_F(PassTest, TracedConvAddReluBecomesConvSumRelu) {
  auto g = frozen_graph(kTracedConvAddRelu, {{"w", w}, {"b", b}});
  auto expected = run(g, {x.clone(), y.clone()});
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum_relu"), 1);
  EXPECT_EQ(count(g, "aten::_convolution"), 0);
  EXPECT_EQ(count(g, "aten::add_"), 0);
  EXPECT_EQ(count(g, "aten::relu_"), 0);
  auto y0 = y.clone();
  auto got = run(g, {x, y});
  EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(y, y0)) << "the sum operand must not be written";
}

TEST_F(PassTest, ScriptedConvReluAndConvOnTheRightOfAdd) {
  auto w2 = torch::randn({16, 16, 3, 3});
  auto g = frozen_graph(R"IR(
graph(%x : Tensor, %y : Tensor, %w : Tensor, %b : Tensor, %w2 : Tensor):
  %one : int = prim::Constant[value=1]()
  %s : int[] = prim::Constant[value=[1, 1]]()
  %c : Tensor = aten::conv2d(%x, %w, %b, %s, %s, %s, %one)
  %r : Tensor = aten::relu(%c)
  %c2 : Tensor = aten::conv2d(%r, %w2, %b, %s, %s, %s, %one)
  %a : Tensor = aten::add(%y, %c2, %one)
  return (%a)
)IR", {{"w", w}, {"b", b}, {"w2", w2}});
  auto expected = run(g, {x, y});
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::conv2d_relu"), 1);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum"), 1);
  EXPECT_EQ(count(g, "aten::conv2d") + count(g, "aten::add") + count(g, "aten::relu"), 0);
  auto got = run(g, {x, y});
  EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-4));
  EXPECT_TRUE(got.is_contiguous()) << "a NCHW input gives a NCHW output";
}

TEST_F(PassTest, SumWritesIntoAFreshOperandOnlyWhenNothingReadsItLater) {
  const std::string ir = R"IR(
graph(%x : Tensor, %w : Tensor, %b : Tensor, %w1 : Tensor):
  %one : int = prim::Constant[value=1]()
  %s : int[] = prim::Constant[value=[1, 1]]()
  %z : int[] = prim::Constant[value=[0, 0]]()
  %identity : Tensor = aten::conv2d(%x, %w1, %b, %s, %z, %s, %one)
  %c : Tensor = aten::conv2d(%x, %w, %b, %s, %s, %s, %one)
  %a : Tensor = aten::add(%c, %identity, %one)
  %r : Tensor = aten::relu(%a)
  return (%r)
)IR";
  auto w1 = torch::randn({16, 8, 1, 1});
  auto g = frozen_graph(ir, {{"w", w}, {"b", b}, {"w1", w1}});
  auto expected = run(g, {x});
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum_relu_"), 1);
  EXPECT_TRUE(torch::allclose(run(g, {x}), expected, 1e-5, 1e-4));

  std::string read_later = ir;
  read_later.replace(read_later.find("return (%r)"), 11,
                     "%m : Tensor = aten::mul(%r, %identity)\n  return (%m)");
  auto g2 = frozen_graph(read_later, {{"w", w}, {"b", b}, {"w1", w1}});
  auto expected2 = run(g2, {x});
  jitfuse::optimize_graph(g2);
  EXPECT_EQ(count(g2, "jitfuse::conv2d_sum_relu_"), 0);
  EXPECT_EQ(count(g2, "jitfuse::conv2d_sum_relu"), 1);
  EXPECT_TRUE(torch::allclose(run(g2, {x}), expected2, 1e-5, 1e-4));
}

TEST_F(PassTest, NonConstantWeightIsLeftAlone) {
  auto g = std::make_shared<Graph>();
  torch::jit::parseIR(kTracedConvAddRelu, g.get());
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "aten::_convolution"), 1);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum_relu"), 0);
}

TEST_F(PassTest, ConvOutputReadTwiceKeepsTheConvOutput) {
  auto g = frozen_graph(R"IR(
graph(%x : Tensor, %w : Tensor, %b : Tensor):
  %one : int = prim::Constant[value=1]()
  %s : int[] = prim::Constant[value=[1, 1]]()
  %c : Tensor = aten::conv2d(%x, %w, %b, %s, %s, %s, %one)
  %r : Tensor = aten::relu(%c)
  %a : Tensor = aten::add(%r, %c, %one)
  return (%a)
)IR", {{"w", w}, {"b", b}});
  auto expected = run(g, {x});
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::conv2d_relu"), 0);
  EXPECT_EQ(count(g, "jitfuse::conv2d"), 1);  // the lone conv, its output still read twice
  EXPECT_EQ(count(g, "aten::relu"), 1);
  EXPECT_TRUE(torch::allclose(run(g, {x}), expected, 1e-5, 1e-5));
}

TEST_F(PassTest, DoubleWeightsAndTransposedConvsAreLeftAlone) {
  auto g64 = frozen_graph(kTracedConvAddRelu, {{"w", w.to(at::kDouble)}, {"b", b.to(at::kDouble)}});
  jitfuse::optimize_graph(g64);
  EXPECT_EQ(count(g64, "aten::_convolution"), 1);

  std::string transposed = kTracedConvAddRelu;
  transposed.replace(transposed.find("%f, %z"), 2, "%t");
  auto gt = frozen_graph(transposed, {{"w", w}, {"b", b}});
  jitfuse::optimize_graph(gt);
  EXPECT_EQ(count(gt, "aten::_convolution"), 1);
}

TEST_F(PassTest, DisabledPatternAndDisabledPassesDoNotFuse) {
  jitfuse::set_pattern_enabled("conv2d_sum_relu", false);
  auto g = frozen_graph(kTracedConvAddRelu, {{"w", w}, {"b", b}});
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum_relu"), 0);
  EXPECT_EQ(count(g, "jitfuse::conv2d_sum"), 1);  // the next row still applies
  jitfuse::set_pattern_enabled("conv2d_sum_relu", true);
  EXPECT_THROW(jitfuse::set_pattern_enabled("no_such_pattern", false), c10::Error);
}

TEST_F(PassTest, LinearGeluAndThreeLinearsOnOneInput) {
  auto wq = torch::randn({8, 16}), wk = torch::randn({8, 16}), wv = torch::randn({4, 16});
  auto bq = torch::randn({8}), w2 = torch::randn({16, 16});
  auto g = frozen_graph(R"IR(
graph(%x : Tensor, %wq : Tensor, %wk : Tensor, %wv : Tensor, %bq : Tensor, %w2 : Tensor):
  %none : NoneType = prim::Constant()
  %approx : str = prim::Constant[value="tanh"]()
  %q : Tensor = aten::linear(%x, %wq, %bq)
  %k : Tensor = aten::linear(%x, %wk, %none)
  %v : Tensor = aten::linear(%x, %wv, %none)
  %h : Tensor = aten::linear(%x, %w2, %none)
  %g : Tensor = aten::gelu(%h, %approx)
  %r : (Tensor, Tensor, Tensor, Tensor) = prim::TupleConstruct(%q, %k, %v, %g)
  return (%r)
)IR", {{"wq", wq}, {"wk", wk}, {"wv", wv}, {"bq", bq}, {"w2", w2}});
  auto x = torch::randn({2, 5, 16});
  torch::jit::GraphFunction before("f", g->copy(), nullptr);
  auto expected = before({x}).toTuple()->elements();
  jitfuse::optimize_graph(g);
  // the four linears read one input: merged into one GEMM, then split; no gelu fusion left for
  // the fourth, which the merge took
  EXPECT_EQ(count(g, "aten::linear"), 0);
  EXPECT_EQ(count(g, "jitfuse::linear"), 1);
  EXPECT_EQ(count(g, "aten::split_with_sizes"), 1);
  torch::jit::GraphFunction after("f", g->copy(), nullptr);
  auto got = after({x}).toTuple()->elements();
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i].toTensor(), expected[i].toTensor(), 1e-5, 1e-5)) << i;
}

TEST_F(PassTest, AttentionSoftmaxAndAddLayerNorm) {
  auto gamma = torch::randn({16}), beta = torch::randn({16});
  auto g = frozen_graph(R"IR(
graph(%scores : Tensor, %mask : Tensor, %a : Tensor, %b : Tensor, %gamma : Tensor, %beta : Tensor):
  %one : int = prim::Constant[value=1]()
  %last : int = prim::Constant[value=-1]()
  %none : NoneType = prim::Constant()
  %eight : float = prim::Constant[value=8.]()
  %eps : float = prim::Constant[value=1.0000000000000001e-05]()
  %false : bool = prim::Constant[value=0]()
  %shape : int[] = prim::Constant[value=[16]]()
  %d : Tensor = aten::div(%scores, %eight)
  %s : Tensor = aten::add(%d, %mask, %one)
  %p : Tensor = aten::softmax(%s, %last, %none)
  %sum : Tensor = aten::add(%a, %b, %one)
  %n : Tensor = aten::layer_norm(%sum, %shape, %gamma, %beta, %eps, %false)
  %r : (Tensor, Tensor) = prim::TupleConstruct(%p, %n)
  return (%r)
)IR", {{"gamma", gamma}, {"beta", beta}});
  std::vector<c10::IValue> in{torch::randn({2, 3, 7, 7}), torch::randn({2, 1, 1, 7}),
                              torch::randn({4, 16}), torch::randn({4, 16})};
  torch::jit::GraphFunction before("f", g->copy(), nullptr);
  auto expected = before(in).toTuple()->elements();
  jitfuse::optimize_graph(g);
  EXPECT_EQ(count(g, "jitfuse::div_add_softmax"), 1);
  EXPECT_EQ(count(g, "jitfuse::add_layernorm"), 1);
  EXPECT_EQ(count(g, "aten::softmax") + count(g, "aten::layer_norm") + count(g, "aten::add"), 0);
  torch::jit::GraphFunction after("f", g->copy(), nullptr);
  auto got = after(in).toTuple()->elements();
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i].toTensor(), expected[i].toTensor(), 1e-5, 1e-5)) << i;
}

TEST_F(PassTest, EveryPatternNameIsListed) {
  auto names = jitfuse::pattern_names();
  for (const char* n : {"conv2d_relu", "conv2d_sum", "conv2d_sum_relu", "conv2d_sigmoid",
                        "conv2d_swish", "conv2d_hardtanh", "conv2d_silu", "conv2d_elu",
                        "conv3d_relu", "conv3d_sum", "conv3d_sum_relu", "conv3d_silu", "conv2d",
                        "linear", "linear_relu", "linear_gelu", "linear_linear_linear",
                        "add_layernorm", "div_add_softmax", "mul_add_softmax",
                        "view_transpose_contiguous_view", "attention_low_precision"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

}  // namespace

// ---- the fusion report on IR graphs: rules no traced or scripted model breaks --------------------

namespace {

std::vector<std::string> reasons(const std::vector<jitfuse::ReportEntry>& entries, const std::string& pattern) {
  std::vector<std::string> out;
  for (const auto& e : entries)
    if (e.status == "rejected" && e.pattern == pattern) out.push_back(e.reason);
  return out;
}

const char* kInt8Conv = R"IR(
graph(%q : INPUT_TYPE, %qw : Tensor, %s : Tensor, %b : Tensor):
  %scale : float = prim::Constant[value=0.05]()
  %zp : int = prim::Constant[value=128]()
  %one : int = prim::Constant[value=1]()
  %l : int[] = prim::Constant[value=[1, 1]]()
  %z : int[] = prim::Constant[value=[0, 0]]()
  %x : Tensor = jitfuse::dequantize_per_tensor(%q, %scale, %zp)
  %wf : Tensor = aten::dequantize(%qw)
  %w : Tensor = aten::mul(%wf, %s)
  %c : Tensor = aten::conv2d(%x, %w, %b, %l, %z, %l, %one)
  return (%c)
)IR";

std::shared_ptr<Graph> int8_conv(const std::string& input_type) {
  std::string ir = kInt8Conv;
  ir.replace(ir.find("INPUT_TYPE"), 10, input_type);
  return frozen_graph(ir, {{"qw", torch::randint(-60, 60, {4, 3, 3, 3}).to(torch::kChar)},
                           {"s", torch::full({4, 1, 1, 1}, 0.01)},
                           {"b", torch::randn({4})}});
}

}  // namespace

TEST(Report, LinearInputOfAnotherDtype) {
  auto g = frozen_graph(R"IR(
graph(%x : Double(2, 16), %w : Tensor, %b : Tensor):
  %y : Tensor = aten::linear(%x, %w, %b)
  return (%y)
)IR", {{"w", torch::randn({8, 16})}, {"b", torch::randn({8})}});
  EXPECT_EQ(reasons(jitfuse::report(g), "linear"),
            std::vector<std::string>{"the input %x is float64 [2, 16], not a CPU tensor of the weight's dtype "
                                     "(float32 [8, 16])"});
}

TEST(Report, ConvInputOfAnotherRank) {
  auto g = frozen_graph(R"IR(
graph(%x : Float(1, 1, 3, 8, 8), %w : Tensor, %b : Tensor):
  %one : int = prim::Constant[value=1]()
  %l : int[] = prim::Constant[value=[1, 1]]()
  %z : int[] = prim::Constant[value=[0, 0]]()
  %c : Tensor = aten::conv2d(%x, %w, %b, %l, %z, %l, %one)
  return (%c)
)IR", {{"w", torch::randn({4, 3, 3, 3})}, {"b", torch::randn({4})}});
  EXPECT_EQ(reasons(jitfuse::report(g), "conv2d"),
            std::vector<std::string>{"the input %x is float32 [1, 1, 3, 8, 8], not a CPU tensor of 4 dims (or 3 "
                                     "unbatched) and the weight's dtype (float32 [4, 3, 3, 3])"});
}

TEST(Report, Int8OperandNotInt8) {
  EXPECT_EQ(reasons(jitfuse::report(int8_conv("Int(1, 3, 8, 8)")), "dequant_conv"),
            std::vector<std::string>{"an operand that is dequantized is not a uint8 or int8 CPU tensor"});
}

TEST(Report, Int8ConvInputOfAnotherRank) {
  EXPECT_EQ(reasons(jitfuse::report(int8_conv("Byte(1, 1, 3, 8, 8)")), "dequant_conv"),
            std::vector<std::string>{"the input %q is uint8 [1, 1, 3, 8, 8], not a 3-D or 4-D tensor"});
}

TEST(Report, FusedEntriesAndTable) {
  auto entries = jitfuse::report(int8_conv("Byte(1, 3, 8, 8)"));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].status, "fused");
  EXPECT_EQ(entries[0].pattern, "dequant_conv");
  EXPECT_EQ(entries[0].op, "jitfuse::qconv2d");
  EXPECT_EQ(entries[0].replaced.size(), 4u);  // dequantize x, dequantize w, mul, conv2d
  const std::string table = jitfuse::format_report(entries);
  EXPECT_NE(table.find("fused: 1 rewrites"), std::string::npos) << table;
  EXPECT_NE(table.find("dequant_conv  1      jitfuse::qconv2d"), std::string::npos) << table;
}

// jitfuse's graph passes, for C++ users and tests. Loading libjitfuse.so registers them with the
// TorchScript profiling executor; these entry points run them on a graph directly.
#pragma once

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <vector>

namespace jitfuse {

using GraphPtr = std::shared_ptr<torch::jit::Graph>;

// Every jitfuse pass, in order (what the executor runs when jitfuse is enabled).
void optimize_graph(GraphPtr& graph);

// Offline: a copy of a frozen module with every method's graph already fused, so its first call
// runs fused and torch::jit::save writes the fused graph. (The executor runs the passes again on
// the 2nd call; on a fused graph they change nothing.)
torch::jit::Module optimize(const torch::jit::Module& frozen);

// The passes, in the order optimize_graph runs them.
void fuse_int8(GraphPtr& graph);          // dequantize -> op -> [quantize] -> jitfuse::q*
void fuse_linear_x3(GraphPtr& graph);     // Linears sharing an input -> one linear + split
void fuse_linear(GraphPtr& graph);        // linear + relu/gelu       -> jitfuse::linear*
void fuse_transformer(GraphPtr& graph);   // add+layer_norm, scaled masked softmax, head merge
void fuse_conv(GraphPtr& graph);          // conv + activation / sum  -> jitfuse::conv*
void fuse_pool(GraphPtr& graph);          // max / global average pooling -> jitfuse::*_pool2d
void keep_channels_last(GraphPtr& graph); // NHWC between fused convs, user's format at outputs
void sum_in_place(GraphPtr& graph);       // conv sums write into an operand nothing reads later

// Switches. Pattern names are those of the pattern tables (e.g. "conv2d_sum_relu").
void set_enabled(bool enabled);
bool is_enabled();
void set_pattern_enabled(const std::string& name, bool enabled);  // throws on an unknown name
bool is_pattern_enabled(const std::string& name);
std::vector<std::string> pattern_names();

}  // namespace jitfuse

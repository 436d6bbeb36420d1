// int8 matrix products. qlinear[_relu|_gelu|_sigmoid|_sum]: a uint8/int8 activation of any rank
// (... x in_features, with its scale and zero point) times an int8 weight (one scale per output
// feature) on oneDNN's int8 matmul, the activation or sum as post-ops, float32 or uint8/int8 out.
// qlinear_dynamic[_relu|_gelu]: float in and out, each row quantized at run time with its own
// scale and zero point (after the SmoothQuant factors, when given): what keeps a pretrained
// transformer's outlier tokens and channels; their _rows forms return the quantized rows of the
// result for the next dynamic linear, which qlinear_rows multiplies. qbmm[_div]: attention's
// batched products of two int8 activations. Schemas at the bottom.
#include "ops/allocator.h"
#include "ops/int8_args.h"
#include "ops/onednn.h"
#include "ops/quantize.h"
#include "ops/vec.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <torch/library.h>

#include <cstring>
#include <functional>
#include <tuple>

namespace jitfuse {
namespace {

using onednn::Int8Output;
using onednn::PostOp;
using onednn::PostOps;
using dnnl::algorithm;

using QLinearPrimitive = onednn::Primitive<dnnl::matmul>;

void check_weight_shape(const char* op, int64_t in_features, const at::Tensor& qw, const at::Tensor& bias,
                        at::IntArrayRef x_sizes) {
  TORCH_CHECK(qw.dim() == 2, "jitfuse ", op, ": expected a 2-D weight, got ", qw.dim(), "-D");
  TORCH_CHECK(in_features == qw.size(1), "jitfuse ", op, ": input ", x_sizes,
              " cannot be multiplied by weight ", qw.sizes(), " (in_features ", qw.size(1), ")");
  if (bias.defined())
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == qw.size(0),
                "jitfuse ", op, ": expected a float32 bias of shape [", qw.size(0), "], got ",
                bias.scalar_type(), " ", bias.sizes());
}

// An optional bias as the kernels read it: contiguous, or undefined when there is none.
at::Tensor contiguous_bias(const std::optional<at::Tensor>& bias) {
  return bias && bias->defined() ? bias->contiguous() : at::Tensor();
}

// x @ w^T (+ bias) in float32, x (m, k), into a buffer of jitfuse's block cache (ATen's own
// would be fresh pages from the kernel on every call): the fallback of inexact int8 weights.
at::Tensor float_product(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  at::Tensor y = memory::empty({x.size(0), w.size(0)}, x.options().dtype(at::kFloat));
  if (bias.defined()) return at::addmm_out(y, bias, x, w.t());
  return at::mm_out(y, x, w.t());
}

// The float32 activation the unfused graph applies after the product (undef: none), in place.
at::Tensor apply(algorithm eltwise, at::Tensor y) {
  if (eltwise == algorithm::eltwise_relu) return y.relu_();
  if (eltwise == algorithm::eltwise_logistic) return y.sigmoid_();
  if (eltwise == algorithm::eltwise_gelu_erf) return at::gelu_(y);
  if (eltwise == algorithm::eltwise_gelu_tanh) return at::gelu_(y, "tanh");
  return y;
}

algorithm gelu_algorithm(const char* op, c10::string_view approximate) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh", "jitfuse ", op,
              ": approximate must be 'none' or 'tanh', got '", approximate, "'");
  return approximate == "none" ? algorithm::eltwise_gelu_erf : algorithm::eltwise_gelu_tanh;
}

// `eltwise` (undef: none) follows the sum of `other` (undefined: none), float32.
at::Tensor qlinear_forward(const at::Tensor& qx, double x_scale, int64_t x_zero_point, const at::Tensor& qw,
                           const at::Tensor& weight_scales, const std::optional<at::Tensor>& bias_opt,
                           const at::Tensor& other_in, algorithm eltwise, const Int8Output& out) {
  const at::Tensor bias = bias_opt ? *bias_opt : at::Tensor();
  onednn::check_int8_activation("qlinear", qx, x_scale, x_zero_point);
  onednn::check_int8_weight("qlinear", qw, weight_scales);
  TORCH_CHECK(qx.dim() >= 1, "jitfuse qlinear: expected an input of at least 1 dimension");
  check_weight_shape("qlinear", qx.size(-1), qw, bias, qx.sizes());
  const int64_t k = qw.size(1), n = qw.size(0);
  auto out_sizes = qx.sizes().vec();
  out_sizes.back() = n;
  at::Tensor other = other_in.defined() ? onednn::float_operand("qlinear_sum", other_in) : at::Tensor();
  const bool exact = onednn::int8_weight_exact(qw);
  if (!exact || (other.defined() && other.sizes() != at::IntArrayRef(out_sizes))) {
    // The product alone, then the sum and activation as the unfused graph does them: for an
    // added tensor that broadcasts, and for weights oneDNN would saturate on this CPU (in float32).
    at::Tensor y = exact ? qlinear_forward(qx, x_scale, x_zero_point, qw, weight_scales, bias_opt, {}, algorithm::undef, {})
                         : at::linear(quantize::dequantize(qx, x_scale, x_zero_point),
                                      onednn::float_weight(qw, weight_scales), bias_opt);
    if (other.defined()) y = y + other;
    return onednn::as_output(apply(eltwise, y), out);
  }
  if (other.defined()) other = other.reshape({-1, n}).contiguous();
  const at::Tensor src = qx.reshape({-1, k}).contiguous();
  const int64_t m = src.size(0);
  at::Tensor dst = onednn::new_output({m, n}, out, at::MemoryFormat::Contiguous);
  if (m == 0) return dst.view(out_sizes);
  const at::Tensor bias_row = bias.defined() ? bias.contiguous().view({1, n}) : at::Tensor();

  const int weight_mask = onednn::per_channel(weight_scales) ? 1 << 1 : 0;  // along N
  const bool src_zp = x_zero_point != 0;
  PostOps post;
  if (other.defined()) post.push_back({PostOp::binary, algorithm::binary_add, 0.f, 0.f, onednn::plain_desc(other)});
  if (eltwise != algorithm::undef) post.push_back({PostOp::eltwise, eltwise});
  onednn::Key key;
  key << src << qw << bias_row << int64_t{weight_mask} << int64_t{src_zp} << dst
      << int64_t{out.zero_point != 0} << post;
  // [n, k] row-major is the [k, n] weight oneDNN's matmul wants, transposed.
  const dnnl::memory::desc user_weight({k, n}, dnnl::memory::data_type::s8, {1, k});
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    dnnl::memory::desc wei({k, n}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    auto attr = onednn::make_attr(post);
    onednn::set_int8_attr(attr, weight_mask, src_zp, out);
    using pd_t = dnnl::matmul::primitive_desc;
    const auto& eng = onednn::engine();
    auto src_md = onednn::plain_desc(src), dst_md = onednn::plain_desc(dst);
    auto pd = bias_row.defined()
                  ? pd_t(eng, src_md, wei, onednn::plain_desc(bias_row), dst_md, attr)
                  : pd_t(eng, src_md, wei, dst_md, attr);
    std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    if (bias_row.defined()) args.push_back(DNNL_ARG_BIAS);
    if (other.defined()) args.push_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1);
    return std::make_shared<QLinearPrimitive>(std::move(pd), args,
                                              onednn::int8_arg_descs(weight_scales.numel(), src_zp, out));
  });
  const auto& mm = static_cast<const QLinearPrimitive&>(*made);
  const at::Tensor wei = onednn::prepacked_weight(qw, mm.run.md(DNNL_ARG_WEIGHTS), [&] { return user_weight; });
  onednn::CallArgs args{{DNNL_ARG_SRC, src.data_ptr()}, {DNNL_ARG_WEIGHTS, wei.data_ptr()},
                        {DNNL_ARG_DST, dst.data_ptr()}};
  if (bias_row.defined()) args.add(DNNL_ARG_BIAS, bias_row.data_ptr());
  if (other.defined()) args.add(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, other.data_ptr());
  onednn::Int8Args values;
  onednn::add_int8_args(args, values, x_scale, x_zero_point, weight_scales, out);
  mm.run(args);
  return dst.view(out_sizes);
}

// ---- dynamic: float in, rows quantized at run time, float out ------------------------------

// y[m, n] = act(row_scale[m] * (d[m, n] - row_zero_point[m] * column[n]) + bias[n]): the rows'
// own scales and zero points applied to oneDNN's d = (integer product) * weight scale, with
// column[n] = (sum over k of the int8 weight) * weight scale, and the activation (relu, erf GELU)
// while the values are in registers. (oneDNN 3.2's brgemm matmul takes neither per-row scales
// nor per-row zero points, not even as a binary post-op.)
enum class RowActivation { none, relu, gelu_erf };

template <RowActivation Act>
[[gnu::always_inline]] inline vec::Vec activate(vec::Vec v) {
  if (Act == RowActivation::relu) return vec::relu(v);
  if (Act == RowActivation::gelu_erf) return vec::gelu_erf(v);
  return v;
}

template <RowActivation Act>
[[gnu::always_inline]] inline void finish_rows_body(float* y, int64_t begin, int64_t end, int64_t n,
                                                    const float* scales, const float* zero_points,
                                                    const float* column, const float* bias) {
  using namespace vec;
  const int64_t body = n - n % kLanes;
  for (int64_t m = begin; m < end; ++m) {
    float* row = y + m * n;
    const float s = scales[m], z = zero_points[m];
    for (int64_t j = 0; j < body; j += kLanes) {
      Vec v = s * (load(row + j) - z * load(column + j));
      if (bias) v += load(bias + j);
      store(row + j, activate<Act>(v));
    }
    if (body < n) {  // the last n % 16 columns, through zero-padded copies: one formula for all
      float tail[kLanes] = {}, col[kLanes] = {}, add[kLanes] = {};
      const size_t bytes = (n - body) * sizeof(float);
      std::memcpy(tail, row + body, bytes);
      std::memcpy(col, column + body, bytes);
      if (bias) std::memcpy(add, bias + body, bytes);
      store(tail, activate<Act>(s * (load(tail) - z * load(col)) + load(add)));
      std::memcpy(row + body, tail, bytes);
    }
  }
}
// One clone set per activation, chosen once per call.
#define FINISH_ROWS(name, act)                                                                      \
  JITFUSE_CLONES void name(float* y, int64_t begin, int64_t end, int64_t n, const float* scales,     \
                           const float* zero_points, const float* column, const float* bias) {      \
    finish_rows_body<act>(y, begin, end, n, scales, zero_points, column, bias);                     \
  }
FINISH_ROWS(finish_rows_none, RowActivation::none)
FINISH_ROWS(finish_rows_relu, RowActivation::relu)
FINISH_ROWS(finish_rows_gelu, RowActivation::gelu_erf)
#undef FINISH_ROWS

// The reciprocals of constant SmoothQuant factors, once per factor tensor: one product per element.
at::Tensor reciprocal_of(const std::optional<at::Tensor>& smooth) {
  if (!smooth || !smooth->defined()) return at::Tensor();
  return onednn::derived_weight(*smooth, "reciprocal", [&] { return smooth->to(at::kFloat).reciprocal().contiguous(); });
}

void check_dynamic_input(const char* op, const at::Tensor& x, const at::Tensor& qw, const at::Tensor& weight_scales,
                         const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.layout() == at::kStrided &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "jitfuse ", op, ": expected a float32 or bfloat16 CPU input, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, "jitfuse ", op, ": expected an input of at least 1 dimension");
  onednn::check_int8_weight(op, qw, weight_scales);
  check_weight_shape(op, x.size(-1), qw, bias, x.sizes());
}

// x's rows quantized (after the smoothing), timed apart for bench/run.py --profile.
quantize::Rows quantized_input(const at::Tensor& x, const std::optional<at::Tensor>& smooth) {
  RECORD_FUNCTION("jitfuse::quantize_rows", {});
  return quantize::per_row(x, reciprocal_of(smooth));
}

// What runs on each block of finished rows [begin, end) of y (float32, n wide) while they are
// still in cache: the next linear's quantization, for the _rows ops.
using RowsDone = std::function<void(const float* y, int64_t begin, int64_t end)>;

// act(dequant(rows) @ (qw * scales)^T + bias) as float32 (m, n): oneDNN computes the u8 x s8
// product with the weight scales; finish_rows applies each row's scale and zero point.
at::Tensor rows_product(const quantize::Rows& rows, const at::Tensor& qw, const at::Tensor& weight_scales,
                        const at::Tensor& bias, algorithm eltwise, const RowsDone& then = {}) {
  const int64_t k = qw.size(1), n = qw.size(0);
  const at::Tensor src = rows.values.view({-1, k});
  const int64_t m = src.size(0);
  const at::Tensor scales = weight_scales.reshape({-1}).to(at::kFloat).expand({n}).contiguous();
  const int64_t grain = std::max<int64_t>(1, 16384 / n);  // rows per thread task: 64 KiB of float32
  const auto all_rows = [&](const at::Tensor& y) {
    if (then) at::parallel_for(0, m, grain, [&](int64_t b, int64_t e) { then(y.data_ptr<float>(), b, e); });
    return y;
  };
  if (!onednn::int8_weight_exact(qw) || m == 0) {  // weights oneDNN would saturate here: float32
    at::Tensor xd = memory::empty({m, k}, src.options().dtype(at::kFloat)).copy_(src);
    xd.sub_(rows.zero_points.view({-1, 1})).mul_(rows.scales.view({-1, 1}));
    return all_rows(apply(eltwise, float_product(xd, onednn::float_weight(qw, scales), bias)));
  }
  at::Tensor dst = memory::empty({m, n}, src.options().dtype(at::kFloat));
  onednn::Key key;
  key << int64_t{0x5d7} << src << qw << int64_t{n};  // 0x5d7: the dynamic linear's keys
  const dnnl::memory::desc user_weight({k, n}, dnnl::memory::data_type::s8, {1, k});
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    dnnl::memory::desc wei({k, n}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1 << 1);
    return std::make_shared<QLinearPrimitive>(
        dnnl::matmul::primitive_desc(onednn::engine(), onednn::plain_desc(src), wei, onednn::plain_desc(dst), attr),
        std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
        std::vector<std::pair<int, dnnl::memory::desc>>{
            {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS,
             onednn::vector_desc(n, dnnl::memory::data_type::f32)}});
  });
  const auto& mm = static_cast<const QLinearPrimitive&>(*made);
  const at::Tensor wei = onednn::prepacked_weight(qw, mm.run.md(DNNL_ARG_WEIGHTS), [&] { return user_weight; });
  const at::Tensor column = onednn::derived_weight(qw, "column_sums", [&] {
    return (qw.sum(1, /*keepdim=*/false, at::kFloat) * scales).contiguous();
  });
  mm.run({{DNNL_ARG_SRC, src.data_ptr()},
          {DNNL_ARG_WEIGHTS, wei.data_ptr()},
          {DNNL_ARG_DST, dst.data_ptr()},
          {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, scales.data_ptr()}});
  auto* finish = eltwise == algorithm::eltwise_relu       ? finish_rows_relu
                 : eltwise == algorithm::eltwise_gelu_erf ? finish_rows_gelu
                                                          : finish_rows_none;
  const bool in_epilogue = eltwise != algorithm::eltwise_gelu_tanh;
  // With `then`, blocks of rows that fit in L1 (32 KiB of float32): finished, then passed on.
  const int64_t block = then && in_epilogue ? std::max<int64_t>(1, 8192 / n) : m;
  at::parallel_for(0, m, grain, [&](int64_t begin, int64_t end) {
    for (int64_t first = begin; first < end; first += block) {
      const int64_t last = std::min(end, first + block);
      finish(dst.data_ptr<float>(), first, last, n, rows.scales.data_ptr<float>(), rows.zero_points.data_ptr<float>(),
             column.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr);
      if (then && in_epilogue) then(dst.data_ptr<float>(), first, last);
    }
  });
  if (in_epilogue) return dst;
  at::gelu_(dst, "tanh");  // ATen's, in place
  return all_rows(dst);
}

// y = act(dequant(quant_rows(x / smooth)) @ (qw * scales)^T + bias): each row of x quantized to
// uint8 with its own scale and zero point, the SmoothQuant factors (already multiplied into the
// weight by jitfuse.quantization) dividing x's channels first.
at::Tensor qlinear_dynamic_forward(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                   const at::Tensor& qw, const at::Tensor& weight_scales,
                                   const std::optional<at::Tensor>& bias_opt, algorithm eltwise) {
  const at::Tensor bias = contiguous_bias(bias_opt);
  check_dynamic_input("qlinear_dynamic", x, qw, weight_scales, bias);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = qw.size(0);
  return rows_product(quantized_input(x, smooth), qw, weight_scales, bias, eltwise).to(x.scalar_type()).view(out_sizes);
}

// The same linear whose result goes on to another dynamic linear (smoothing factors
// `next_smooth`) and nowhere else: it returns that linear's quantized rows instead, each made
// while the row is in cache. The values are those of quantizing qlinear_dynamic's result.
std::tuple<at::Tensor, at::Tensor, at::Tensor> qlinear_dynamic_rows_forward(
    const at::Tensor& x, const std::optional<at::Tensor>& smooth, const at::Tensor& qw, const at::Tensor& weight_scales,
    const std::optional<at::Tensor>& bias_opt, algorithm eltwise, const std::optional<at::Tensor>& next_smooth,
    const char* op) {
  const at::Tensor bias = contiguous_bias(bias_opt);
  check_dynamic_input(op, x, qw, weight_scales, bias);
  const int64_t n = qw.size(0);
  TORCH_CHECK(!next_smooth || !next_smooth->defined() || next_smooth->numel() == n, "jitfuse ", op,
              ": expected ", n, " smoothing factors for the next linear, got ", next_smooth->numel());
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = n;
  const at::Tensor next_inv = reciprocal_of(next_smooth);
  const auto rows = quantized_input(x, smooth);
  quantize::Rows next;
  if (x.scalar_type() == at::kFloat) {
    next = quantize::empty_rows(out_sizes, x.options());
    const float* inv = next_inv.defined() ? next_inv.data_ptr<float>() : nullptr;
    rows_product(rows, qw, weight_scales, bias, eltwise, [&](const float* y, int64_t begin, int64_t end) {
      quantize::per_row_range(y, n, inv, begin, end, next);
    });
  } else {  // bf16: the unfused graph rounds the result to bf16 first
    next = quantize::per_row(rows_product(rows, qw, weight_scales, bias, eltwise).to(x.scalar_type()).view(out_sizes),
                             next_inv);
  }
  return {next.values, next.scales, next.zero_points};
}

// A dynamic linear whose input rows were quantized by the _rows op before it; `dtype` is the
// float dtype qlinear_dynamic would have returned (its input's).
at::Tensor qlinear_rows(const at::Tensor& values, const at::Tensor& row_scales, const at::Tensor& row_zero_points,
                        const at::Tensor& qw, const at::Tensor& weight_scales, const std::optional<at::Tensor>& bias_opt,
                        at::ScalarType dtype) {
  const at::Tensor bias = contiguous_bias(bias_opt);
  TORCH_CHECK(values.device().is_cpu() && values.layout() == at::kStrided && values.scalar_type() == at::kByte &&
                  values.dim() >= 1,
              "jitfuse qlinear_rows: expected uint8 CPU rows of at least 1 dimension, got ", values.scalar_type(),
              " ", values.sizes());
  onednn::check_int8_weight("qlinear_rows", qw, weight_scales);
  check_weight_shape("qlinear_rows", values.size(-1), qw, bias, values.sizes());
  const int64_t rows = values.size(-1) ? values.numel() / values.size(-1) : 0;
  for (const auto* t : {&row_scales, &row_zero_points})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == rows,
                "jitfuse qlinear_rows: expected ", rows, " contiguous float32 row scales and zero points, got ",
                t->scalar_type(), " ", t->sizes());
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "jitfuse qlinear_rows: dtype must be float32 or "
              "bfloat16, got ", dtype);
  auto out_sizes = values.sizes().vec();
  out_sizes.back() = qw.size(0);
  return rows_product({values.contiguous(), row_scales, row_zero_points}, qw, weight_scales, bias, algorithm::undef)
      .to(dtype)
      .view(out_sizes);
}

// Attention's products: both operands are int8 activations. They are widened to float32 and
// multiplied there (a small share of a transformer's work); the op saves the graph's
// dequantize/quantize round trips.
at::Tensor qbmm_forward(const at::Tensor& qa, double a_scale, int64_t a_zero_point, const at::Tensor& qb,
                        double b_scale, int64_t b_zero_point, const std::optional<at::Scalar>& divisor,
                        const Int8Output& out) {
  onednn::check_int8_activation("qbmm", qa, a_scale, a_zero_point);
  onednn::check_int8_activation("qbmm", qb, b_scale, b_zero_point);
  TORCH_CHECK(qa.dim() >= 3 && qa.dim() == qb.dim(), "jitfuse qbmm: expected two batched "
              "matrices of one rank >= 3, got ", qa.sizes(), " and ", qb.sizes());
  at::Tensor y = at::matmul(quantize::dequantize(qa, a_scale, a_zero_point),
                            quantize::dequantize(qb, b_scale, b_zero_point));
  if (divisor) y.div_(*divisor);
  return onednn::as_output(y, out);
}

#define QLINEAR_ARGS                                                                                \
  const at::Tensor &qx, double x_scale, int64_t x_zero_point, const at::Tensor &qweight,            \
      const at::Tensor &weight_scales, const std::optional<at::Tensor>&bias
#define OUT_ARGS double out_scale, int64_t out_zero_point, std::optional<at::ScalarType> out_dtype
#define QLINEAR_CALL(other, eltwise, name)                                                          \
  qlinear_forward(qx, x_scale, x_zero_point, qweight, weight_scales, bias, other, eltwise,           \
                  onednn::int8_output(out_dtype, out_scale, out_zero_point, name))

at::Tensor qlinear(QLINEAR_ARGS, OUT_ARGS) { return QLINEAR_CALL({}, algorithm::undef, "qlinear"); }
at::Tensor qlinear_relu(QLINEAR_ARGS, OUT_ARGS) { return QLINEAR_CALL({}, algorithm::eltwise_relu, "qlinear_relu"); }
at::Tensor qlinear_sigmoid(QLINEAR_ARGS, OUT_ARGS) {
  return QLINEAR_CALL({}, algorithm::eltwise_logistic, "qlinear_sigmoid");
}
// approximate: "none" (erf) or "tanh", as aten::gelu.
at::Tensor qlinear_gelu(QLINEAR_ARGS, c10::string_view approximate, OUT_ARGS) {
  return QLINEAR_CALL({}, gelu_algorithm("qlinear_gelu", approximate), "qlinear_gelu");
}
// other_scale None: other is float32; else its int8 values' scale and zero point.
at::Tensor qlinear_sum(QLINEAR_ARGS, const at::Tensor& other, std::optional<double> other_scale,
                       std::optional<int64_t> other_zero_point, OUT_ARGS) {
  const at::Tensor added = other_scale ? quantize::dequantize(other, *other_scale, other_zero_point.value_or(0)) : other;
  return QLINEAR_CALL(added, algorithm::undef, "qlinear_sum");
}

#define DYNAMIC_ARGS                                                                                \
  const at::Tensor &x, const std::optional<at::Tensor>&smooth, const at::Tensor &qweight,           \
      const at::Tensor &weight_scales, const std::optional<at::Tensor>&bias

at::Tensor qlinear_dynamic(DYNAMIC_ARGS) {
  return qlinear_dynamic_forward(x, smooth, qweight, weight_scales, bias, algorithm::undef);
}
at::Tensor qlinear_dynamic_relu(DYNAMIC_ARGS) {
  return qlinear_dynamic_forward(x, smooth, qweight, weight_scales, bias, algorithm::eltwise_relu);
}
at::Tensor qlinear_dynamic_gelu(DYNAMIC_ARGS, c10::string_view approximate) {
  return qlinear_dynamic_forward(x, smooth, qweight, weight_scales, bias,
                                 gelu_algorithm("qlinear_dynamic_gelu", approximate));
}
using RowsResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
RowsResult qlinear_dynamic_rows(DYNAMIC_ARGS, const std::optional<at::Tensor>& next_smooth) {
  return qlinear_dynamic_rows_forward(x, smooth, qweight, weight_scales, bias, algorithm::undef, next_smooth,
                                      "qlinear_dynamic_rows");
}
RowsResult qlinear_dynamic_relu_rows(DYNAMIC_ARGS, const std::optional<at::Tensor>& next_smooth) {
  return qlinear_dynamic_rows_forward(x, smooth, qweight, weight_scales, bias, algorithm::eltwise_relu, next_smooth,
                                      "qlinear_dynamic_relu_rows");
}
RowsResult qlinear_dynamic_gelu_rows(DYNAMIC_ARGS, c10::string_view approximate,
                                     const std::optional<at::Tensor>& next_smooth) {
  return qlinear_dynamic_rows_forward(x, smooth, qweight, weight_scales, bias,
                                      gelu_algorithm("qlinear_dynamic_gelu_rows", approximate), next_smooth,
                                      "qlinear_dynamic_gelu_rows");
}

#define QBMM_ARGS                                                                                   \
  const at::Tensor &qa, double a_scale, int64_t a_zero_point, const at::Tensor &qb, double b_scale, \
      int64_t b_zero_point

at::Tensor qbmm(QBMM_ARGS, OUT_ARGS) {
  return qbmm_forward(qa, a_scale, a_zero_point, qb, b_scale, b_zero_point, std::nullopt,
                      onednn::int8_output(out_dtype, out_scale, out_zero_point, "qbmm"));
}
at::Tensor qbmm_div(QBMM_ARGS, const at::Scalar& divisor, OUT_ARGS) {
  return qbmm_forward(qa, a_scale, a_zero_point, qb, b_scale, b_zero_point, divisor,
                      onednn::int8_output(out_dtype, out_scale, out_zero_point, "qbmm_div"));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  const std::string args = "(Tensor qx, float x_scale, int x_zero_point, Tensor qweight, Tensor weight_scales, Tensor? bias, ";
  const std::string other = "Tensor other, float? other_scale, int? other_zero_point, ";
  const std::string out = "float out_scale, int out_zero_point, ScalarType? out_dtype) -> Tensor";
  const std::string dynamic = "(Tensor x, Tensor? smooth, Tensor qweight, Tensor weight_scales, Tensor? bias";
  const std::string ab = "(Tensor qa, float a_scale, int a_zero_point, Tensor qb, float b_scale, int b_zero_point, ";
  const auto cpu = c10::DispatchKey::CPU;
  m.def(("qlinear" + args + out).c_str(), torch::dispatch(cpu, TORCH_FN(qlinear)));
  m.def(("qlinear_relu" + args + out).c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_relu)));
  m.def(("qlinear_sigmoid" + args + out).c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_sigmoid)));
  m.def(("qlinear_gelu" + args + "str approximate, " + out).c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_gelu)));
  m.def(("qlinear_sum" + args + other + out).c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_sum)));
  m.def(("qlinear_dynamic" + dynamic + ") -> Tensor").c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_dynamic)));
  m.def(("qlinear_dynamic_relu" + dynamic + ") -> Tensor").c_str(), torch::dispatch(cpu, TORCH_FN(qlinear_dynamic_relu)));
  const std::string rows = "(Tensor values, Tensor scales, Tensor zero_points)";
  m.def(("qlinear_dynamic_rows" + dynamic + ", Tensor? next_smooth) -> " + rows).c_str(),
        torch::dispatch(cpu, TORCH_FN(qlinear_dynamic_rows)));
  m.def(("qlinear_dynamic_relu_rows" + dynamic + ", Tensor? next_smooth) -> " + rows).c_str(),
        torch::dispatch(cpu, TORCH_FN(qlinear_dynamic_relu_rows)));
  m.def(("qlinear_dynamic_gelu_rows" + dynamic + ", str approximate, Tensor? next_smooth) -> " + rows).c_str(),
        torch::dispatch(cpu, TORCH_FN(qlinear_dynamic_gelu_rows)));
  m.def("qlinear_rows(Tensor values, Tensor scales, Tensor zero_points, Tensor qweight, Tensor weight_scales, "
        "Tensor? bias, ScalarType dtype) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(qlinear_rows)));
  m.def(("qlinear_dynamic_gelu" + dynamic + ", str approximate='none') -> Tensor").c_str(),
        torch::dispatch(cpu, TORCH_FN(qlinear_dynamic_gelu)));
  m.def(("qbmm" + ab + out).c_str(), torch::dispatch(cpu, TORCH_FN(qbmm)));
  m.def(("qbmm_div" + ab + "Scalar divisor, " + out).c_str(), torch::dispatch(cpu, TORCH_FN(qbmm_div)));
}

}  // namespace jitfuse

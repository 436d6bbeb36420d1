// ops/vec.h's GELU, relu, softmax exp and lane reductions in each instruction set jitfuse's
// kernels are cloned for (target_clones picks one at load time, so the Python tests only ever
// reach the one of the machine at hand): compiled here for AVX-512, AVX2 and the baseline, each
// run where the CPU has it, against float64.
#include "ops/vec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using jitfuse::vec::kLanes;
using jitfuse::vec::load;
using jitfuse::vec::store;

using VecOpFn = void (*)(const float*, float*, int64_t);

// `op` of ops/vec.h over n floats (a multiple of 16), compiled for one target.
#define VEC_OP_FOR(name, target, op)                                                           \
  __attribute__((target)) void name(const float* x, float* y, int64_t n) {                     \
    for (int64_t j = 0; j < n; j += kLanes) store(y + j, jitfuse::vec::op(load(x + j)));       \
  }
VEC_OP_FOR(gelu_avx512, target("avx512f"), gelu_erf)
VEC_OP_FOR(gelu_avx2, target("avx2"), gelu_erf)
VEC_OP_FOR(gelu_baseline, target("default"), gelu_erf)
VEC_OP_FOR(relu_avx512, target("avx512f"), relu)
VEC_OP_FOR(relu_avx2, target("avx2"), relu)
VEC_OP_FOR(relu_baseline, target("default"), relu)
VEC_OP_FOR(exp_avx512, target("avx512f"), exp_nonpositive)
VEC_OP_FOR(exp_avx2, target("avx2"), exp_nonpositive)
VEC_OP_FOR(exp_baseline, target("default"), exp_nonpositive)
#undef VEC_OP_FOR

// The lane reductions and lane masks, compiled for one target: the sum of 16 floats, their
// largest (through order keys), and how many lanes first_lanes(n) sets.
struct Reductions {
  float (*sum)(const float*);
  float (*max)(const float*);
  int (*lanes)(int64_t);
};
#define REDUCTIONS_FOR(name, target)                                                                    \
  __attribute__((target)) float name##_sum(const float* x) { return jitfuse::vec::sum(load(x)); }      \
  __attribute__((target)) float name##_max(const float* x) {                                            \
    using namespace jitfuse::vec;                                                                       \
    return from_order_key(max(order_key(bits_of(load(x)))));                                           \
  }                                                                                                     \
  __attribute__((target)) int name##_lanes(int64_t n) {                                                 \
    const jitfuse::vec::Ints mask = jitfuse::vec::first_lanes(n);                                       \
    int count = 0;                                                                                      \
    for (int l = 0; l < kLanes; ++l) count += mask[l] == -1 && (l == 0 || mask[l - 1] == -1);           \
    return count;                                                                                       \
  }                                                                                                     \
  const Reductions name{name##_sum, name##_max, name##_lanes};
REDUCTIONS_FOR(reduce_avx512, target("avx512f"))
REDUCTIONS_FOR(reduce_avx2, target("avx2"))
REDUCTIONS_FOR(reduce_baseline, target("default"))
#undef REDUCTIONS_FOR

double exact_gelu(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

void check_gelu(VecOpFn gelu) {
  // -12..12 densely, then the special values.
  const int64_t n = kLanes * 150000;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -12.f + 24.f * static_cast<float>(i) / static_cast<float>(n);
  gelu(x.data(), y.data(), n);
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double want = exact_gelu(x[i]);
    const double err = std::abs(y[i] - want);
    // ATen's float32 GELU is within 1.5e-7 in erf; ours 8.5e-7 with FMA, 1.2e-6 without.
    ASSERT_LE(err, 1.3e-6 + 3e-7 * std::abs(want)) << "x = " << x[i];
    worst = std::max(worst, err);
  }
  EXPECT_GT(worst, 0.0);  // the sweep ran
  const float inf = std::numeric_limits<float>::infinity();
  float special[kLanes] = {std::nanf(""), inf, -inf, 0.f, -0.f, 1e-30f, -1e-30f, 3e38f, -3e38f, 5.2f, -5.2f};
  float out[kLanes];
  gelu(special, out, kLanes);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], inf);
  EXPECT_TRUE(std::isnan(out[2]));  // -inf * 0, as ATen
  EXPECT_EQ(out[3], 0.f);
  EXPECT_EQ(out[4], 0.f);
  EXPECT_FLOAT_EQ(out[5], 5e-31f);
  EXPECT_FLOAT_EQ(out[6], -5e-31f);
  EXPECT_EQ(out[7], 3e38f);
  EXPECT_EQ(out[8], 0.f);
  EXPECT_NEAR(out[9], exact_gelu(5.2), 2e-6);
  EXPECT_NEAR(out[10], exact_gelu(-5.2), 2e-6);
}

void check_relu(VecOpFn relu) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  float x[kLanes] = {-3.f, -0.f, 0.f, 1e-38f, -1e-38f, 2.5f, inf, -inf, nan, -nan, 1e-45f, -1e-45f, 7.f, -7.f, 3e38f, -3e38f};
  float y[kLanes];
  relu(x, y, kLanes);
  for (int i = 0; i < kLanes; ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << i;  // as aten::relu
    } else {
      EXPECT_EQ(y[i], x[i] > 0.f ? x[i] : 0.f) << i;
    }
  }
}

void check_exp(VecOpFn exp) {
  // -100..0 densely: within 2 ulp where exp(x) is a normal float, exp(-87) below.
  const int64_t n = kLanes * 100000;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -100.f * static_cast<float>(i) / static_cast<float>(n - 1);
  exp(x.data(), y.data(), n);
  const double floor = std::exp(-87.0);
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] >= -87.f) {
      ASSERT_NEAR(y[i], std::exp(double{x[i]}), 2.4e-7 * std::exp(double{x[i]})) << "x = " << x[i];
    } else {
      ASSERT_NEAR(y[i], floor, 1e-6 * floor) << "x = " << x[i];
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  float special[kLanes] = {0.f, -0.f, -1e-30f, -inf, -3e38f, -87.f, -0.5f * std::log(2.f)};
  float out[kLanes];
  exp(special, out, kLanes);
  EXPECT_EQ(out[0], 1.f);
  EXPECT_EQ(out[1], 1.f);
  EXPECT_EQ(out[2], 1.f);
  EXPECT_NEAR(out[3], floor, 1e-6 * floor);  // nothing next to a row maximum's 1
  EXPECT_NEAR(out[4], floor, 1e-6 * floor);
  EXPECT_NEAR(out[5], floor, 1e-6 * floor);
  EXPECT_NEAR(out[6], std::sqrt(0.5), 1e-7);
}

void check_reductions(const Reductions& r) {
  const float inf = std::numeric_limits<float>::infinity();
  float x[kLanes];
  for (int l = 0; l < kLanes; ++l) x[l] = 0.1f * static_cast<float>(l * l) - 3.f;
  double total = 0.0;
  for (float v : x) total += v;
  EXPECT_NEAR(r.sum(x), total, 1e-5);
  EXPECT_EQ(r.max(x), x[kLanes - 1]);
  for (int top = 0; top < kLanes; ++top) {  // the largest in every lane, among negatives
    for (int l = 0; l < kLanes; ++l) x[l] = -1000.f - static_cast<float>(l);
    x[top] = -0.5f;
    EXPECT_EQ(r.max(x), -0.5f) << top;
  }
  for (int l = 0; l < kLanes; ++l) x[l] = -inf;
  EXPECT_EQ(r.max(x), -inf);
  x[3] = -0.f;
  x[9] = 1e-45f;  // the smallest denormal beats -0
  EXPECT_EQ(r.max(x), 1e-45f);
  x[12] = inf;
  EXPECT_EQ(r.max(x), inf);
  for (int64_t n = 0; n <= kLanes; ++n) EXPECT_EQ(r.lanes(n), n);
}

TEST(VecExp, EveryBuildMatchesFloat64) {
  check_exp(exp_baseline);
  if (__builtin_cpu_supports("avx2")) check_exp(exp_avx2);
  if (__builtin_cpu_supports("avx512f")) check_exp(exp_avx512);
}

TEST(VecReductions, EveryBuildSumsAndFindsTheLargest) {
  check_reductions(reduce_baseline);
  if (__builtin_cpu_supports("avx2")) check_reductions(reduce_avx2);
  if (__builtin_cpu_supports("avx512f")) check_reductions(reduce_avx512);
}

TEST(VecRelu, EveryBuildKeepsPositivesZeroesNegativesKeepsNaN) {
  check_relu(relu_baseline);
  if (__builtin_cpu_supports("avx2")) check_relu(relu_avx2);
  if (__builtin_cpu_supports("avx512f")) check_relu(relu_avx512);
}

TEST(VecGelu, Avx512MatchesFloat64) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "no AVX-512 on this CPU";
  check_gelu(gelu_avx512);
}

TEST(VecGelu, Avx2MatchesFloat64) {
  if (!__builtin_cpu_supports("avx2")) GTEST_SKIP() << "no AVX2 on this CPU";
  check_gelu(gelu_avx2);
}

TEST(VecGelu, BaselineMatchesFloat64) { check_gelu(gelu_baseline); }

}  // namespace

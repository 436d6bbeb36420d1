// CPU capabilities (ops/cpu.h): oneDNN's effective ISA for choices about its kernels, cpuid for
// which build of jitfuse's own vector code runs.
#include "ops/cpu.h"

#include "ops/onednn/memory.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <thread>

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace jitfuse::cpu {

std::string onednn_isa() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: return "sse41";
    case isa::avx: return "avx";
    case isa::avx2: return "avx2";
    case isa::avx2_vnni: return "avx2_vnni";
    case isa::avx2_vnni_2: return "avx2_vnni_2";
    case isa::avx512_core: return "avx512_core";
    case isa::avx512_core_vnni: return "avx512_core_vnni";
    case isa::avx512_core_bf16: return "avx512_core_bf16";
    case isa::avx512_core_fp16: return "avx512_core_fp16";
    case isa::avx512_core_amx: return "avx512_core_amx";
    case isa::avx512_core_amx_fp16: return "avx512_core_amx_fp16";
    default: return "unknown";
  }
}

bool has_vnni() {
  using isa = dnnl::cpu_isa;
  static const bool vnni = [] {
    switch (dnnl::get_effective_cpu_isa()) {
      case isa::avx2_vnni: case isa::avx2_vnni_2: case isa::avx512_core_vnni:
      case isa::avx512_core_bf16: case isa::avx512_core_fp16: case isa::avx512_core_amx:
      case isa::avx512_core_amx_fp16: return true;
      default: return false;
    }
  }();
  return vnni;
}

bool has_amx() {
  const auto amx_bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);  // ISAs are bit sets
  static const bool amx = (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & amx_bits) == amx_bits;
  return amx;
}

bool native_bf16() {
  // Ask oneDNN: a bf16 convolution it can create with an optimized (non-reference) kernel.
  static const bool native = [] {
    using md = dnnl::memory::desc;
    const auto bf16 = dnnl::memory::data_type::bf16;
    const auto any = dnnl::memory::format_tag::any;
    try {
      dnnl::convolution_forward::primitive_desc pd(
          onednn::engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          md({1, 32, 8, 8}, bf16, any), md({32, 32, 3, 3}, bf16, any), md({1, 32, 8, 8}, bf16, any),
          {1, 1}, {1, 1}, {1, 1});
      return !onednn::is_reference(pd);
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return native;
}

bool has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

bool has_avx512f() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

bool has_avx512_bf16() {
  static const bool ok = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw");
  return ok;
}

bool amx_tiles_granted() {
  static const bool ok = [] {
#if defined(__x86_64__) && defined(__linux__)
    constexpr long kRequestPermission = 0x1023, kTileData = 18;  // ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    return has_amx() && syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

}  // namespace jitfuse::cpu

namespace {

// How many threads at::parallel_for gives jitfuse's own kernels over `range` items: torch's thread
// count where the library was built with OpenMP, 1 where a build lost it (they then run serially).
int64_t parallel_for_threads(int64_t range) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  at::parallel_for(0, range, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_parallel_for_threads(int range) -> int", [](int64_t range) { return parallel_for_threads(range); });
  m.def("_onednn_isa() -> str", []() { return jitfuse::cpu::onednn_isa(); });
  // The int8 weight width oneDNN computes exactly here (jitfuse.quantization writes it).
  m.def("_int8_weight_bits() -> int", []() -> int64_t { return jitfuse::cpu::has_vnni() ? 8 : 7; });
}

#include "ops/allocator.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <bit>
#include <cstdint>
#include <map>
#include <mutex>

namespace jitfuse::memory {
namespace {

// Below this, torch's allocator (malloc) keeps freed memory itself.
constexpr size_t kMinCachedBytes = size_t{1} << 16;
// Idle blocks kept at most; beyond it the largest idle ones go back to the system.
constexpr size_t kMaxIdleBytes = size_t{1} << 30;
// Each block starts with a header holding its size; the data follows, 64-byte aligned.
constexpr size_t kHeader = 64;

// Sizes are rounded up to one of 8 steps per power of two (at most 12.5% waste), so shapes that
// differ a little share blocks.
size_t size_class(size_t n) {
  const int top = 63 - std::countl_zero(static_cast<uint64_t>(n));
  const size_t step = size_t{1} << (top > 3 ? top - 3 : 0);
  return (n + step - 1) & ~(step - 1);
}

class BlockCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes) return c10::GetCPUAllocator()->allocate(n);
    const size_t bytes = size_class(n);
    void* base = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = idle_.find(bytes);
      if (it != idle_.end()) {
        base = it->second;
        idle_.erase(it);
        idle_bytes_ -= bytes;
      }
    }
    if (!base) {
      base = c10::alloc_cpu(bytes + kHeader);
      *static_cast<size_t*>(base) = bytes;
    }
    return {static_cast<char*>(base) + kHeader, base, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  size_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return idle_bytes_;
  }

 private:
  static void release(void* base);

  void put_back(void* base) {
    const size_t bytes = *static_cast<size_t*>(base);
    std::lock_guard<std::mutex> lock(mu_);
    idle_.emplace(bytes, base);
    idle_bytes_ += bytes;
    while (idle_bytes_ > kMaxIdleBytes) {
      auto largest = std::prev(idle_.end());
      idle_bytes_ -= largest->first;
      c10::free_cpu(largest->second);
      idle_.erase(largest);
    }
  }

  std::mutex mu_;
  std::multimap<size_t, void*> idle_;
  size_t idle_bytes_ = 0;
};

// Never destroyed: tensors may return blocks to it during static destruction.
BlockCache& cache() {
  static auto* instance = new BlockCache();
  return *instance;
}

void BlockCache::release(void* base) { cache().put_back(base); }

}  // namespace

at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat format) {
  TORCH_CHECK(options.device().is_cpu(), "jitfuse: CPU tensors only");
  return at::detail::empty_generic(sizes, &cache(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), format);
}

size_t idle_bytes() { return cache().idle_bytes(); }

}  // namespace jitfuse::memory

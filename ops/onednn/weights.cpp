#include "ops/onednn/weights.h"

#include <c10/util/intrusive_ptr.h>

#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace jitfuse::onednn {

namespace {

// A tensor's version counter. Inference tensors (made under torch.inference_mode: a model frozen
// or loaded there, or what an op derives from a weight there) have none, and asking throws; they
// cannot be modified outside inference mode, so their identity and data pointer stand alone.
int64_t version_of(const at::Tensor& t) { return t.is_inference() ? -2 : static_cast<int64_t>(t._version()); }

// What jitfuse derives once from a constant weight: its layouts packed for primitives, transformed
// copies (or facts about it, such as whether oneDNN computes an int8 weight exactly here).
struct WeightEntry {
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  std::optional<Weak> owner;  // keeps the TensorImpl's address from being reused while cached
  const void* data = nullptr;
  int64_t version = -1;
  std::vector<std::pair<dnnl::memory::desc, at::Tensor>> layouts;
  std::vector<std::pair<std::string, at::Tensor>> derived;

  bool still_describes(const at::Tensor& w) const {
    return owner && !owner->expired() && data == w.data_ptr() && version == version_of(w);
  }
};

std::mutex& weight_mu() {
  static std::mutex mu;
  return mu;
}

// The entry of `weight` (hold weight_mu()): a fresh one if the tensor, its data or its version
// changed. Keyed by the tensor's identity, so a freed weight's successor is never served stale.
WeightEntry& weight_entry(const at::Tensor& weight) {
  static std::unordered_map<const c10::TensorImpl*, WeightEntry> entries;
  auto& entry = entries[weight.unsafeGetTensorImpl()];
  if (!entry.still_describes(weight)) {
    entry = WeightEntry{};
    entry.owner.emplace(weight.getIntrusivePtr());
    entry.data = weight.data_ptr();
    entry.version = version_of(weight);
    // Drop what belongs to weights that are gone.
    for (auto it = entries.begin(); it != entries.end();)
      it = !it->second.owner || it->second.owner->expired() ? entries.erase(it) : std::next(it);
  }
  return entry;
}

}  // namespace

at::Tensor prepacked_weight(const at::Tensor& weight, const dnnl::memory::desc& wanted_md,
                            const std::function<dnnl::memory::desc()>& user_md) {
  std::lock_guard<std::mutex> lock(weight_mu());
  auto& entry = weight_entry(weight);
  for (const auto& [md, buffer] : entry.layouts)
    if (md == wanted_md) return buffer;

  at::Tensor buffer = at::empty({static_cast<int64_t>(wanted_md.get_size())},
                                weight.options().dtype(at::kByte));
  reorder(wrap(weight, user_md()), wrap(buffer, wanted_md));
  entry.layouts.emplace_back(wanted_md, buffer);
  return buffer;
}

at::Tensor derived_weight(const at::Tensor& weight, const std::string& tag,
                          const std::function<at::Tensor()>& make) {
  std::lock_guard<std::mutex> lock(weight_mu());
  auto& entry = weight_entry(weight);
  for (const auto& [name, tensor] : entry.derived)
    if (name == tag) return tensor;
  entry.derived.emplace_back(tag, make());
  return entry.derived.back().second;
}

}  // namespace jitfuse::onednn

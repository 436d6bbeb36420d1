// The weight cache: what is derived once from a constant weight (its layouts prepacked for
// primitives, transformed copies), keyed by the weight tensor's identity and version.
#pragma once

#include "ops/onednn/memory.h"

#include <functional>
#include <string>

namespace jitfuse::onednn {

// A constant weight reordered once into the layout a primitive wants. `user_md` describes
// `weight`'s own storage (possibly regrouped). Keyed by the weight tensor's identity and version:
// a freed or modified weight is never served stale.
// `user_md` is only asked for on a miss. The returned tensor holds the packed bytes (and keeps
// them alive for the call even if another thread replaces the cache entry meanwhile).
at::Tensor prepacked_weight(const at::Tensor& weight, const dnnl::memory::desc& wanted_md,
                            const std::function<dnnl::memory::desc()>& user_md);

// A tensor derived once from a constant weight (a transformed copy of it), cached with the
// weight's prepacked layouts under the same identity and version rules. `tag` names the
// derivation; `make` runs on a miss.
at::Tensor derived_weight(const at::Tensor& weight, const std::string& tag,
                          const std::function<at::Tensor()>& make);

}  // namespace jitfuse::onednn

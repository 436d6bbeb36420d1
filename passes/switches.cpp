// On/off switches: the global one, per-pattern ones (JITFUSE_DISABLE or the API) and verbosity.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>

#include <c10/util/Exception.h>

#include "passes/switches.h"

#include "passes/rewrite.h"

namespace jitfuse {
namespace {

std::atomic<bool> g_enabled{true};
std::mutex g_mu;

std::set<std::string> from_env_list(const char* var) {
  std::set<std::string> out;
  const char* v = std::getenv(var);
  if (!v) return out;
  std::stringstream ss(v);
  for (std::string item; std::getline(ss, item, ',');) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.insert(item);
  }
  return out;
}

std::set<std::string>& disabled() {
  static std::set<std::string> names = [] {
    auto names = from_env_list("JITFUSE_DISABLE");
    auto known = pattern_names();
    for (const auto& n : names)
      if (std::find(known.begin(), known.end(), n) == known.end())
        std::cerr << "jitfuse: JITFUSE_DISABLE names an unknown pattern '" << n << "'\n";
    return names;
  }();
  return names;
}

}  // namespace

int verbose_level() {
  static const int level = [] {
    const char* v = std::getenv("JITFUSE_VERBOSE");
    if (!v || !*v) return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return end == v ? 1 : static_cast<int>(std::max(0L, n));  // a word ("yes") means 1
  }();
  return level;
}

void set_enabled(bool enabled) { g_enabled = enabled; }
bool is_enabled() { return g_enabled; }

std::vector<std::string> pattern_names() {
  std::vector<std::string> names;
  const auto add = [&](const std::string& name) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  };
  for (const auto& pass : passes_in_order()) {
    for (const auto& name : pass.own_patterns) add(name);
    if (pass.table)
      for (const auto& row : pass.table()) add(row.name);
  }
  return names;
}

void set_pattern_enabled(const std::string& name, bool enabled) {
  auto known = pattern_names();
  TORCH_CHECK(std::find(known.begin(), known.end(), name) != known.end(),
              "jitfuse: unknown pattern '", name, "'");
  std::lock_guard<std::mutex> lock(g_mu);
  if (enabled)
    disabled().erase(name);
  else
    disabled().insert(name);
}

bool is_pattern_enabled(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  return disabled().count(name) == 0;
}

}  // namespace jitfuse

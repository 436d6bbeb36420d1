// The switches the passes read themselves (switches.cpp; the public ones are in passes.h).
#pragma once

namespace jitfuse {

// JITFUSE_VERBOSE: 0 quiet, 1 one line per rewrite, 2 also every refused candidate as the passes
// meet it.
int verbose_level();
inline bool verbose() { return verbose_level() >= 1; }

}  // namespace jitfuse

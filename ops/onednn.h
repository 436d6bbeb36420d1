// The oneDNN plumbing every jitfuse op uses, one job per header under ops/onednn/: memory
// (engine, stream, tensor <-> descriptors, reorders), primitives (post-ops, the primitive cache,
// Runner) and weights (the prepacked-weight cache). It depends on no op. Ops know oneDNN; they
// never see graphs.
#pragma once

#include "ops/onednn/memory.h"
#include "ops/onednn/primitives.h"
#include "ops/onednn/weights.h"

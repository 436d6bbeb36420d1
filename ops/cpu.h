// What this CPU can do, in one place. Two questions, each asked its own way:
// - what oneDNN dispatches to (its effective ISA, which ONEDNN_MAX_CPU_ISA can lower): every
//   choice about oneDNN's kernels, and about the kernels jitfuse writes beside them that must
//   agree with them (an int8 weight width, bf16 products);
// - which instructions the CPU has (cpuid): which build of the vector code jitfuse compiles
//   itself may run.
#pragma once

#include <string>

namespace jitfuse::cpu {

// ---- what oneDNN dispatches to ----
// oneDNN's name for it: avx2, avx512_core_bf16, avx512_core_amx, ...
std::string onednn_isa();
// oneDNN computes full 8-bit int8 weights exactly (VNNI or AMX); else u8 x s8 pairs saturate in
// int16 and only weights in [-64, 64] are exact.
bool has_vnni();
// oneDNN uses the AMX tiles (bf16 / int8).
bool has_amx();
// oneDNN has optimized bf16 kernels; without them bf16 ops compute in f32 and round once.
bool native_bf16();

// ---- the CPU's instructions ----
bool has_avx2_fma();
bool has_avx512f();
bool has_avx512_bf16();  // AVX-512 bf16 dot products (and AVX-512 BW, which their kernels use)
// AMX tiles usable by jitfuse's own code: oneDNN uses them, and Linux has granted this process
// the tile state (it does so on request, once per process; oneDNN asks too).
bool amx_tiles_granted();

}  // namespace jitfuse::cpu

#pragma once
// Which hand-written vector paths the engine's own kernels take.

// Forces a helper loop inline into the caller compiled for a target_clones / target ISA, so the
// loop is vectorized for that ISA (an out-of-line helper is compiled for the baseline only).
#define SEGSLIM_INLINE inline __attribute__((always_inline))

namespace segslim::engine {

// AVX-512 F/BW/VL (Intel since Skylake-SP, AMD since Zen 4), unless the environment sets
// SEGSLIM_NO_AVX512=1: then the portable paths run (the tests check both on one machine).
// Read on every call: cheap next to a kernel, and a test may change it between runs.
bool use_avx512();

}  // namespace segslim::engine

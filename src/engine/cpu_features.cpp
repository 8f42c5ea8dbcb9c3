#include "engine/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace segslim::engine {

bool use_avx512() {
  const char* off = std::getenv("SEGSLIM_NO_AVX512");
  if (off && std::strcmp(off, "1") == 0) return false;
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace segslim::engine

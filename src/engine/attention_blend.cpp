#include "engine/attention_blend.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "common/error.h"
#include "engine/cpu_features.h"
#include "engine/int8_store.h"

namespace segslim::engine {

namespace {

template <typename T>
SEGSLIM_INLINE void store(float v, float inv, T* o) {
  if constexpr (std::is_same_v<T, float>) {
    *o = v;
  } else {
    *o = saturate_round<T>(v * inv);
  }
}

// Pixels [begin, end). The products and their sum are rounded separately, as the Mul, Mul and
// Add steps would: CMakeLists.txt compiles this file with -ffp-contract=off (no fused
// multiply-add).
template <typename T>
SEGSLIM_INLINE void blend_pixels(const BlendArgs& g, float inv, int64_t begin, int64_t end) {
  const int64_t c = g.channels;
  T* out = static_cast<T*>(g.out);
  for (int64_t p = begin; p < end; ++p) {
    const float a = g.a[p], b = g.b[p];
    const float* __restrict x = g.x + p * c;
    const float* __restrict y = g.y + p * c;
    T* __restrict o = out + p * c;
    for (int64_t k = 0; k < c; ++k) {
      const float xa = x[k] * a;
      const float yb = y[k] * b;
      store(xa + yb, inv, o + k);
    }
  }
}

#define SEGSLIM_BLEND_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
SEGSLIM_BLEND_CLONES void blend_f32(const BlendArgs& g, float inv, int64_t begin, int64_t end) {
  blend_pixels<float>(g, inv, begin, end);
}
SEGSLIM_BLEND_CLONES void blend_s8(const BlendArgs& g, float inv, int64_t begin, int64_t end) {
  blend_pixels<int8_t>(g, inv, begin, end);
}
SEGSLIM_BLEND_CLONES void blend_u8(const BlendArgs& g, float inv, int64_t begin, int64_t end) {
  blend_pixels<uint8_t>(g, inv, begin, end);
}
#undef SEGSLIM_BLEND_CLONES

}  // namespace

void attention_blend_nhwc(const BlendArgs& g) {
  SEGSLIM_CHECK(g.x && g.a && g.y && g.b && g.out && g.pixels > 0 && g.channels > 0,
                "attention_blend_nhwc: empty arguments");
  SEGSLIM_CHECK(g.type != ElemType::kF16, "attention_blend_nhwc: no float16 output");
  SEGSLIM_CHECK(g.type == ElemType::kF32 || g.scale > 0, "attention_blend_nhwc: output scale ",
                g.scale, " must be positive");
  const float inv = 1.f / g.scale;
  const int64_t grain = std::max<int64_t>(1, 4096 / g.channels);
  at::parallel_for(0, g.pixels, grain, [&](int64_t begin, int64_t end) {
    switch (g.type) {
      case ElemType::kF32:
        return blend_f32(g, inv, begin, end);
      case ElemType::kS8:
        return blend_s8(g, inv, begin, end);
      case ElemType::kU8:
        return blend_u8(g, inv, begin, end);
      case ElemType::kF16:  // refused above
        return;
    }
  });
}

}  // namespace segslim::engine

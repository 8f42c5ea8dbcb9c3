#pragma once
// Average pooling of an int8 tensor (u8 or s8, zero point 0, channels last) into float:
// y = scale * sum(q over the window) / count. It is exact for the QDQ graph
// DQ(q) -> AveragePool, where oneDNN's int8 pooling would round the mean back to the input's
// grid and a requantization to the consumer's scale would round it again (a whole output step
// apart on real models). oneDNN 2.6 has no int8-in, f32-out pooling. The mean can also be
// quantized once to the consumer's scale (the pool's Q, or an int8 Concat's): exactly
// Q(AveragePool(DQ(q))), without the float tensor in between.
#include <cstdint>

namespace segslim::engine {

struct Int8AvgPoolShape {
  int64_t n, c, h, w;  // input, NHWC in memory
  int64_t oh, ow;      // output, NHWC in memory
  int64_t kh, kw, sh, sw;
  int64_t pad_top, pad_left;
  bool count_include_pad;  // divide by kh*kw (padding counts as zeros) or by the valid taps
};

// What the kernel writes: the float mean, or QuantizeLinear of it with zero point 0 (rounded
// half to even, saturated), NHWC like the input.
enum class PoolOut { kF32, kU8, kS8 };

// Threads: ATen's. Windows of at most 128 taps (the sums are int16). out_scale: the
// quantized output's scale (ignored for kF32).
void avg_pool_int8_nhwc(const void* src, bool src_unsigned, float scale, void* dst, PoolOut out,
                        float out_scale, const Int8AvgPoolShape& s);

}  // namespace segslim::engine

#pragma once
// QuantizeLinear of a plain NCHW float tensor into channels-last int8: the engine's kernel for
// the network input, an RGB image the caller hands over as NCHW. oneDNN's reorder does this
// layout change and the rounding in one primitive, but for three channels it walks the planes
// element by element; here 16 pixels of each plane are quantized in vector registers and
// interleaved there (ESPNet's 1x3x360x480 input in `segslim bench --profile`: 0.14 ms as a
// reorder, 0.05 ms; a 1x3x1024x2048 input is bound by reading its 25 MB either way).
#include <cstdint>

namespace segslim::engine {

// dst[n, y, x, c] = saturate(round_half_even(src[n, c, y, x] * inv_scale) + zero_point), to
// uint8 when `to_u8` else int8: ONNX QuantizeLinear (and oneDNN's reorder with output scale
// inv_scale, which multiplies by the reciprocal as here). Threads: ATen's.
void quantize_nchw_to_nhwc(const float* src, void* dst, int64_t n, int64_t c, int64_t h, int64_t w,
                           float inv_scale, int32_t zero_point, bool to_u8);

}  // namespace segslim::engine

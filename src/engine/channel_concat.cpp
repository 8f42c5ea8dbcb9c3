#include "engine/channel_concat.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace segslim::engine {

namespace {

// Pixels [begin, end) of one piece into its column of the output rows (stride: output bytes
// per pixel). T: a piece exactly one element of that width wide.
template <typename T>
void copy_column(const uint8_t* src, uint8_t* dst, int64_t stride, int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; ++p) {
    T v;
    std::memcpy(&v, src + p * sizeof(T), sizeof(T));
    std::memcpy(dst + p * stride, &v, sizeof(T));
  }
}

}  // namespace

void concat_channels_nhwc(const std::vector<ChannelPiece>& pieces, void* out, int64_t pixels) {
  int64_t stride = 0;
  for (const auto& p : pieces) {
    SEGSLIM_CHECK(p.data != nullptr && p.bytes > 0, "concat_channels_nhwc: an empty piece");
    stride += p.bytes;
  }
  auto* dst = static_cast<uint8_t*>(out);
  // Blocks of pixels, each piece's whole block at a time: its source is read in order and the
  // output rows of a block (<= 64 KiB) stay in cache across the pieces.
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / stride);
  at::parallel_for(0, pixels, grain, [&](int64_t first, int64_t last) {
    for (int64_t begin = first; begin < last; begin += grain) {
      const int64_t end = std::min(last, begin + grain);
      int64_t offset = 0;
      for (const auto& piece : pieces) {
        const auto* src = static_cast<const uint8_t*>(piece.data);
        uint8_t* col = dst + offset;
        switch (piece.bytes) {
          case 1:
            copy_column<uint8_t>(src, col, stride, begin, end);
            break;
          case 2:
            copy_column<uint16_t>(src, col, stride, begin, end);
            break;
          case 4:
            copy_column<uint32_t>(src, col, stride, begin, end);
            break;
          case 8:
            copy_column<uint64_t>(src, col, stride, begin, end);
            break;
          default:
            for (int64_t p = begin; p < end; ++p)
              std::memcpy(col + p * stride, src + p * piece.bytes, piece.bytes);
        }
        offset += piece.bytes;
      }
    }
  });
}

}  // namespace segslim::engine

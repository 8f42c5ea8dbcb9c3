#include "engine/channel_concat.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "engine/cpu_features.h"

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

// Any width up to 64 bytes (kMaskedPieceBytes): one masked 512-bit load and store per pixel.
// Masked-off bytes are neither read nor written (no fault past the end of the source, no
// store over the neighbouring piece's column).
__attribute__((target("avx512f,avx512bw"))) void copy_column_masked(const uint8_t* src,
                                                                    uint8_t* dst, int64_t stride,
                                                                    int64_t bytes, int64_t begin,
                                                                    int64_t end) {
  const __mmask64 mask = _cvtu64_mask64(bytes >= 64 ? ~0ULL : (1ULL << bytes) - 1);
  for (int64_t p = begin; p < end; ++p)
    _mm512_mask_storeu_epi8(dst + p * stride, mask, _mm512_maskz_loadu_epi8(mask, src + p * bytes));
}

}  // namespace

void concat_channels_nhwc(const std::vector<ChannelPiece>& pieces, void* out, int64_t pixels) {
  int64_t stride = 0;
  for (const auto& p : pieces) {
    SEGSLIM_CHECK(p.data != nullptr && p.bytes > 0, "concat_channels_nhwc: an empty piece");
    stride += p.bytes;
  }
  auto* dst = static_cast<uint8_t*>(out);
  const bool masked = use_avx512();
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
        const bool power_of_two = (piece.bytes & (piece.bytes - 1)) == 0 && piece.bytes <= 8;
        if (masked && !power_of_two && piece.bytes <= kMaskedPieceBytes) {
          copy_column_masked(src, col, stride, piece.bytes, begin, end);
          offset += piece.bytes;
          continue;
        }
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

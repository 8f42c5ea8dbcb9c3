#pragma once
// Concatenation along the channels of channels-last (NHWC) tensors: each output pixel is the
// pieces' pixels side by side. For the 1-channel maps of PP-LiteSeg's UAFM attention (channel
// mean and max of two features, concatenated into 4 channels) oneDNN 2.6's concat took 0.66 ms
// at 1/8 of 1024x2048 (`segslim bench --profile`), more than the reductions that made them;
// here a piece's bytes are copied with a fixed-width store where they are few (0.03 ms), or
// with one masked AVX-512 load and store for other widths up to 64 bytes (ESPNet's decoder
// concat of 12 + 19 int8 channels at 180x240: oneDNN's simple concat took 0.64 ms).
#include <cstdint>
#include <vector>

namespace segslim::engine {

// Widest piece the masked copy takes; wider ones go through memcpy.
inline constexpr int64_t kMaskedPieceBytes = 64;

struct ChannelPiece {
  const void* data = nullptr;
  int64_t bytes = 0;  // per pixel: channels x element size
};

// out: pixels x (sum of the pieces' bytes), piece i at the offset of the pieces before it.
// Threads: ATen's.
void concat_channels_nhwc(const std::vector<ChannelPiece>& pieces, void* out, int64_t pixels);

}  // namespace segslim::engine

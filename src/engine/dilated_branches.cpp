#include "engine/dilated_branches.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common/error.h"
#include "engine/cpu_features.h"

namespace segslim::engine {

namespace {

constexpr int64_t kPixels = 16;   // output pixels of one channel per register (s32 lanes)
constexpr int64_t kGroup = 4;     // input channels per lane and vpdpbusd
constexpr int kMaxChannels = 24;  // output channels (accumulators) per kernel call

// Channels [first, first + count) of a branch: one kernel call's accumulators.
struct ChannelRun {
  int64_t first, count;
};

// One branch as the kernel reads it.
struct Packed {
  int64_t out_channels = 0;
  int64_t offset = 0;     // its first channel in the concatenation
  int64_t previous = -1;  // the previous piece's first channel, or -1: no sum
  int64_t dilation = 1;
  // [tap][input group][out][kGroup]: the 4 bytes a channel's lanes multiply, broadcast
  std::vector<int8_t> w;
  // [packed group][out][kGroup]: the remainder channels' weights, tap by tap (Layout)
  std::vector<int8_t> w_rest;
  int64_t dilation_index = 0;      // its dilation among the block's distinct ones
  std::vector<float> alpha, beta;  // [out]
  std::vector<ChannelRun> runs;    // the channels split evenly into calls
  // Taps that read only the padding border for all of a strip's pixels (a row within the
  // dilation of the top or bottom edge; a strip within it of the left or right edge) add a
  // known constant, so the kernel skips them: at ESPNet's level 3 (45 x 60) the dilation-16
  // branch reads the border at 37% of its tap-pixel pairs. Per edge set (kTop | kBottom |
  // kLeft | kRight): the taps still read, and per output channel 128 x the sum of their
  // weights (s8 source: what the 128 added to each code contributes; u8 source: 0).
  struct Tap {
    int64_t src, w;  // byte offset in the padded image, element offset in w
  };
  std::array<std::array<Tap, 9>, 16> live_taps{};
  std::array<int, 16> live_count{};
  std::array<std::vector<int32_t>, 16> compensation;
};

enum Edge { kTop = 1, kBottom = 2, kLeft = 4, kRight = 8 };

// The edges whose taps at dilation d lie wholly in the border for the pixels [x0, x1) of row
// y of an h x w map.
int border_edges(int64_t y, int64_t x0, int64_t x1, int64_t h, int64_t w, int64_t d) {
  return (y - d < 0 ? kTop : 0) | (y + d >= h ? kBottom : 0) | (x1 - 1 - d < 0 ? kLeft : 0) |
         (x0 + d >= w ? kRight : 0);
}

// The padded image is group-planar: row y holds, for each group of 4 input channels, the row's
// pixels of 4 bytes, so that 16 consecutive pixels of a group are one 64-byte load.
// Input channels past the last whole group (C % 4 of them: ESPNet's level 3 has 25) would fill
// a group of their own with zeros at every tap, 9 groups for 9 bytes at C % 4 = 1; they are
// packed across the taps instead: byte k = t * rest + j of a pixel's packed row is remainder
// channel j at tap t (packed_groups = ceil(9 rest / 4) groups, 3 for ESPNet's 25: level 3's
// 63 groups per output channel become 57). A packed row is built per output row and dilation,
// from a padded plane per remainder channel.
struct Layout {
  int64_t groups, padded_w;  // whole groups; bytes of a group's row: padded_w * kGroup
  int64_t rest = 0, packed_groups = 0;
  int64_t packed_w = 0;  // pixels of a packed group's row (whole blocks of 16)
};

// OC channels of branch b from its channel `first`, at the 16 pixels from src (the padded
// image at the first pixel, group 0), into plane (the concatenation's channels, each a row of
// 16 floats). All OC accumulators stay in registers; per tap and group, one load of 16 pixels'
// inputs serves all of them, each multiplied by a channel's 4 weights broadcast to all lanes.
// packed: the packed row of b's dilation at the first pixel, packed group 0 (Layout).
template <int OC>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void channels_at_16_pixels(
    const uint8_t* src, const uint8_t* packed, const Layout& l, const Packed& b, int edges,
    int64_t first, float* plane) {
  const Packed::Tap* live = b.live_taps[edges].data();
  const int n_live = b.live_count[edges];
  const int32_t* compensation = b.compensation[edges].data() + first;
  __m512i acc[OC];  // starting at minus the compensation: exact int32 sums throughout
#pragma GCC unroll 24
  for (int o = 0; o < OC; ++o) acc[o] = _mm512_set1_epi32(-compensation[o]);
  const int64_t group_bytes = l.padded_w * kGroup, O = b.out_channels;
  for (int i = 0; i < n_live; ++i) {
    const uint8_t* s = src + live[i].src;
    const int8_t* w = b.w.data() + live[i].w + first * kGroup;
    for (int64_t g = 0; g < l.groups; ++g, s += group_bytes, w += O * kGroup) {
      const __m512i x = _mm512_loadu_si512(s);
      // acc[o] += x . (channel o's 4 weights, broadcast): the broadcast is the instruction's
      // memory operand ({1to16}); GCC 12 makes it a separate load per multiply instead
      // (ESPNet's blocks 3-4% slower). No memory operand is declared: the packed weights are
      // written only at construction.
#pragma GCC unroll 24
      for (int o = 0; o < OC; ++o)
        asm("vpdpbusd %c[off](%[w])%{1to16%}, %[x], %[acc]"
            : [acc] "+v"(acc[o])
            : [x] "v"(x), [w] "r"(w), [off] "i"(o * kGroup));
    }
  }
  for (int64_t g = 0; g < l.packed_groups; ++g) {
    const __m512i x = _mm512_loadu_si512(packed + g * l.packed_w * kGroup);
    const int8_t* w = b.w_rest.data() + (g * O + first) * kGroup;
#pragma GCC unroll 24
    for (int o = 0; o < OC; ++o)
      asm("vpdpbusd %c[off](%[w])%{1to16%}, %[x], %[acc]"
          : [acc] "+v"(acc[o])
          : [x] "v"(x), [w] "r"(w), [off] "i"(o * kGroup));
  }
#pragma GCC unroll 24
  for (int o = 0; o < OC; ++o) {
    const int64_t c = first + o;
    // the real output as oneDNN's int8 convolution computes it: scale x (exact) sum + bias
    __m512 f = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(__mmask16(0xffff), acc[o]),
                               _mm512_set1_ps(b.alpha[c]), _mm512_set1_ps(b.beta[c]));
    if (b.previous >= 0) f = _mm512_add_ps(f, _mm512_loadu_ps(plane + (b.previous + c) * kPixels));
    _mm512_storeu_ps(plane + (b.offset + c) * kPixels, f);
  }
}

using Kernel = void (*)(const uint8_t*, const uint8_t*, const Layout&, const Packed&, int, int64_t,
                        float*);
template <size_t... I>
constexpr std::array<Kernel, sizeof...(I)> kernel_table(std::index_sequence<I...>) {
  return {channels_at_16_pixels<static_cast<int>(I) + 1>...};
}
constexpr std::array<Kernel, kMaxChannels> kKernels =
    kernel_table(std::make_index_sequence<kMaxChannels>());

// Planes [c0, c0 + 16) (16 pixels each) as 16 pixels of channels c0.. in out (a pixel every
// `stride` floats): a 16 x 16 transpose in registers; `pixels` and `channels` (<= 16) limit
// what is stored.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void planes_to_pixels(
    const float* plane, int64_t pixels, int64_t channels, float* out, int64_t stride) {
  // the maskz forms with every lane on: GCC 12 warns about the plain ones' undefined operand
  const __mmask16 all = 0xffff;
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i)
    r[i] = i < channels ? _mm512_loadu_ps(plane + i * kPixels) : _mm512_setzero_ps();
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved
    t[i] = _mm512_maskz_unpacklo_ps(all, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(all, r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // quadruples: 4 rows' values at 4 columns per 128 bits
    r[i] = _mm512_maskz_shuffle_ps(all, t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_maskz_shuffle_ps(all, t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_maskz_shuffle_ps(all, t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_maskz_shuffle_ps(all, t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit blocks: columns j and j + 8, then j + 4 and j + 12
    t[i] = _mm512_maskz_shuffle_f32x4(all, r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_maskz_shuffle_f32x4(all, r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_maskz_shuffle_f32x4(all, r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_maskz_shuffle_f32x4(all, r[i + 8], r[i + 12], 0xdd);
  }
  const __mmask16 m = channels >= 16 ? __mmask16(0xffff) : __mmask16((1u << channels) - 1);
  for (int i = 0; i < 8; ++i) {  // t[i], t[i + 8]: rows 0-7 and 8-15 of columns i and i + 8
    const __m512 lo = _mm512_maskz_shuffle_f32x4(all, t[i], t[i + 8], 0x88);
    const __m512 hi = _mm512_maskz_shuffle_f32x4(all, t[i], t[i + 8], 0xdd);
    if (i < pixels) _mm512_mask_storeu_ps(out + i * stride, m, lo);
    if (i + 8 < pixels) _mm512_mask_storeu_ps(out + (i + 8) * stride, m, hi);
  }
}

// A row of w pixels of c codes into the padded image's row (group-planar) and the remainder
// channels' planes (rest: plane j's row at the first pixel, planes `rest_plane` bytes apart),
// each byte XOR flip (0x80 turns s8 codes into u8 codes + 128).
void fill_row(const uint8_t* src, uint8_t* dst, uint8_t* rest, int64_t rest_plane, int64_t w,
              int64_t c, const Layout& l, uint8_t flip) {
  const int64_t group_bytes = l.padded_w * kGroup, whole = l.groups;
  const uint32_t flip4 = flip * 0x01010101u;
  for (int64_t x = 0; x < w; ++x, src += c, dst += kGroup) {
    for (int64_t g = 0; g < whole; ++g) {
      uint32_t v;
      std::memcpy(&v, src + g * kGroup, sizeof v);
      v ^= flip4;
      std::memcpy(dst + g * group_bytes, &v, sizeof v);
    }
    for (int64_t j = 0; j < l.rest; ++j) rest[j * rest_plane + x] = src[whole * kGroup + j] ^ flip;
  }
}

// The packed row (Layout) of an output row at one dilation: for each 16 pixels and packed
// group, the 4 bytes of each pixel from the remainder planes (rest: plane 0 at the input's
// pixel (y, 0); the border holds the code of zero, as in the padded image) at
// offsets[group * 4 + byte] from it (bytes past the 9 x rest: zero, like their weights).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void pack_rest_row(const uint8_t* rest,
                                                                        const int64_t* offsets,
                                                                        int64_t w, const Layout& l,
                                                                        uint8_t* out) {
  for (int64_t x0 = 0; x0 < w; x0 += kPixels)
    for (int64_t g = 0; g < l.packed_groups; ++g) {
      __m512i v = _mm512_setzero_si512();
      for (int64_t lane = 0; lane < kGroup; ++lane) {
        const int64_t byte = g * kGroup + lane;
        if (byte >= 9 * l.rest) break;
        const uint8_t* at = rest + offsets[byte] + x0;
        // 16 pixels, one per lane (the maskz forms with every lane on: GCC 12 warns about the
        // plain ones' undefined operand)
        const __m512i bytes = _mm512_maskz_cvtepu8_epi32(
            __mmask16(0xffff), _mm_loadu_si128(reinterpret_cast<const __m128i*>(at)));
        v = _mm512_or_si512(
            v, _mm512_maskz_slli_epi32(__mmask16(0xffff), bytes, static_cast<unsigned>(8 * lane)));
      }
      _mm512_storeu_si512(out + (g * l.packed_w + x0) * kGroup, v);
    }
}

template <typename T>
T* element(T* base, ElemType type, int64_t i) {
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<Byte*>(base) + i * elem_bytes(type));
}

}  // namespace

bool dilated_branches_supported() { return use_avx512() && __builtin_cpu_supports("avx512vnni"); }

struct DilatedBranches::Impl {
  DilatedBranchesShape shape;
  Layout layout{};
  int64_t border = 0, channels = 0;
  std::vector<Packed> branches;
  ConcatAffineCoefficients coefficients;
  std::unique_ptr<ConcatAffineRows> tail;
  std::vector<uint8_t> padded;  // one image: (h + 2 border) rows of groups x padded_w x 4
  // the remainder channels: Layout::rest planes of (h + 2 border) rows of rest_w bytes
  std::vector<uint8_t> rest;
  int64_t rest_w = 0, rest_plane = 0;
  std::vector<int64_t> dilations;  // distinct, in the branches' order
  // per distinct dilation and packed byte (t * rest + j): its offset in the remainder planes
  std::vector<std::vector<int64_t>> pack_offsets;

  Impl(const DilatedBranchesShape& s, const std::vector<float>& a, const std::vector<float>& b,
       const std::vector<float>& slope, ConcatQuant concat_quant)
      : shape(s), coefficients(a, b, slope, concat_quant) {}

  // The padded image at the input's pixel (y, 0), group 0.
  uint8_t* row(int64_t y) {
    return padded.data() + ((y + border) * layout.groups * layout.padded_w + border) * kGroup;
  }
  // The remainder planes at the input's pixel (y, 0), plane 0.
  uint8_t* rest_row(int64_t y) { return rest.data() + (y + border) * rest_w + border; }
};

DilatedBranches::DilatedBranches(const DilatedBranchesShape& shape,
                                 const std::vector<DilatedBranch>& branches,
                                 const std::vector<float>& a, const std::vector<float>& b,
                                 const std::vector<float>& slope, ConcatQuant concat_quant)
    : impl_(std::make_unique<Impl>(shape, a, b, slope, concat_quant)) {
  Impl& k = *impl_;
  const int64_t C = shape.in_channels;
  SEGSLIM_CHECK(dilated_branches_supported(), "dilated_branches: this CPU has no AVX-512 VNNI");
  SEGSLIM_CHECK(!branches.empty() && shape.n > 0 && shape.h > 0 && shape.w > 0 && C > 0,
                "dilated_branches: ", branches.size(), " branches over ", shape.n, "x", shape.h,
                "x", shape.w, "x", C, " input");
  SEGSLIM_CHECK(shape.src_type == ElemType::kS8 || shape.src_type == ElemType::kU8,
                "dilated_branches: the input must be int8 codes");
  const bool s8 = shape.src_type == ElemType::kS8;
  for (const auto& br : branches) k.border = std::max(k.border, br.dilation);
  k.layout.groups = C / kGroup;
  k.layout.rest = C % kGroup;
  k.layout.packed_groups = (9 * k.layout.rest + kGroup - 1) / kGroup;
  k.layout.packed_w = (shape.w + kPixels - 1) / kPixels * kPixels;
  // a packed row's last 16 pixels read past the row's end into the border
  k.rest_w = k.layout.packed_w + 2 * k.border;
  k.rest_plane = (shape.h + 2 * k.border) * k.rest_w;
  // whole blocks of 16 pixels: a row's last block reads past its end into the border
  k.layout.padded_w = (shape.w + kPixels - 1) / kPixels * kPixels + 2 * k.border;
  const int64_t row_bytes = k.layout.groups * k.layout.padded_w * kGroup;
  for (size_t i = 0; i < branches.size(); ++i) {
    const DilatedBranch& br = branches[i];
    const int64_t O = br.out_channels;
    SEGSLIM_CHECK(O > 0 && br.dilation >= 1, "dilated_branches: branch ", i, " has ", O,
                  " output channels and dilation ", br.dilation);
    SEGSLIM_CHECK(
        static_cast<int64_t>(br.weights.size()) == O * C * 9 &&
            static_cast<int64_t>(br.alpha.size()) == O && static_cast<int64_t>(br.beta.size()) == O,
        "dilated_branches: branch ", i, " has ", br.weights.size(), " weights, ", br.alpha.size(),
        " scales and ", br.beta.size(), " biases for ", O, "x", C, "x3x3");
    SEGSLIM_CHECK(!br.add_previous || (i > 0 && branches[i - 1].out_channels == O),
                  "dilated_branches: branch ", i, " adds a previous branch of another width");
    Packed p;
    p.out_channels = O;
    p.offset = k.channels;
    p.previous = br.add_previous ? k.branches.back().offset : -1;
    p.dilation = br.dilation;
    const auto known = std::find(k.dilations.begin(), k.dilations.end(), br.dilation);
    p.dilation_index = known - k.dilations.begin();
    if (known == k.dilations.end()) k.dilations.push_back(br.dilation);
    const int64_t G = k.layout.groups;
    p.w.assign(static_cast<size_t>(9 * G * O * kGroup), 0);
    p.w_rest.assign(static_cast<size_t>(k.layout.packed_groups * O * kGroup), 0);
    // per output channel: the whole groups' weight sum per tap, the remainder's over all taps
    // (its packed rows are read whole, border bytes included)
    std::vector<std::array<int32_t, 9>> tap_sums(static_cast<size_t>(O));
    std::vector<int32_t> rest_sums(static_cast<size_t>(O), 0);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < 9; ++t) {
          const int8_t v = br.weights[static_cast<size_t>((o * C + c) * 9 + t)];
          if (c < G * kGroup) {
            p.w[static_cast<size_t>(((t * G + c / kGroup) * O + o) * kGroup + c % kGroup)] = v;
            tap_sums[static_cast<size_t>(o)][static_cast<size_t>(t)] += v;
          } else {
            const int64_t byte = t * k.layout.rest + c - G * kGroup;  // in the packed row
            p.w_rest[static_cast<size_t>((byte / kGroup * O + o) * kGroup + byte % kGroup)] = v;
            rest_sums[static_cast<size_t>(o)] += v;
          }
        }
    for (int edges = 0; edges < 16; ++edges) {
      p.compensation[edges].assign(static_cast<size_t>(O), 0);
      for (size_t o = 0; o < static_cast<size_t>(O) && s8; ++o)
        p.compensation[edges][o] = 128 * rest_sums[o];
      for (int t = 0; t < 9; ++t) {
        const int row = t / 3, col = t % 3;  // the tap reads (y + (row - 1) d, x + (col - 1) d)
        if (((edges & kTop) && row == 0) || ((edges & kBottom) && row == 2) ||
            ((edges & kLeft) && col == 0) || ((edges & kRight) && col == 2))
          continue;
        const int64_t src = ((row - 1) * row_bytes + (col - 1) * kGroup) * br.dilation;
        p.live_taps[edges][p.live_count[edges]++] = {src, t * k.layout.groups * O * kGroup};
        for (size_t o = 0; o < static_cast<size_t>(O) && s8; ++o)
          p.compensation[edges][o] += 128 * tap_sums[o][static_cast<size_t>(t)];
      }
    }
    p.alpha = br.alpha;
    p.beta = br.beta;
    const int64_t calls = (O + kMaxChannels - 1) / kMaxChannels;
    for (int64_t j = 0, first = 0; j < calls; ++j) {
      const int64_t count = O / calls + (j < O % calls ? 1 : 0);
      p.runs.push_back({first, count});
      first += count;
    }
    k.channels += O;
    k.branches.push_back(std::move(p));
  }
  SEGSLIM_CHECK(k.channels == k.coefficients.channels, "dilated_branches: the branches make ",
                k.channels, " channels, the tail's coefficients are for ", k.coefficients.channels);
  k.padded.assign(static_cast<size_t>((shape.h + 2 * k.border) * row_bytes), s8 ? 0x80 : 0);
  k.rest.assign(static_cast<size_t>(k.layout.rest * k.rest_plane), s8 ? 0x80 : 0);
  for (const int64_t d : k.dilations) {
    std::vector<int64_t> at(static_cast<size_t>(9 * k.layout.rest));
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t j = 0; j < k.layout.rest; ++j)  // remainder channel j at tap t
        at[static_cast<size_t>(t * k.layout.rest + j)] =
            j * k.rest_plane + ((t / 3 - 1) * k.rest_w + (t % 3 - 1)) * d;
    k.pack_offsets.push_back(std::move(at));
  }
  ConcatAffineArgs layout;
  layout.pieces = {AffineInput{nullptr, ElemType::kF32, 1.f, k.channels}};
  layout.coefficients = &k.coefficients;
  k.tail = std::make_unique<ConcatAffineRows>(layout);
}

DilatedBranches::~DilatedBranches() = default;

int64_t DilatedBranches::channels() const { return impl_->channels; }

void DilatedBranches::run(const void* src, const AffineInput& residual,
                          const std::vector<AffineOutput>& outs) {
  Impl& k = *impl_;
  const int64_t H = k.shape.h, W = k.shape.w, C = k.shape.in_channels, Ct = k.channels;
  SEGSLIM_CHECK(!residual.data || residual.channels == Ct, "dilated_branches: the residual has ",
                residual.channels, " channels, the output ", Ct);
  const uint8_t flip = k.shape.src_type == ElemType::kS8 ? 0x80 : 0;
  const int64_t planes = (Ct + 15) / 16 * 16;
  for (int64_t i = 0; i < k.shape.n; ++i) {
    const auto* image = static_cast<const uint8_t*>(src) + i * H * W * C;
    at::parallel_for(0, H, 1, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y)
        fill_row(image + y * W * C, k.row(y), k.rest_row(y), k.rest_plane, W, C, k.layout, flip);
    });
    at::parallel_for(0, H, 1, [&](int64_t y0, int64_t y1) {
      // a row of the concatenation, channels-last; 16 pixels of it as planes of channels
      std::vector<float> scratch(static_cast<size_t>(W * Ct));
      std::vector<float> plane(static_cast<size_t>(planes * kPixels), 0.f);
      // the row's packed rows, one per dilation
      const int64_t packed_bytes = k.layout.packed_groups * k.layout.packed_w * kGroup;
      std::vector<uint8_t> packed(static_cast<size_t>(k.dilations.size() * packed_bytes));
      ConcatAffineArgs args;
      args.pieces = {AffineInput{scratch.data(), ElemType::kF32, 1.f, Ct}};
      args.coefficients = &k.coefficients;
      args.outs = outs;
      args.residual = residual;
      for (int64_t y = y0; y < y1; ++y) {
        const int64_t first = (i * H + y) * W * Ct;  // the row's first element in the outputs
        if (residual.data) args.residual.data = element(residual.data, residual.type, first);
        for (size_t o = 0; o < outs.size(); ++o)
          args.outs[o].data = element(outs[o].data, outs[o].type, first);
        if (k.layout.rest > 0)
          for (size_t di = 0; di < k.dilations.size(); ++di)
            pack_rest_row(k.rest_row(y), k.pack_offsets[di].data(), W, k.layout,
                          packed.data() + static_cast<int64_t>(di) * packed_bytes);
        for (int64_t x0 = 0; x0 < W; x0 += kPixels) {
          const uint8_t* s = k.row(y) + x0 * kGroup;
          const int64_t x1 = std::min(W, x0 + kPixels);
          for (const Packed& b : k.branches) {
            const int edges = border_edges(y, x0, x1, H, W, b.dilation);
            const uint8_t* pk = k.layout.rest == 0
                                    ? nullptr
                                    : packed.data() + b.dilation_index * packed_bytes + x0 * kGroup;
            for (const ChannelRun& r : b.runs)
              kKernels[r.count - 1](s, pk, k.layout, b, edges, r.first, plane.data());
          }
          for (int64_t c0 = 0; c0 < Ct; c0 += 16)
            planes_to_pixels(plane.data() + c0 * kPixels, std::min(kPixels, W - x0),
                             std::min<int64_t>(16, Ct - c0), scratch.data() + x0 * Ct + c0, Ct);
        }
        k.tail->run(args, 0, W);
      }
    });
  }
}

}  // namespace segslim::engine

// Phase B of the engine's compilation (plan.h): oneDNN primitives for the IR steps. Layouts
// are chosen by oneDNN (format_tag::any) for convolutions and followed by the other ops;
// reorders are inserted only where a layout or type must change; weights are reordered into
// the primitive's layout once, here. Ops without a oneDNN path run the executor's ATen kernel
// on plain NCHW f32 copies ("aten" in describe()).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <sstream>
#include <unordered_set>

#include "common/error.h"
#include "engine/attention_blend.h"
#include "engine/bilinear_resize.h"
#include "engine/channel_concat.h"
#include "engine/channel_reduce.h"
#include "engine/concat_affine.h"
#include "engine/cpu_features.h"
#include "engine/dilated_branches.h"
#include "engine/int8_avg_pool.h"
#include "engine/plan.h"
#include "engine/planar_quantize.h"
#include "engine/tile_deconv.h"
#include "ops/registry.h"

namespace segslim::engine {
namespace {

class Lowering {
 public:
  Lowering(Plan& p, const dnnl::engine& eng, dnnl::stream& strm) : p_(p), eng_(eng), strm_(strm) {}

  void run() {
    Val& in = p_.vals[p_.input_val];
    in.md = memory::desc(mdims(in.dims), dt::f32, plain_tag(in.dims.size()));
    in.has_md = true;
    if (dilated_branches_supported()) fuse_dilated_branches(p_);
    for (size_t i = 0; i < p_.ir.size(); ++i) lower(p_.ir[i]);
  }

 private:
  const memory::desc& md(int v) {
    SEGSLIM_CHECK(p_.vals[v].has_md, "engine: value ", p_.vals[v].name, " has no layout yet");
    return p_.vals[v].md;
  }
  void set_md(int v, const memory::desc& m) {
    p_.vals[v].md = m;
    p_.vals[v].has_md = true;
  }
  static std::string describe(const memory::desc& m) {
    std::string s = "dims";
    for (int i = 0; i < m.data.ndims; ++i) s += (i ? "x" : " ") + std::to_string(m.data.dims[i]);
    s += str_cat(" type ", static_cast<int>(m.data.data_type), " format_kind ",
                 static_cast<int>(m.data.format_kind));
    return s;
  }
  static std::string impl(const dnnl::primitive_desc_base& pd) { return pd.impl_info_str(); }
  // m with data type t (the same layout).
  static memory::desc with_type(memory::desc m, dt t) {
    m.data.data_type = static_cast<dnnl_data_type_t>(t);
    return m;
  }

  // A value with exactly layout `want` (same dims and type): itself, or a reorder of it, made
  // once for all the consumers that want that layout (values are written once, so the copy
  // stays valid; the memory plan keeps it until its last reader).
  int ensure(int v, const memory::desc& want) {
    if (md(v) == want) return v;
    for (const auto& r : reorders_)
      if (r.src == v && r.md == want) return r.out;
    Val nv = p_.vals[v];
    nv.md = want;
    nv.has_md = true;
    nv.external = false;
    nv.name += "#reorder";
    p_.vals.push_back(nv);
    const int out = static_cast<int>(p_.vals.size()) - 1;
    dnnl::reorder::primitive_desc pd;
    try {
      pd = dnnl::reorder::primitive_desc(eng_, md(v), eng_, want);
    } catch (const dnnl::error&) {
      throw Error(str_cat("engine: no reorder of ", p_.vals[v].name, " from ", describe(md(v)),
                          " to ", describe(want)));
    }
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, v}, {DNNL_ARG_TO, out}};
    e.reads = {v};
    e.writes = {out};
    e.line = "Reorder " + p_.vals[v].name + " (layout)";
    p_.lines.push_back(e.line);
    p_.execs.push_back(std::move(e));
    reorders_.push_back({v, want, out});
    return out;
  }

  memory const_mem(const memory::desc& m, const void* data) {
    memory mem(m, eng_);
    std::memcpy(mem.get_data_handle(), data, m.get_size());
    return mem;
  }
  memory packed(const memory::desc& user, const void* data, const memory::desc& want) {
    memory src(user, eng_, const_cast<void*>(data));
    memory dst(want, eng_);
    dnnl::reorder(src, dst).execute(strm_, src, dst);
    strm_.wait();
    return dst;
  }

  // A primitive with one source and one destination value: the destination takes the
  // primitive's layout.
  template <typename Primitive, typename PrimitiveDesc>
  void push_unary(Step& s, int src, const PrimitiveDesc& pd) {
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = Primitive(pd);
    e.val_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  // A reorder of value src into s.out with layout dmd (and attr's scales, zero points).
  void push_reorder(Step& s, int src, const memory::desc& dmd, const dnnl::primitive_attr& attr) {
    dnnl::reorder::primitive_desc pd(eng_, md(src), eng_, dmd, attr);
    set_md(s.out, dmd);
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, "");
  }

  void push(Exec e, const Step& s, const std::string& detail) {
    std::string line = s.op + " " + s.name;
    for (const auto& t : s.tags) line += " " + t;
    if (!detail.empty()) line += " [" + detail + "]";
    e.line = line;
    p_.execs.push_back(std::move(e));
    p_.lines.push_back(line);
  }

  void lower(Step& s) {
    if (s.removed) return;
    switch (s.kind) {
      case Step::kConv:
        return conv(s);
      case Step::kPool:
        return pool(s);
      case Step::kConcat:
        return concat(s);
      case Step::kBinary:
        return binary(s);
      case Step::kElt:
        return eltwise(s);
      case Step::kPrelu:
        return prelu(s);
      case Step::kResample:
        return resample(s);
      case Step::kQuant:
        return quant(s);
      case Step::kDequant:
        return dequant(s);
      case Step::kMatmul:
        return matmul(s);
      case Step::kSoftmax:
        return softmax(s);
      case Step::kReduce:
        return reduce(s);
      case Step::kInt8AvgPool:
        return int8_avg_pool(s);
      case Step::kConcatAffine:
        return concat_affine(s);
      case Step::kBlend:
        return blend(s);
      case Step::kArgMax:
        return argmax(s);
      case Step::kTranspose:
        return transpose(s);
      case Step::kAten:
        return aten(s);
    }
  }

  // A ConvTranspose with kernel == stride that makes the graph's output: tile_deconv.h, the
  // NCHW output written directly (no reorder after a channels-last deconvolution).
  bool tile_deconv(Step& s) {
    if (!s.deconv || s.groups != 1 || !s.post.empty() || s.out != p_.output_val) return false;
    const Val out = p_.vals[s.out];  // copies: ensure() grows p_.vals
    const Val sv = p_.vals[s.in[0]];
    if (out.type != dt::f32 || out.dims.size() != 4 || sv.dims.size() != 4) return false;
    const int64_t kh = s.w.size(2), kw = s.w.size(3);
    const bool tiles = s.strides == std::vector<int64_t>{kh, kw} &&
                       s.dil == std::vector<int64_t>{1, 1} && s.pl == std::vector<int64_t>{0, 0} &&
                       s.pr == std::vector<int64_t>{0, 0};
    if (!tiles || kTileDeconvLanes % kw != 0 || out.dims[2] != sv.dims[2] * kh ||
        out.dims[3] != sv.dims[3] * kw)
      return false;
    const int64_t C = sv.dims[1], O = out.dims[1];
    // int8: s8 / u8 codes, the sums exact in float: |sum| <= C * 128 * 128 (s8) or C * 255 *
    // 128 (u8) < 2^24 (tile_deconv_int8_exact)
    const bool int8_in = sv.type == dt::s8 || sv.type == dt::u8;
    if (s.int8 ? !int8_in || !tile_deconv_int8_exact(C, elem_type(sv.type)) : sv.type != dt::f32)
      return false;
    const int src = ensure(s.in[0], memory::desc(mdims(sv.dims), sv.type, tag::acdb));
    set_md(s.out, memory::desc(mdims(out.dims), dt::f32, tag::abcd));
    // the weights as the kernel reads them, and the per-channel scale and bias: made once
    struct Weights {
      std::vector<float> pattern, scale, bias;
      TileDeconvInt8Weights int8;
    };
    auto k = std::make_shared<Weights>();
    const at::Tensor w = s.w.to(at::kFloat).contiguous();
    k->pattern = tile_deconv_pattern(w.data_ptr<float>(), C, O, kh, kw);
    if (s.int8)
      k->int8 = tile_deconv_int8_weights(w.data_ptr<float>(), C, O, kh, kw, elem_type(sv.type));
    k->scale = s.int8 ? s.alpha : std::vector<float>(O, 1.f);
    k->bias = s.int8 ? s.beta : s.b.defined() ? to_floats(s.b) : std::vector<float>(O, 0.f);
    TileDeconvArgs a;
    a.src_type = elem_type(sv.type);
    a.n = sv.dims[0];
    a.h = sv.dims[2];
    a.w = sv.dims[3];
    a.c = C;
    a.o = O;
    a.kh = kh;
    a.kw = kw;
    a.pattern = k->pattern.data();
    if (s.int8) {
      a.pattern8 = k->int8.pattern.data();
      a.pattern8_start = k->int8.start.data();
    }
    a.scale = k->scale.data();
    a.bias = k->bias.data();
    Exec e;
    Plan* plan = &p_;
    const int dst = s.out;
    e.custom = [plan, src, dst, a, k]() mutable {
      a.src = plan->mems[src].get_data_handle();
      a.out = static_cast<float*>(plan->mems[dst].get_data_handle());
      tile_deconv_to_nchw(a);
    };
    e.reads = {src};
    e.writes = {dst};
    if (s.int8) ++p_.int8_steps;
    push(std::move(e), s, "tiles -> nchw f32");
    return true;
  }

  void conv(Step& s) {
    if (tile_deconv(s)) return;
    const Val out = p_.vals[s.out];  // copies: lowering appends to p_.vals
    const int src = s.in[0];
    const Val sv = p_.vals[src];
    const int64_t OC = out.dims[1], IC = sv.dims[1], G = s.groups;
    const int64_t kh = s.w.size(2), kw = s.w.size(3);
    const dt wt = s.int8 ? dt::s8 : dt::f32;
    memory::dims wd =
        G == 1 ? memory::dims{OC, IC, kh, kw} : memory::dims{G, OC / G, IC / G, kh, kw};
    // ONNX conv [OC, IC/G, kh, kw] = oihw / goihw; ConvTranspose [IC, OC/G, kh, kw] = iohw / giohw
    const tag wuser =
        s.deconv ? (G == 1 ? tag::iohw : tag::giohw) : (G == 1 ? tag::oihw : tag::goihw);
    memory::dims strides = mdims(s.strides), pl = mdims(s.pl), pr = mdims(s.pr);
    memory::dims dil{s.dil[0] - 1, s.dil[1] - 1};  // oneDNN counts dilation from 0
    const bool has_bias = s.b.defined() || s.int8;
    memory::desc bmd({OC}, dt::f32, tag::x);
    dt dst_type = out.type;  // f32 when a PReLU must be split off an int8-out conv
    memory::desc wmd(wd, wt, tag::any);

    dnnl::primitive_attr attr;
    std::vector<float> bias, out_scales;
    float sy = 1.f, post_div = 1.f;
    auto int8_scales = [&]() {
      if (!s.int8) return;
      // oneDNN 2.x int8: dst = post_ops(oscale_c * (acc + bias_c)), bias added to the s32
      // accumulator before scaling, so bias_c = beta_c / alpha_c; with int8 dst the scale is
      // divided by the next Q's scale: oscale_c = alpha_c / s_y (post-ops then see values in
      // units of s_y: relu/prelu commute with a positive scale, clip bounds are divided by s_y).
      sy = dst_type == dt::f32 ? 1.f : out.scale;
      post_div = sy;
      std::vector<float> osc(OC);
      bias.resize(OC);
      for (int64_t c = 0; c < OC; ++c) {
        osc[c] = s.alpha[c] / sy;
        bias[c] = s.alpha[c] != 0.f ? s.beta[c] / s.alpha[c] : 0.f;
      }
      out_scales = osc;
    };
    int8_scales();
    if (!s.int8 && s.b.defined()) bias = to_floats(s.b);
    // Post-ops run in order on the (scaled) conv output.
    // A fresh attr each time: oneDNN 2.6's set_post_ops() copies the new entries over the old
    // ones without dropping the surplus, so a shortened chain would keep stale post-ops.
    auto set_post_ops = [&]() {
      attr = dnnl::primitive_attr();
      if (!out_scales.empty()) attr.set_output_scales(1 << 1, out_scales);
      dnnl::post_ops po;
      for (const auto& p : s.post) {
        if (p.kind == PostOp::kElt) {
          float a = p.alpha, b = p.beta;
          if (p.algo == alg::eltwise_clip) {
            a /= post_div;
            b /= post_div;
          }
          po.append_eltwise(1.f, p.algo, a, b);
        } else if (p.kind == PostOp::kPrelu) {
          po.append_prelu(1 << 1);
        } else {
          po.append_binary(alg::binary_add, md(p.val));
        }
      }
      attr.set_post_ops(po);
    };
    // the residual operand of an add post-op in the layout of dst (NHWC first)
    for (auto& p : s.post)
      if (p.kind == PostOp::kAdd)
        p.val = ensure(p.val, memory::desc(mdims(p_.vals[p.val].dims), dt::f32, tag::acdb));
    set_post_ops();

    auto make = [&](const memory::desc& smd, const memory::desc& dmd) -> dnnl::primitive_desc {
      if (!s.deconv) {
        auto d = has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            alg::convolution_direct, smd, wmd, bmd,
                                                            dmd, strides, dil, pl, pr)
                          : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            alg::convolution_direct, smd, wmd, dmd,
                                                            strides, dil, pl, pr);
        return dnnl::convolution_forward::primitive_desc(d, attr, eng_);
      }
      auto d = has_bias ? dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            alg::deconvolution_direct, smd, wmd,
                                                            bmd, dmd, strides, dil, pl, pr)
                        : dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            alg::deconvolution_direct, smd, wmd,
                                                            dmd, strides, dil, pl, pr);
      return dnnl::deconvolution_forward::primitive_desc(d, attr, eng_);
    };
    // Layouts: activations stay NHWC (channels of any count, cheap concat, int8's native
    // layout); the producer's layout first, then NHWC, then whatever oneDNN prefers; the first
    // non-reference kernel wins.
    auto is_ref = [&](const dnnl::primitive_desc& p) {
      return impl(p).find("ref") != std::string::npos;
    };
    // A non-negative s8 source (plan.h, Val::nonneg) is read as u8: the same bytes.
    const bool as_u8 = s.int8 && sv.type == dt::s8 && sv.nonneg;
    const dt src_type = as_u8 ? dt::u8 : sv.type;
    auto search = [&]() {
      const memory::desc nhwc_d(mdims(out.dims), dst_type, tag::acdb);
      const memory::desc dmd(mdims(out.dims), dst_type, tag::any);
      const memory::desc nhwc_s(mdims(sv.dims), src_type, tag::acdb);
      const memory::desc any_s(mdims(sv.dims), src_type, tag::any);
      const std::vector<std::pair<memory::desc, memory::desc>> tries{
          {with_type(md(src), src_type), nhwc_d}, {nhwc_s, nhwc_d}, {any_s, dmd}};
      dnnl::primitive_desc best;
      bool have = false;
      for (const auto& [a, d] : tries) {
        try {
          auto p = make(a, d);
          if (!is_ref(p)) return p;
          if (!have) best = p;
          have = true;
        } catch (const dnnl::error&) {
        }
      }
      SEGSLIM_CHECK(have, "engine: oneDNN has no kernel for ", s.op, " ", s.name);
      return best;
    };
    dnnl::primitive_desc pd = search();
    bool moved = false;
    for (auto& p : s.post)
      if (p.kind == PostOp::kAdd && md(p.val) != pd.dst_desc()) {
        p.val = ensure(p.val, pd.dst_desc());
        moved = true;
      }
    if (moved) {
      set_post_ops();
      pd = search();
    }
    // Post-ops split off the convolution and run as their own steps (tail of s.post):
    //  - oneDNN 2.6's gemm convolution (picked e.g. when a dilated kernel is larger than the
    //    input) applies a binary post-op at the wrong offset (the image / thread offset of the
    //    residual operand is not the dst's): wrong numbers at batch > 1 and for some shapes. A
    //    residual Add (and everything after it) runs as a separate binary step there.
    //  - a per-channel PReLU post-op sends 2.6 to its reference kernels (or, for
    //    deconvolution, to gemm or a jit kernel with a slow post-op pass): run it on its own
    //    (the prelu primitive; for an int8-out conv: conv to f32, prelu, then the Q reorder).
    std::vector<PostOp> tail;
    auto split_at = [&](size_t k) {
      tail.insert(tail.begin(), s.post.begin() + static_cast<long>(k), s.post.end());
      s.post.resize(k);
      set_post_ops();
      pd = search();
    };
    auto is_gemm = [&](const dnnl::primitive_desc& p) {
      return impl(p).find("gemm") != std::string::npos;
    };
    if (is_gemm(pd)) {
      for (size_t k = 0; k < s.post.size(); ++k)
        if (s.post[k].kind == PostOp::kAdd) {
          split_at(k);
          break;
        }
    }
    bool requant = false;  // int8-out conv split: f32 out, post-ops, then a Q reorder
    // gemm's PReLU post-op is slow too (int8 deconvolution), and so is the f32 jit
    // deconvolution's (ESPNet's up_l2: 21.7 ms with the post-op, 0.4 ms + 0.2 ms without).
    if (is_ref(pd) || is_gemm(pd) || s.deconv) {
      for (size_t k = 0; k < s.post.size(); ++k)
        if (s.post[k].kind == PostOp::kPrelu) {
          if (out.type != dt::f32) {
            dst_type = dt::f32;
            int8_scales();
            requant = true;
          }
          split_at(k);
          break;
        }
    }
    int conv_out = s.out;
    if (!tail.empty()) {
      // the split-off post-ops' "+..." tags leave this step's line (they get lines of their own)
      size_t drop = tail.size();
      for (auto it = s.tags.end(); drop > 0 && it != s.tags.begin();) {
        --it;
        if (it->rfind("+", 0) == 0 && *it != "+bias" && *it != "+bn") {
          it = s.tags.erase(it);
          --drop;
        }
      }
      Val tmp = out;
      tmp.name += "#conv";
      tmp.has_md = false;
      tmp.type = dst_type;
      p_.vals.push_back(tmp);
      conv_out = static_cast<int>(p_.vals.size()) - 1;
    }
    const int src2 = ensure(src, with_type(pd.src_desc(), sv.type));
    set_md(conv_out, pd.dst_desc());

    Exec e;
    e.prim = dnnl::primitive(pd);
    memory::desc wuser_md(wd, wt, wuser);
    at::Tensor wc = s.w.contiguous();
    e.args[DNNL_ARG_WEIGHTS] = packed(wuser_md, wc.data_ptr(), pd.weights_desc());
    if (has_bias) {
      if (bias.empty()) bias.assign(OC, 0.f);
      e.args[DNNL_ARG_BIAS] = const_mem(bmd, bias.data());
    }
    e.val_args[DNNL_ARG_SRC] = src2;
    if (as_u8) e.arg_md[DNNL_ARG_SRC] = pd.src_desc();
    e.val_args[DNNL_ARG_DST] = s.out;
    e.reads = {src2};
    for (size_t i = 0; i < s.post.size(); ++i) {
      const auto& p = s.post[i];
      const int arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(static_cast<int>(i));
      if (p.kind == PostOp::kPrelu) {
        e.args[arg | DNNL_ARG_WEIGHTS] =
            const_mem(memory::desc({OC}, dt::f32, tag::a), p.slope.data());
      } else if (p.kind == PostOp::kAdd) {
        e.val_args[arg | DNNL_ARG_SRC_1] = p.val;
        e.reads.push_back(p.val);
      }
    }
    e.val_args[DNNL_ARG_DST] = conv_out;
    e.writes = {conv_out};
    if (s.int8) ++p_.int8_steps;
    push(std::move(e), s, impl(pd) + (as_u8 ? ", s8 read as u8" : ""));
    // the split-off post-ops, in order, each its own step
    int cur = conv_out;
    for (size_t i = 0; i < tail.size(); ++i) {
      const PostOp& p = tail[i];
      int dst = s.out;
      if (i + 1 < tail.size() || requant) {
        Val tmp = out;
        tmp.name += "#post" + std::to_string(i);
        tmp.has_md = false;
        tmp.type = dt::f32;
        p_.vals.push_back(tmp);
        dst = static_cast<int>(p_.vals.size()) - 1;
      }
      Step t;
      t.name = s.name + " (split off)";
      t.in = {cur};
      t.out = dst;
      if (p.kind == PostOp::kAdd) {
        t.kind = Step::kBinary;
        t.op = "Add";
        t.algo = alg::binary_add;
        t.in.push_back(p.val);
      } else if (p.kind == PostOp::kPrelu) {
        // our one-pass kernel (a = 1, c = 0): oneDNN's prelu is slow on channels-last maps
        // with few channels; the last split-off op also writes the int8 output itself
        t.kind = Step::kConcatAffine;
        t.op = "PRelu";
        t.affine_a.assign(p.slope.size(), 1.f);
        t.affine_c.assign(p.slope.size(), 0.f);
        t.slope = p.slope;
        if (requant && i + 1 == tail.size()) {
          t.qouts = {s.out};
          t.tags = {"->" + std::string(out.type == dt::u8 ? "u8" : "s8")};
          requant = false;
        } else if (dst == s.out && half_link(s)) {
          p_.vals[s.out].type = dt::f16;
          t.tags = {"->f16"};
        }
      } else {
        t.kind = Step::kElt;
        t.op = "Eltwise";
        t.algo = p.algo;
        t.a = p.alpha;
        t.bb = p.beta;
      }
      split_.push_back(t);
      lower(split_.back());
      cur = dst;
    }
    if (requant) {
      Step q;
      q.kind = Step::kQuant;
      q.op = "QuantizeLinear";
      q.name = s.name + " (split off)";
      q.in = {cur};
      q.out = s.out;
      q.scale = out.scale;
      q.zp = 0;
      split_.push_back(q);
      lower(split_.back());
    }
  }

  void pool(Step& s) {
    int src = s.in[0];
    memory::desc dmd(mdims(p_.vals[s.out].dims), p_.vals[s.out].type, tag::any);
    auto make = [&] {
      dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, s.algo, md(src), dmd,
                                    mdims(s.strides), mdims(s.kernel), mdims(s.pl), mdims(s.pr));
      return dnnl::pooling_forward::primitive_desc(d, eng_);
    };
    dnnl::pooling_forward::primitive_desc pd = make();
    if (impl(pd).find("jit") == std::string::npos && p_.vals[src].dims.size() == 4) {
      // No jit kernel for this layout (a plain NCHW input such as the image itself): pool it
      // channels-last, where oneDNN has one; the reorder costs less than the slow kernel.
      src = ensure(src, memory::desc(mdims(p_.vals[src].dims), p_.vals[src].type, tag::acdb));
      pd = make();
    }
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::pooling_forward(pd);
    e.val_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, s.out}};
    if (pd.workspace_desc().get_size() > 0)
      e.args[DNNL_ARG_WORKSPACE] = memory(pd.workspace_desc(), eng_);
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  void int8_avg_pool(Step& s) {
    const std::vector<int64_t> id = p_.vals[s.in[0]].dims, od = p_.vals[s.out].dims;
    const dt type = p_.vals[s.in[0]].type;
    const int src = ensure(s.in[0], memory::desc(mdims(id), type, tag::acdb));
    const dt out_type = p_.vals[s.out].type;  // f32, or int8 at the consumer's scale
    set_md(s.out, memory::desc(mdims(od), out_type, tag::acdb));
    Int8AvgPoolShape shape{id[0],
                           id[1],
                           id[2],
                           id[3],
                           od[2],
                           od[3],
                           s.kernel[0],
                           s.kernel[1],
                           s.strides[0],
                           s.strides[1],
                           s.pl[0],
                           s.pl[1],
                           s.algo == alg::pooling_avg_include_padding};
    Exec e;
    Plan* plan = &p_;
    const int out = s.out;
    const float scale = s.scale;
    const bool u8 = type == dt::u8;
    const PoolOut kind = out_type == dt::f32  ? PoolOut::kF32
                         : out_type == dt::u8 ? PoolOut::kU8
                                              : PoolOut::kS8;
    const float out_scale = p_.vals[s.out].scale;
    e.custom = [plan, src, out, shape, scale, u8, kind, out_scale] {
      avg_pool_int8_nhwc(plan->mems[src].get_data_handle(), u8, scale,
                         plan->mems[out].get_data_handle(), kind, out_scale, shape);
    };
    e.reads = {src};
    e.writes = {out};
    push(std::move(e), s,
         kind == PoolOut::kF32 ? "int8 sum, f32 mean nhwc" : "int8 sum, requantized mean nhwc");
  }

  // Whether every step after `from` that reads v is a concat_affine step (reading it as a piece
  // or its residual: such steps have no post-ops), so v may be stored as float16
  // (Plan::half_links).
  bool read_by_tails_only(int v, size_t from) const {
    if (v == p_.output_val) return false;
    for (size_t k = from + 1; k < p_.ir.size(); ++k) {
      const Step& t = p_.ir[k];
      if (!t.removed && t.kind != Step::kConcatAffine && step_reads(t, v)) return false;
    }
    return true;
  }

  // Whether IR step s's float output may be stored as float16 (Plan::half_links).
  bool half_link(const Step& s) const {
    return p_.half_links && p_.vals[s.out].type == dt::f32 &&
           read_by_tails_only(s.out, static_cast<size_t>(&s - p_.ir.data()));
  }

  // Whether a step after ir[from] reads value v (an input, a residual post-op operand, a
  // concat_affine's residual) or v is the graph output.
  bool read_after(int v, size_t from) const {
    if (v == p_.output_val) return true;
    for (size_t k = from + 1; k < p_.ir.size(); ++k) {
      if (!p_.ir[k].removed && step_reads(p_.ir[k], v)) return true;
    }
    return false;
  }

  static ElemType elem_type(dt t) {
    if (t == dt::f16) return ElemType::kF16;
    return t == dt::f32 ? ElemType::kF32 : t == dt::s8 ? ElemType::kS8 : ElemType::kU8;
  }

  static ConcatQuant concat_quant(const Step& s) {
    return {s.concat_q_scale, elem_type(s.concat_q_type)};
  }

  // What a concat_affine step's tail reads as residual and writes: the values, and their
  // descriptions (data null until a run binds the buffers into copies of them).
  struct TailBinding {
    int residual_val = -1;  // or -1: no residual
    AffineInput residual;
    std::vector<int> out_vals;
    std::vector<AffineOutput> outs;
    // This run's buffers into `r` and `o`, copies of residual and outs.
    void bind(const Plan& plan, AffineInput& r, std::vector<AffineOutput>& o) const {
      if (residual_val >= 0) r.data = plan.mems[residual_val].get_data_handle();
      for (size_t i = 0; i < out_vals.size(); ++i)
        o[i].data = plan.mems[out_vals[i]].get_data_handle();
    }
  };

  // A concat_affine step with its branches (fuse_dilated_branches, plan.h): DilatedBranches
  // from the branches' int8 input to the tail's outputs.
  void dilated_block(Step& s, const TailBinding& tail) {
    const Step& first = p_.ir[s.branches[0]];
    const Val x = p_.vals[first.in[0]];
    const int src = ensure(first.in[0], memory::desc(mdims(x.dims), x.type, tag::acdb));
    DilatedBranchesShape shape;
    shape.n = x.dims[0];
    shape.h = x.dims[2];
    shape.w = x.dims[3];
    shape.in_channels = x.dims[1];
    // a non-negative s8 value's bytes read as u8 (Val::nonneg): no shift, no compensation
    shape.src_type = x.type == dt::u8 || x.nonneg ? ElemType::kU8 : ElemType::kS8;
    std::vector<DilatedBranch> branches;
    for (int c : s.branches) {
      const Step& conv = p_.ir[c];
      DilatedBranch b;
      b.out_channels = conv.w.size(0);
      b.dilation = conv.dil[0];
      const at::Tensor w = conv.w.contiguous();
      b.weights.assign(w.data_ptr<int8_t>(), w.data_ptr<int8_t>() + w.numel());
      b.alpha = conv.alpha;
      b.beta = conv.beta;
      b.add_previous = !conv.post.empty();  // a branch's only post-op: the previous piece's sum
      branches.push_back(std::move(b));
    }
    struct Bound {
      std::unique_ptr<DilatedBranches> kernel;
      TailBinding tail;
      AffineInput residual;
      std::vector<AffineOutput> outs;
    };
    auto b = std::make_shared<Bound>(
        Bound{std::make_unique<DilatedBranches>(shape, branches, s.affine_a, s.affine_c, s.slope,
                                                concat_quant(s)),
              tail, tail.residual, tail.outs});
    Exec e;
    e.reads = {src};
    if (tail.residual_val >= 0) e.reads.push_back(tail.residual_val);
    e.writes = tail.out_vals;
    Plan* plan = &p_;
    e.custom = [plan, b, src] {
      b->tail.bind(*plan, b->residual, b->outs);
      b->kernel->run(plan->mems[src].get_data_handle(), b->residual, b->outs);
    };
    p_.int8_steps += static_cast<int>(s.branches.size());
    push(std::move(e), s, str_cat(s.branches.size(), " int8 3x3 convs, one pass nhwc vnni"));
  }

  // All values channels-last; the float output only when something reads it.
  // (A step split off a convolution, not in p_.ir, writes its float output unless it has
  // quantized ones: then nothing reads the float value.)
  void concat_affine(Step& s) {
    const bool in_ir = &s >= p_.ir.data() && &s < p_.ir.data() + p_.ir.size();
    const bool f32_read =
        in_ir ? read_after(s.out, static_cast<size_t>(&s - p_.ir.data())) : s.qouts.empty();
    const std::vector<int64_t> d = p_.vals[s.out].dims;
    auto nhwc = [&](int v) {
      return ensure(v, memory::desc(mdims(p_.vals[v].dims), p_.vals[v].type, tag::acdb));
    };
    auto input = [&](int v) {
      const Val& x = p_.vals[v];
      const bool real = x.type == dt::f32 || x.type == dt::f16;
      return AffineInput{nullptr, elem_type(x.type), real ? 1.f : x.scale, x.dims[1]};
    };
    TailBinding tail;
    if (s.residual >= 0) {
      tail.residual_val = nhwc(s.residual);
      tail.residual = input(tail.residual_val);
    }
    if (f32_read && in_ir && half_link(s)) {
      p_.vals[s.out].type = dt::f16;
      s.tags.push_back("->f16");
    }
    if (f32_read) tail.out_vals.push_back(s.out);
    for (int q : s.qouts) tail.out_vals.push_back(q);
    for (int v : tail.out_vals) {
      set_md(v, memory::desc(mdims(d), p_.vals[v].type, tag::acdb));
      const AffineInput o = input(v);
      tail.outs.push_back({nullptr, o.type, o.scale});
    }
    if (!s.branches.empty()) return dilated_block(s, tail);
    // Built once: the arguments, their buffers bound per run (which values feed them: vals).
    struct Bound {
      ConcatAffineCoefficients coefficients;
      ConcatAffineArgs args;
      std::vector<int> piece_vals;
      TailBinding tail;
    };
    ConcatAffineArgs args;
    args.residual = tail.residual;
    args.outs = tail.outs;
    args.pixels = d[0] * d[2] * d[3];
    auto b = std::make_shared<Bound>(
        Bound{ConcatAffineCoefficients(s.affine_a, s.affine_c, s.slope, concat_quant(s)),
              std::move(args),
              {},
              tail});
    b->args.coefficients = &b->coefficients;
    Exec e;
    for (int v : s.in) {
      b->piece_vals.push_back(nhwc(v));
      b->args.pieces.push_back(input(b->piece_vals.back()));
    }
    e.reads = b->piece_vals;
    if (tail.residual_val >= 0) e.reads.push_back(tail.residual_val);
    e.writes = tail.out_vals;
    Plan* plan = &p_;
    e.custom = [plan, b] {
      for (size_t i = 0; i < b->piece_vals.size(); ++i)
        b->args.pieces[i].data = plan->mems[b->piece_vals[i]].get_data_handle();
      b->tail.bind(*plan, b->args.residual, b->args.outs);
      concat_affine_nhwc(b->args);
    };
    push(std::move(e), s, "one pass nhwc");
  }

  // x * a + y * b: x, y and the output channels-last, a and b (one channel) plain.
  void blend(Step& s) {
    const std::vector<int64_t> d = p_.vals[s.out].dims;
    std::vector<int> in;
    for (size_t i = 0; i < s.in.size(); ++i) {
      const int v = s.in[i];
      const std::vector<int64_t> vd = p_.vals[v].dims;
      const memory::desc nhwc(mdims(vd), dt::f32, tag::acdb);
      // one channel: NCHW and NHWC are the same bytes
      const bool plain = i % 2 == 1 && md(v) == memory::desc(mdims(vd), dt::f32, tag::abcd);
      in.push_back(plain ? v : ensure(v, nhwc));
    }
    const Val& o = p_.vals[s.out];
    set_md(s.out, memory::desc(mdims(d), o.type, tag::acdb));
    BlendArgs args;
    args.type = elem_type(o.type);
    args.scale = o.type == dt::f32 ? 1.f : o.scale;
    args.pixels = d[0] * d[2] * d[3];
    args.channels = d[1];
    Exec e;
    Plan* plan = &p_;
    const int out = s.out;
    e.custom = [plan, in, out, args]() mutable {
      auto data = [&](int v) { return static_cast<const float*>(plan->mems[v].get_data_handle()); };
      args.x = data(in[0]);
      args.a = data(in[1]);
      args.y = data(in[2]);
      args.b = data(in[3]);
      args.out = plan->mems[out].get_data_handle();
      attention_blend_nhwc(args);
    };
    e.reads = in;
    e.writes = {s.out};
    push(std::move(e), s, "one pass nhwc");
  }

  // Concat along the channels of narrow pieces (at most 64 bytes a pixel with AVX-512's masked
  // copies, 16 without), all channels-last already: concat_channels_nhwc. Wide pieces stay
  // with oneDNN's concat: copying them is bound by memory either way, and in `segslim bench
  // --profile` runs PP-LiteSeg-T's STDC concats (pieces of 32 to 512 channels) were no faster
  // with the plain per-pixel copies.
  bool concat_nhwc(Step& s) {
    const int64_t narrow = use_avx512() ? kMaskedPieceBytes : 16;
    const auto& od = p_.vals[s.out].dims;
    const dt ot = p_.vals[s.out].type;
    if (od.size() != 4 || s.axis != 1) return false;
    const int64_t elem = static_cast<int64_t>(memory::data_type_size(ot));
    std::vector<int64_t> bytes;  // per pixel, of each piece
    for (int v : s.in) {
      bytes.push_back(p_.vals[v].dims[1] * elem);
      if (md(v) != memory::desc(mdims(p_.vals[v].dims), ot, tag::acdb) || bytes.back() > narrow)
        return false;
    }
    set_md(s.out, memory::desc(mdims(od), ot, tag::acdb));
    Exec e;
    Plan* plan = &p_;
    const std::vector<int> in = s.in;
    const int out = s.out;
    const int64_t pixels = od[0] * od[2] * od[3];
    e.custom = [plan, in, out, bytes, pixels] {
      std::vector<ChannelPiece> pieces(in.size());
      for (size_t i = 0; i < in.size(); ++i)
        pieces[i] = {plan->mems[in[i]].get_data_handle(), bytes[i]};
      concat_channels_nhwc(pieces, plan->mems[out].get_data_handle(), pixels);
    };
    e.reads = s.in;
    e.writes = {s.out};
    push(std::move(e), s, "channels nhwc");
    return true;
  }

  void concat(Step& s) {
    std::vector<memory::desc> srcs;
    // The optimized concats want one layout for all inputs: mixed layouts (e.g. the plain
    // NCHW output of a pooling of the image next to NHWC conv outputs) go NHWC first.
    bool same = true;
    for (int v : s.in)
      same = same && md(v).data.format_kind == md(s.in[0]).data.format_kind &&
             md(v).data.format_desc.blocking.inner_nblks ==
                 md(s.in[0]).data.format_desc.blocking.inner_nblks;
    const size_t rank0 = p_.vals[s.out].dims.size();
    const dt ot = p_.vals[s.out].type;
    auto to_nhwc = [&]() {
      const tag t = rank0 == 4 ? tag::acdb : plain_tag(rank0);
      for (auto& v : s.in) v = ensure(v, memory::desc(mdims(p_.vals[v].dims), ot, t));
    };
    auto stride_order = [&](const memory::desc& m) {
      std::vector<int> o(m.data.ndims);
      for (int i = 0; i < m.data.ndims; ++i) o[i] = i;
      std::stable_sort(o.begin(), o.end(), [&](int a, int b) {
        return m.data.format_desc.blocking.strides[a] > m.data.format_desc.blocking.strides[b];
      });
      return o;
    };
    for (int v : s.in) same = same && stride_order(md(v)) == stride_order(md(s.in[0]));
    if (!same && rank0 == 4) to_nhwc();
    if (concat_nhwc(s)) return;
    for (int v : s.in) srcs.push_back(md(v));
    memory::desc dmd(mdims(p_.vals[s.out].dims), ot, tag::any);
    dnnl::concat::primitive_desc pd;
    try {
      pd = dnnl::concat::primitive_desc(dmd, static_cast<int>(s.axis), srcs, eng_);
      if (impl(pd).find("ref") != std::string::npos && rank0 == 4) {
        to_nhwc();
        srcs.clear();
        for (int v : s.in) srcs.push_back(md(v));
        pd = dnnl::concat::primitive_desc(memory::desc(mdims(p_.vals[s.out].dims), ot, tag::acdb),
                                          static_cast<int>(s.axis), srcs, eng_);
      }
    } catch (const dnnl::error&) {
      // blocked inputs whose channels are not a multiple of the block: concat in nhwc
      const size_t rank = p_.vals[s.out].dims.size();
      const tag t = rank == 4 ? tag::acdb : plain_tag(rank);
      srcs.clear();
      for (auto& v : s.in) {
        v = ensure(v, memory::desc(mdims(p_.vals[v].dims), ot, t));
        srcs.push_back(md(v));
      }
      try {
        pd = dnnl::concat::primitive_desc(memory::desc(mdims(p_.vals[s.out].dims), ot, t),
                                          static_cast<int>(s.axis), srcs, eng_);
      } catch (const dnnl::error& e) {
        std::string shapes;
        for (int v : s.in) {
          shapes += " [";
          for (auto d : p_.vals[v].dims) shapes += std::to_string(d) + " ";
          shapes += "]";
        }
        throw Error(str_cat("Concat ", s.name, ": oneDNN refused inputs", shapes, ": ", e.what()));
      }
    }
    // Only oneDNN's reference kernel (e.g. many 1-channel maps along channels): ATen's cat
    // on plain copies is faster.
    if (impl(pd).find("ref") != std::string::npos && ot == dt::f32 && s.node) return aten(s);
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::concat(pd);
    for (size_t i = 0; i < s.in.size(); ++i)
      e.val_args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i)] = s.in[i];
    e.val_args[DNNL_ARG_DST] = s.out;
    e.reads = s.in;
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  void binary(Step& s) {
    const int a = s.in[0];
    memory::desc bmd;
    int b = -1;
    if (s.cst.defined()) {
      bmd = memory::desc(mdims(s.cst.sizes().vec()), dt::f32, plain_tag(s.cst.dim()));
    } else {
      b = s.in[1];
      // same shape: b in a's layout (reordered below, once the kernel is known)
      bmd = p_.vals[b].dims == p_.vals[a].dims ? md(a) : md(b);
    }
    dnnl::binary::desc d(s.algo, md(a), bmd, md(a));
    dnnl::binary::primitive_desc pd(d, eng_);
    // oneDNN's reference kernel (e.g. broadcasting along the last axis of a plain tensor, a
    // decomposed LayerNorm's x - mean) is tens of times slower than ATen's.
    if (impl(pd).rfind("ref", 0) == 0 && s.node) return aten(s);
    if (b >= 0) b = ensure(b, bmd);
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::binary(pd);
    e.val_args = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_DST, s.out}};
    e.reads = {a};
    if (b >= 0) {
      e.val_args[DNNL_ARG_SRC_1] = b;
      e.reads.push_back(b);
    } else {
      e.args[DNNL_ARG_SRC_1] = const_mem(bmd, s.cst.data_ptr());
    }
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  void eltwise(Step& s) {
    const int src = s.in[0];
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, s.algo, md(src), s.a, s.bb);
    dnnl::eltwise_forward::primitive_desc pd(d, eng_);
    push_unary<dnnl::eltwise_forward>(s, src, pd);
  }

  void prelu(Step& s) {
    const int src = s.in[0];
    const auto& d4 = p_.vals[src].dims;
    memory::desc wmd({1, d4[1], 1, 1}, dt::f32, tag::abcd);
    dnnl::prelu_forward::desc d(dnnl::prop_kind::forward_inference, md(src), wmd);
    dnnl::prelu_forward::primitive_desc pd(d, eng_);
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::prelu_forward(pd);
    e.val_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, s.out}};
    e.args[DNNL_ARG_WEIGHTS] = packed(wmd, s.slope.data(), pd.weights_desc());
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  void resample(Step& s) {
    int src = s.in[0];
    if (s.out == p_.output_val && s.algo == alg::resampling_linear) return output_bilinear(s);
    const memory::desc dmd(mdims(p_.vals[s.out].dims), dt::f32, tag::any);
    dnnl::resampling_forward::desc d(dnnl::prop_kind::forward_inference, s.algo, md(src), dmd);
    dnnl::resampling_forward::primitive_desc pd(d, eng_);
    push_unary<dnnl::resampling_forward>(s, src, pd);
  }

  // MatMul on plain row-major layouts; a constant B is packed into oneDNN's layout once. Int8:
  // u8/s8 A, s8 B, int32 accumulation, per-column output scales alpha, f32 out.
  void matmul(Step& s) {
    const auto& ad = p_.vals[s.in[0]].dims;
    const dt a_type = s.int8 ? p_.vals[s.in[0]].type : dt::f32;
    const dt b_type = s.int8 ? dt::s8 : dt::f32;
    const int a = ensure(s.in[0], memory::desc(mdims(ad), a_type, plain_tag(ad.size())));
    const bool b_const = s.w.defined();
    const std::vector<int64_t> bd = b_const ? s.w.sizes().vec() : p_.vals[s.in[1]].dims;
    const memory::desc bplain(mdims(bd), b_type, plain_tag(bd.size()));
    const int b = b_const ? -1 : ensure(s.in[1], bplain);
    const auto& od = p_.vals[s.out].dims;
    const memory::desc dmd(mdims(od), dt::f32, plain_tag(od.size()));
    const memory::desc bmd = b_const ? memory::desc(mdims(bd), b_type, tag::any) : bplain;
    dnnl::primitive_attr attr;
    if (!s.alpha.empty()) {  // int8: alpha_c = s_a * s_w[c]; f32: a folded scalar
      const bool per_column =
          std::any_of(s.alpha.begin(), s.alpha.end(), [&](float v) { return v != s.alpha[0]; });
      if (per_column) {
        attr.set_output_scales(1 << (od.size() - 1), s.alpha);
      } else {
        attr.set_output_scales(0, {s.alpha[0]});
      }
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(md(a), bmd, dmd), attr, eng_);
    set_md(s.out, dmd);
    Exec e;
    e.prim = dnnl::matmul(pd);
    e.val_args = {{DNNL_ARG_SRC, a}, {DNNL_ARG_DST, s.out}};
    e.reads = {a};
    if (b_const) {
      e.args[DNNL_ARG_WEIGHTS] = packed(bplain, s.w.data_ptr(), pd.weights_desc());
    } else {
      e.val_args[DNNL_ARG_WEIGHTS] = b;
      e.reads.push_back(b);
    }
    e.writes = {s.out};
    if (s.int8) ++p_.int8_steps;
    push(std::move(e), s, impl(pd));
  }

  void reduce(Step& s) {
    const int src = s.in[0];
    const auto& d = p_.vals[src].dims;
    const auto& od = p_.vals[s.out].dims;
    if (d.size() == 4 && od[0] == d[0] && od[1] == 1 && od[2] == d[2] && od[3] == d[3])
      return channel_reduce(s);
    const memory::desc dmd(mdims(p_.vals[s.out].dims), dt::f32, tag::any);
    dnnl::reduction::primitive_desc pd(dnnl::reduction::desc(s.algo, md(src), dmd, 0.f, 0.f), eng_);
    if (impl(pd).rfind("ref", 0) == 0) return aten(s);
    push_unary<dnnl::reduction>(s, src, pd);
  }

  // A reduction over the channels only: our kernel (channel_reduce.h) on the layout the
  // producer wrote (NCHW, NHWC or nChw16c; anything else is reordered to NHWC).
  void channel_reduce(Step& s) {
    const std::vector<int64_t> d = p_.vals[s.in[0]].dims;  // copies: ensure() grows p_.vals
    const std::vector<int64_t> od = p_.vals[s.out].dims;
    int src = s.in[0];
    ChannelLayout layout = ChannelLayout::kNhwc;
    if (md(src) == memory::desc(mdims(d), dt::f32, tag::aBcd16b)) {
      layout = ChannelLayout::kNChw16c;
    } else if (md(src) == memory::desc(mdims(d), dt::f32, tag::abcd)) {
      layout = ChannelLayout::kNchw;
    } else {
      src = ensure(src, memory::desc(mdims(d), dt::f32, tag::acdb));
    }
    const dt ot = p_.vals[s.out].type;  // int8 where the reduction feeds an int8 Concat
    const ElemType type = elem_type(ot);
    const float scale = ot == dt::f32 ? 1.f : p_.vals[s.out].scale;
    // one channel: NCHW and NHWC are the same bytes; int8 ones go into NHWC int8 Concats
    set_md(s.out, memory::desc(mdims(od), ot, ot == dt::f32 ? tag::abcd : tag::acdb));
    const ChannelReduceOp op = s.algo == alg::reduction_max    ? ChannelReduceOp::kMax
                               : s.algo == alg::reduction_mean ? ChannelReduceOp::kMean
                                                               : ChannelReduceOp::kSum;
    Exec e;
    Plan* plan = &p_;
    const int out = s.out;
    e.custom = [plan, src, out, d, layout, op, type, scale] {
      reduce_channels(static_cast<const float*>(plan->mems[src].get_data_handle()),
                      plan->mems[out].get_data_handle(), d[0], d[1], d[2], d[3], layout, op, type,
                      scale);
    };
    e.reads = {src};
    e.writes = {out};
    push(std::move(e), s,
         layout == ChannelLayout::kNChw16c ? "channels nChw16c"
         : layout == ChannelLayout::kNchw  ? "channels nchw"
                                           : "channels nhwc");
  }

  // Softmax, writing float or, where the graph builder fused the QuantizeLinear after it,
  // int8 q = saturate(round(y / s)) (softmax_v2: an int8 destination with output scale 1 / s).
  void softmax(Step& s) {
    const auto& d = p_.vals[s.in[0]].dims;
    const int src = ensure(s.in[0], memory::desc(mdims(d), dt::f32, plain_tag(d.size())));
    const Val& out = p_.vals[s.out];
    if (out.type == dt::f32) {
      dnnl::softmax_forward::desc desc(dnnl::prop_kind::forward_inference, md(src),
                                       static_cast<int>(s.axis));
      dnnl::softmax_forward::primitive_desc pd(desc, eng_);
      return push_unary<dnnl::softmax_forward>(s, src, pd);
    }
    const memory::desc dst(mdims(d), out.type, plain_tag(d.size()));
    dnnl::softmax_v2_forward::desc desc(dnnl::prop_kind::forward_inference, alg::softmax_accurate,
                                        md(src), dst, static_cast<int>(s.axis));
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.f / out.scale});
    dnnl::softmax_v2_forward::primitive_desc pd(desc, attr, eng_);
    push_unary<dnnl::softmax_v2_forward>(s, src, pd);
  }

  // The graph output as a bilinear resize (logits to the input size): our plain NCHW kernel
  // writes the caller's buffer (bilinear_resize.h); oneDNN's would write a channel-blocked
  // copy to reorder afterwards, and its plain-layout resampling is several times slower.
  void output_bilinear(Step& s) {
    const std::vector<int64_t> id = p_.vals[s.in[0]].dims;  // copies: ensure() grows p_.vals
    const std::vector<int64_t> od = p_.vals[s.out].dims;
    const int src = ensure(s.in[0], memory::desc(mdims(id), dt::f32, tag::nchw));
    set_md(s.out, memory::desc(mdims(od), dt::f32, tag::nchw));
    Exec e;
    Plan* plan = &p_;
    const int out = s.out;
    e.custom = [plan, src, out, id, od] {
      resize_bilinear_nchw(static_cast<const float*>(plan->mems[src].get_data_handle()),
                           static_cast<float*>(plan->mems[out].get_data_handle()), id[0] * id[1],
                           id[2], id[3], od[2], od[3]);
    };
    e.reads = {src};
    e.writes = {out};
    push(std::move(e), s, "bilinear nchw");
  }

  // Class ids, int64, into the caller's tensor (the graph output; engine.cpp binds it per run),
  // from plain NCHW scores: those of the step, or the low-resolution ones of a folded resize.
  void argmax(Step& s) {
    const std::vector<int64_t> id = p_.vals[s.in[0]].dims;  // copies: ensure() grows p_.vals
    const std::vector<int64_t> od = p_.vals[s.out].dims;
    const int src = ensure(s.in[0], memory::desc(mdims(id), dt::f32, tag::nchw));
    set_md(s.out, memory::desc(mdims(od), dt::s32, plain_tag(od.size())));
    Exec e;
    Plan* plan = &p_;
    const int out = s.out;
    const std::vector<int64_t> to = s.resize_to;
    e.custom = [plan, src, out, id, to] {
      const auto* x = static_cast<const float*>(plan->mems[src].get_data_handle());
      auto* y = static_cast<int64_t*>(plan->mems[out].get_data_handle());
      if (to.empty()) {
        argmax_channels_nchw(x, y, id[0], id[1], id[2], id[3]);
      } else {
        resize_bilinear_argmax_nchw(x, y, id[0], id[1], id[2], id[3], to[0], to[1]);
      }
    };
    e.reads = {src};
    e.writes = {out};
    push(std::move(e), s, to.empty() ? "nchw -> int64" : "bilinear nchw -> int64");
  }

  // Q: q = saturate(round(x / s) + zp), a reorder with output scale 1/s. At rank 4 written
  // channels-last (what int8 convolutions and pools read) unless only MatMuls read it: those
  // take plain tensors ([batch, heads, tokens, dim] in attention). Channels-last from a plain
  // NCHW float tensor of up to 4 channels (the network input): our own kernel, which changes
  // the layout 16 pixels at a time (engine/planar_quantize.h); wider tensors stay with
  // oneDNN's blocked transposes.
  void quant(Step& s) {
    const int src = s.in[0];
    Val& out = p_.vals[s.out];
    const bool channels_last = out.dims.size() == 4 && !only_matmuls_read(s.out);
    const memory::desc dmd(mdims(out.dims), out.type,
                           channels_last ? tag::acdb : plain_tag(out.dims.size()));
    const std::vector<int64_t> d = out.dims;
    if (channels_last && d[1] <= 4 && md(src) == memory::desc(mdims(d), dt::f32, tag::nchw)) {
      set_md(s.out, dmd);
      Exec e;
      Plan* plan = &p_;
      const int dst = s.out;
      const float inv = 1.f / s.scale;
      const int32_t zp = s.zp;
      const bool u8 = out.type == dt::u8;
      e.custom = [plan, src, dst, d, inv, zp, u8] {
        quantize_nchw_to_nhwc(static_cast<const float*>(plan->mems[src].get_data_handle()),
                              plan->mems[dst].get_data_handle(), d[0], d[1], d[2], d[3], inv, zp,
                              u8);
      };
      e.reads = {src};
      e.writes = {dst};
      return push(std::move(e), s, "nchw f32 -> nhwc");
    }
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.f / s.scale});
    if (s.zp != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {s.zp});
    push_reorder(s, src, dmd, attr);
  }

  // Whether every step reading value v is a MatMul (and some step reads it).
  bool only_matmuls_read(int v) const {
    bool read = false;
    for (const Step& t : p_.ir) {
      if (t.removed || std::find(t.in.begin(), t.in.end(), v) == t.in.end()) continue;
      if (t.kind != Step::kMatmul) return false;
      read = true;
    }
    return read && v != p_.output_val;
  }

  // DQ: x = (q - zp) * s, a reorder to f32 with output scale s.
  void dequant(Step& s) {
    const int src = s.in[0];
    const memory::desc dmd(
        mdims(p_.vals[s.out].dims), dt::f32,
        p_.vals[s.out].dims.size() == 4 ? tag::acdb : plain_tag(p_.vals[s.out].dims.size()));
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {s.scale});
    if (s.zp != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {s.zp});
    push_reorder(s, src, dmd, attr);
  }

  // Transpose as a oneDNN reorder: the source read through a descriptor with the output's
  // dims and the source's strides permuted (output dim i walks source dim perm[i]), written
  // plain. ATen made a strided copy and then copied it again into the plan's buffer.
  void transpose(Step& s) {
    const std::vector<int64_t> id = p_.vals[s.in[0]].dims;  // copies: ensure() grows p_.vals
    const std::vector<int64_t> od = p_.vals[s.out].dims;
    const size_t r = id.size();
    const int src = ensure(s.in[0], memory::desc(mdims(id), dt::f32, plain_tag(r)));
    // oneDNN takes up to 6 dims; the graph's input and output buffers are bound per run, not at
    // plan time: the view (a second memory object over the buffer) would miss them
    if (r > 6 || p_.vals[src].external || src == p_.output_val) return aten(s);
    std::vector<int64_t> plain_strides(r, 1);
    for (size_t i = r - 1; i > 0; --i) plain_strides[i - 1] = plain_strides[i] * id[i];
    memory::dims view_strides(r);
    for (size_t i = 0; i < r; ++i) view_strides[i] = plain_strides[s.perm[i]];
    const memory::desc view(mdims(od), dt::f32, view_strides);
    const memory::desc dst(mdims(od), dt::f32, plain_tag(r));
    dnnl::reorder::primitive_desc pd(eng_, view, eng_, dst);
    set_md(s.out, dst);
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, s.out}};
    e.arg_md[DNNL_ARG_FROM] = view;
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, "reorder " + impl(pd));
  }

  void aten(Step& s) {
    s.tags.push_back("aten f32");
    std::vector<int> plain_in;
    for (int v : s.in) {
      const auto& d = p_.vals[v].dims;
      plain_in.push_back(ensure(v, memory::desc(mdims(d), dt::f32, plain_tag(d.size()))));
    }
    std::vector<int> outs{s.out};
    for (int v : s.more_out)
      if (v >= 0) outs.push_back(v);
    for (int v : outs) {
      const std::vector<int64_t> od = p_.vals[v].dims;
      set_md(v, memory::desc(mdims(od), dt::f32, plain_tag(od.size())));
    }
    Exec e;
    Plan* plan = &p_;
    const int64_t opset = p_.opset;
    const Step* step = &s;
    const int out = s.out;
    e.custom = [plan, step, plain_in, out, opset]() {
      ops::Tensors in;
      for (size_t k = 0; k < step->const_in.size(); ++k) {
        if (step->in_slot[k] < 0) {
          in.push_back(step->const_in[k]);
        } else {
          const int v = plain_in[step->in_slot[k]];
          in.push_back(
              at::from_blob(plan->mems[v].get_data_handle(), plan->vals[v].dims, at::kFloat));
        }
      }
      ops::NodeContext ctx(*step->node, opset, false);
      const ops::Tensors r = ops::Registry::instance().find(step->node->op_type())->run(ctx, in);
      auto copy = [&](const at::Tensor& t, int v) {
        const at::Tensor c = t.to(at::kFloat).contiguous();
        std::memcpy(plan->mems[v].get_data_handle(), c.data_ptr(), c.numel() * sizeof(float));
      };
      copy(r.at(0), out);
      for (size_t k = 0; k < step->more_out.size(); ++k)
        if (step->more_out[k] >= 0) copy(r.at(k + 1), step->more_out[k]);
    };
    e.reads = plain_in;
    e.writes = outs;
    push(std::move(e), s, "");
  }

  struct LayoutCopy {
    int src;
    memory::desc md;
    int out;
  };
  std::vector<LayoutCopy> reorders_;  // made by ensure()

  Plan& p_;
  const dnnl::engine& eng_;
  dnnl::stream& strm_;
  std::deque<Step> split_;  // steps created while lowering (stable addresses)
};

}  // namespace

void lower_plan(Plan& p, const dnnl::engine& eng, dnnl::stream& strm) {
  Lowering(p, eng, strm).run();
}

}  // namespace segslim::engine

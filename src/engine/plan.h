#pragma once
// The engine's internal representation, shared by its three compile phases (engine.cpp):
//  A. graph_builder.cpp: ONNX graph -> IR steps (constant folding, fusion, QDQ dissolving);
//  B. lowering.cpp: IR steps -> oneDNN primitives (layouts, reorders, packed weights);
//  C. memory_plan.cpp: one activation arena, buffers reused after their last reader.
// Not a public header: it brings oneDNN in.
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "engine/engine.h"

namespace segslim::engine {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;
using alg = dnnl::algorithm;

// Op types with a oneDNN path (or a dedicated kernel) on runtime tensors. Any other op the
// executor implements runs on runtime tensors through its ATen kernel (aten steps), as long
// as it produces float tensors (float_result).
const std::set<std::string>& native_ops();
bool float_result(const onnx::NodeProto& n);

struct Attrs {
  const onnx::NodeProto& n;
  const onnx::AttributeProto* find(const std::string& k) const {
    for (const auto& a : n.attribute())
      if (a.name() == k) return &a;
    return nullptr;
  }
  int64_t i(const std::string& k, int64_t d) const {
    auto* a = find(k);
    return a ? a->i() : d;
  }
  float f(const std::string& k, float d) const {
    auto* a = find(k);
    return a ? a->f() : d;
  }
  std::string s(const std::string& k, const std::string& d) const {
    auto* a = find(k);
    return a ? a->s() : d;
  }
  std::vector<int64_t> ints(const std::string& k, std::vector<int64_t> d = {}) const {
    auto* a = find(k);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : d;
  }
};

std::string node_name(const onnx::NodeProto& n);
std::vector<float> to_floats(const at::Tensor& t);
tag plain_tag(size_t rank);
inline memory::dims mdims(const std::vector<int64_t>& d) {
  return memory::dims(d.begin(), d.end());
}

// ---------------------------------------------------------------- IR
struct Val {
  std::string name;
  std::vector<int64_t> dims;
  dt type = dt::f32;
  float scale = 1.f;  // int8 values: real = (q - zp) * scale
  int zp = 0;
  memory::desc md;
  bool has_md = false;
  bool external = false;  // the graph input: bound per run
  // s8 values known to lie in [0, 127] (an int8-out conv ending in ReLU, pooled or
  // concatenated such values): their bytes read as u8 are the same numbers, and int8
  // convolutions take u8 sources faster (no s8 compensation; oneDNN 2.6's brgemm depthwise
  // kernel exists only for u8).
  bool nonneg = false;
  // Class ids (an ArgMax at the graph output): int64 in the caller's tensor. oneDNN has no
  // 64-bit type and no primitive touches the value; its md (s32) only marks it as integer.
  bool int64 = false;
};

struct PostOp {
  enum Kind { kElt, kPrelu, kAdd } kind;
  alg algo = alg::eltwise_relu;
  float alpha = 0, beta = 0;
  std::vector<float> slope;  // prelu, per channel
  int val = -1;              // kAdd operand
};

// Weights of an int8 convolution input: q (int8), per-channel (or 1) scales.
struct QInfo {
  at::Tensor q, scale, zp;
  int64_t axis = 1;
};

struct Step {
  enum Kind {
    kConv,
    kPool,
    kConcat,
    kBinary,
    kElt,
    kPrelu,
    kResample,
    kQuant,
    kDequant,
    kMatmul,
    kSoftmax,
    kReduce,
    kInt8AvgPool,
    kConcatAffine,
    kArgMax,
    kTranspose,
    kBlend,  // x * a + y * b, a and b one per pixel (attention_blend.h): in = {x, a, y, b}
    kAten
  };
  Kind kind;
  std::string op, name;
  std::vector<int> in;
  int out = -1;
  std::vector<std::string> tags;
  // conv / deconv
  bool deconv = false;
  int64_t groups = 1;
  std::vector<int64_t> strides, dil, pl, pr;
  at::Tensor w, b;  // ONNX layout; f32, or int8 when int8
  bool int8 = false;
  std::vector<float> alpha;  // int8: real conv output = alpha_c * (acc + bias_c / alpha_c)
  std::vector<float> beta;   // int8: real bias per channel
  std::vector<PostOp> post;
  // pool / eltwise / binary / resample
  alg algo = alg::undef;
  std::vector<int64_t> kernel;
  float a = 0, bb = 0;
  at::Tensor cst;  // binary constant operand (broadcast to rank 4)
  int64_t axis = 1;
  std::vector<float> slope;
  // quant
  float scale = 1;
  int zp = 0;
  // concat + affine (concat_affine.h): `in` are the pieces, `slope` the activation (empty:
  // none); the quantized outputs are int8 values, each with its own scale
  int residual = -1;                      // value added to the concatenation, or -1
  std::vector<float> affine_a, affine_c;  // y = a_c * x + c_c
  // the concatenation quantized (zero point 0, this type's range) before the residual is
  // added; 0: not (ConcatQuant in concat_affine.h)
  float concat_q_scale = 0;
  dt concat_q_type = dt::s8;
  std::vector<int> qouts;
  // the int8 3x3 convolutions making the pieces, fused in (ir indices, one per piece; empty:
  // the pieces are values of their own): fuse_dilated_branches
  std::vector<int> branches;
  bool removed = false;  // folded into a later step: nothing to lower
  // argmax over channels (axis 1) of `in`, or of its bilinear resize to these H, W (the
  // Resize before it, folded in); empty: no resize
  std::vector<int64_t> resize_to;
  // transpose (prepared as an aten step too, its fallback): output dim i is input dim perm[i]
  std::vector<int64_t> perm;
  // aten
  const onnx::NodeProto* node = nullptr;
  std::vector<at::Tensor> const_in;  // per node input: defined = constant
  std::vector<int> in_slot;          // per node input: index into `in` or -1
  std::vector<int> more_out;         // outputs 1.. of a multi-output node (-1: unused)
};

// Whether step t reads value v: as an input, its residual, or a sum post-op's operand.
inline bool step_reads(const Step& t, int v) {
  if (t.residual == v || std::find(t.in.begin(), t.in.end(), v) != t.in.end()) return true;
  for (const auto& po : t.post)
    if (po.kind == PostOp::kAdd && po.val == v) return true;
  return false;
}

// ---------------------------------------------------------------- executable plan
struct Exec {
  dnnl::primitive prim;
  std::unordered_map<int, int> val_args;  // dnnl arg -> val id
  std::unordered_map<int, memory> args;   // constant args, then all args after planning
  // args bound with another descriptor over the value's buffer (a non-negative s8 read as u8)
  std::unordered_map<int, memory::desc> arg_md;
  std::function<void()> custom;
  std::vector<int> reads, writes;
  std::string line;
};

struct Plan {
  std::vector<Val> vals;
  std::vector<Step> ir;
  std::vector<Exec> execs;
  std::vector<std::string> lines;
  int int8_steps = 0;
  int64_t opset = 13;
  // Float maps written by the engine's own concat_affine steps and read only by such steps
  // (pieces or residuals) are stored as float16: EngineOptions::half_links on an INT8 model.
  bool half_links = false;
  int input_val = -1, output_val = -1;
  std::vector<memory> mems;  // per val, after planning
  std::shared_ptr<uint8_t> arena;
  // The output value is plain NCHW f32 already (or int64 class ids): it lives in the caller's
  // tensor (bound per run, like the input) and needs no final reorder.
  bool output_direct = false;
  memory out_mem;  // user output (nchw f32), handle per run
  memory in_mem;
  dnnl::reorder out_reorder;
  std::vector<int64_t> out_dims;
  at::Tensor out_cache;         // the last output tensor, reused once the caller drops it
  std::vector<double> step_ms;  // profiling: per exec, then the output reorder
  int64_t profiled_runs = 0;
};

// Phase A: the IR of `model` for one input shape, into p.vals / p.ir.
void build_ir(const onnx::ModelProto& model, const EngineOptions& opt, int64_t opset,
              const std::string& input, const std::vector<int64_t>& dims, Plan& p);
// Phase B, first where the CPU runs dilated_branches.h: ESPNet's blocks' int8 3x3 branch
// convolutions join the concat_affine step after them (Step::branches; those convs removed).
void fuse_dilated_branches(Plan& p);
// Phase B: oneDNN primitives for p.ir, into p.execs (and p.lines, p.int8_steps).
void lower_plan(Plan& p, const dnnl::engine& eng, dnnl::stream& strm);
// Phase C: bind every value to its place in one arena (p.arena, p.mems, the execs' args).
void plan_memory(Plan& p, const dnnl::engine& eng);

}  // namespace segslim::engine

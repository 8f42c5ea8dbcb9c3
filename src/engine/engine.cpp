// The oneDNN inference engine (engine.h). Compilation, per input shape, in three phases:
//  A. walk the ONNX graph in order: constant-fold every node whose inputs are known at compile
//     time (initializers, Constant, Shape of a tensor of known shape, and anything computed
//     from those) with the executor's own ATen kernels; turn the rest into IR steps, fusing
//     BatchNormalization / activations / PRelu / residual Add into the convolution before them
//     and dissolving Q -> DQ -> Conv patterns into int8 convolutions;
//  B. create the oneDNN primitives (layouts chosen by oneDNN with format_tag::any for conv,
//     followed by the other ops), inserting reorders only where a layout or type must change;
//     weights are reordered into the primitive's layout once, here;
//  C. plan activation memory: one arena, buffers reused once their last reader has run.
// Ops without a oneDNN path (Pad, odd Resize modes, Reshape, ...) run the executor's ATen
// kernel on plain NCHW f32 copies ("aten" in describe()).
#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/registry.h"

namespace segslim::engine {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;
using alg = dnnl::algorithm;

// Op types that can run on runtime tensors. Everything else must be constant-foldable.
const std::set<std::string>& runtime_ops() {
  static const std::set<std::string> s{
      "Conv", "ConvTranspose", "BatchNormalization", "PRelu", "Relu", "LeakyRelu", "Clip",
      "Sigmoid", "Tanh", "HardSwish", "Elu", "Add", "Sub", "Mul", "Div", "Concat", "MaxPool",
      "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Upsample", "QuantizeLinear",
      "DequantizeLinear", "Identity", "Dropout",
      // ATen fallback (plain f32 copies)
      "Pad", "Softmax", "Reshape", "Flatten", "Transpose", "Slice", "Squeeze", "Unsqueeze"};
  return s;
}

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

std::string node_name(const onnx::NodeProto& n) {
  return n.name().empty() ? "<" + n.op_type() + " producing " + n.output(0) + ">" : n.name();
}

std::vector<float> to_floats(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous().reshape({-1});
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

tag plain_tag(size_t rank) {
  switch (rank) {
    case 1:
      return tag::a;
    case 2:
      return tag::ab;
    case 3:
      return tag::abc;
    case 4:
      return tag::abcd;
    case 5:
      return tag::abcde;
    default:
      throw Error(str_cat("engine: rank-", rank, " tensors are not supported"));
  }
}

memory::dims mdims(const std::vector<int64_t>& d) { return memory::dims(d.begin(), d.end()); }

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
  enum Kind { kConv, kPool, kConcat, kBinary, kElt, kPrelu, kResample, kQuant, kDequant, kAten };
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
  // aten
  const onnx::NodeProto* node = nullptr;
  std::vector<at::Tensor> const_in;  // per node input: defined = constant
  std::vector<int> in_slot;          // per node input: index into `in` or -1
};

// ---------------------------------------------------------------- executable plan
struct Exec {
  dnnl::primitive prim;
  std::unordered_map<int, int> val_args;  // dnnl arg -> val id
  std::unordered_map<int, memory> args;   // constant args, then all args after planning
  std::function<void()> custom;
  std::vector<int> reads, writes;
  std::string line;
};

}  // namespace

struct Plan {
  std::vector<Val> vals;
  std::vector<Step> ir;
  std::vector<Exec> execs;
  std::vector<std::string> lines;
  int int8_steps = 0;
  int64_t opset = 13;
  int input_val = -1, output_val = -1;
  std::vector<memory> mems;  // per val, after planning
  std::shared_ptr<uint8_t> arena;
  memory out_mem;  // user output (nchw f32), handle per run
  memory in_mem;
  dnnl::reorder out_reorder;
  std::vector<int64_t> out_dims;
  at::Tensor out_cache;  // the last output tensor, reused once the caller drops it
};

struct Engine::Impl {
  onnx::ModelProto model;
  EngineOptions opt;
  int64_t opset = 13;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  Plan* last = nullptr;
  std::string input_name;

  void check_supported();
  std::unique_ptr<Plan> compile(const std::vector<int64_t>& in_dims);
};

namespace {

// ================================================================ phase A: graph -> IR
class Builder {
 public:
  Builder(const onnx::ModelProto& model, const EngineOptions& opt, int64_t opset, Plan& p)
      : model_(model), opt_(opt), opset_(opset), p_(p) {
    const auto& g = model.graph();
    for (const auto& init : g.initializer()) consts_[init.name()] = tensor_from_proto(init);
    for (const auto& n : g.node())
      for (const auto& i : n.input())
        if (!i.empty()) ++consumers_[i];
    for (const auto& o : g.output()) {
      ++consumers_[o.name()];
      outputs_.insert(o.name());
    }
  }

  void build(const std::string& input, const std::vector<int64_t>& dims) {
    int v = new_val(input, dims);
    p_.vals[v].external = true;
    p_.input_val = v;
    rt_[input].val = v;
    for (const auto& n : model_.graph().node()) node(n);
    const std::string out = model_.graph().output(0).name();
    SEGSLIM_CHECK(!consts_.count(out), opt_.origin, ": the graph output ", out, " is constant");
    p_.output_val = f32(out);
  }

 private:
  struct Ref {
    int val = -1;   // f32 materialized
    int qval = -1;  // int8 value this name dequantizes (DQ alias) or is (Q output)
    bool is_q = false;
    float scale = 1;
    int zp = 0;
  };

  int new_val(const std::string& name, std::vector<int64_t> dims, dt type = dt::f32) {
    Val v;
    v.name = name;
    v.dims = std::move(dims);
    v.type = type;
    p_.vals.push_back(v);
    producer_.push_back(-1);
    return static_cast<int>(p_.vals.size()) - 1;
  }
  int add_step(Step s) {
    p_.ir.push_back(std::move(s));
    const int idx = static_cast<int>(p_.ir.size()) - 1;
    if (p_.ir.back().out >= 0) producer_[p_.ir.back().out] = idx;
    return idx;
  }

  [[noreturn]] void fail(const onnx::NodeProto& n, const std::string& msg) const {
    throw Error(str_cat(opt_.origin, ": ", n.op_type(), " node '", node_name(n), "': ", msg));
  }

  bool is_const(const std::string& name) const { return name.empty() || consts_.count(name); }
  at::Tensor cst(const std::string& name) const {
    auto it = consts_.find(name);
    return it == consts_.end() ? at::Tensor() : it->second;
  }
  const std::vector<int64_t>& dims_of(const std::string& name) {
    auto it = rt_.find(name);
    SEGSLIM_CHECK(it != rt_.end(), opt_.origin, ": value ", name, " is not computed");
    const Ref& r = it->second;
    return p_.vals[r.val >= 0 ? r.val : r.qval].dims;
  }
  bool single_use(const std::string& name) const {
    auto it = consumers_.find(name);
    return it != consumers_.end() && it->second == 1 && !outputs_.count(name);
  }

  // The float value of a runtime name, materializing a DQ (reorder with scale) when needed.
  int f32(const std::string& name) {
    auto it = rt_.find(name);
    SEGSLIM_CHECK(it != rt_.end(), opt_.origin, ": value ", name, " is not computed");
    Ref& r = it->second;
    if (r.val >= 0) return r.val;
    SEGSLIM_CHECK(!r.is_q, opt_.origin, ": the integer tensor ", name,
                  " is used by something other than DequantizeLinear or an int8 convolution");
    Step s;
    s.kind = Step::kDequant;
    s.op = "DequantizeLinear";
    s.name = name;
    s.in = {r.qval};
    s.scale = r.scale;
    s.zp = r.zp;
    s.out = new_val(name, p_.vals[r.qval].dims);
    add_step(std::move(s));
    r.val = p_.ir.back().out;
    return r.val;
  }

  // The conv step producing `name` when further ops may be fused into it.
  Step* fusable_conv(const std::string& name) {
    if (!single_use(name)) return nullptr;
    auto it = rt_.find(name);
    if (it == rt_.end() || it->second.val < 0) return nullptr;
    const int pi = producer_[it->second.val];
    if (pi < 0) return nullptr;
    Step& s = p_.ir[pi];
    if (s.kind != Step::kConv || s.out != it->second.val) return nullptr;
    if (p_.vals[s.out].type != dt::f32) return nullptr;
    return &s;
  }
  // The int8 conv producing `name` (f32, not yet read by any step) when its other consumers
  // (besides Q node `q`) are Concats quantized with the same scale (u8 or s8, zero point 0):
  // the Q then fuses into the conv and the int8 Concats read its int8 output, exactly the
  // values they would quantize it to.
  Step* shared_conv(const std::string& name, const onnx::NodeProto& q, float scale, bool u8) {
    if (outputs_.count(name) || !int8_enabled("Concat")) return nullptr;
    auto it = rt_.find(name);
    if (it == rt_.end() || it->second.val < 0) return nullptr;
    const int v = it->second.val;
    const int pi = producer_[v];
    if (pi < 0) return nullptr;
    Step& s = p_.ir[pi];
    if (s.kind != Step::kConv || s.out != v || !s.int8 || p_.vals[v].type != dt::f32)
      return nullptr;
    for (size_t k = pi + 1; k < p_.ir.size(); ++k)
      for (int i : p_.ir[k].in)
        if (i == v) return nullptr;
    for (const auto& c : model_.graph().node()) {
      if (&c == &q) continue;
      bool reads = false;
      for (const auto& i : c.input()) reads = reads || i == name;
      if (!reads) continue;
      if (c.op_type() != "Concat") return nullptr;
      const onnx::NodeProto* cq = q_consumer(c.output(0));
      if (!cq || cst(cq->input(1)).item<float>() != scale) return nullptr;
      const at::Tensor z = cq->input_size() > 2 ? cst(cq->input(2)) : at::Tensor();
      if ((z.defined() && z.item<int>() != 0) ||
          (!z.defined() || z.scalar_type() == at::kByte) != u8)
        return nullptr;
    }
    return &s;
  }
  // The only consumer of `name` when it is a QuantizeLinear with constant per-tensor scale.
  const onnx::NodeProto* q_consumer(const std::string& name) const {
    if (!single_use(name)) return nullptr;
    for (const auto& c : model_.graph().node())
      for (const auto& i : c.input())
        if (i == name) {
          if (c.op_type() != "QuantizeLinear") return nullptr;
          const at::Tensor sc = cst(c.input(1));
          if (!sc.defined() || sc.numel() != 1) return nullptr;
          return &c;
        }
    return nullptr;
  }

  void rename(Step& s, const std::string& name) {
    p_.vals[s.out].name = name;
    rt_[name].val = s.out;
  }

  void constant_fold(const onnx::NodeProto& n) {
    const auto* op = ops::Registry::instance().find(n.op_type());
    if (!op) fail(n, "no kernel to constant-fold it");
    ops::Tensors in;
    for (const auto& i : n.input()) in.push_back(cst(i));
    ops::NodeContext ctx(n, opset_, false);
    ops::Tensors out = op->run(ctx, in);
    for (int k = 0; k < n.output_size() && k < static_cast<int>(out.size()); ++k)
      if (!n.output(k).empty()) consts_[n.output(k)] = out[k];
    // Remember int8 weights read by a DQ (exported model) or produced by a Q of a constant.
    if (n.op_type() == "DequantizeLinear") {
      QInfo q;
      q.q = in[0];
      q.scale = in[1];
      q.zp = in.size() > 2 ? in[2] : at::Tensor();
      q.axis = Attrs{n}.i("axis", 1);
      qinfo_[n.output(0)] = q;
    }
  }

  void node(const onnx::NodeProto& n) {
    const std::string& t = n.op_type();
    if (t == "Constant") return constant_fold(n);
    if (t == "Shape" && !is_const(n.input(0))) {
      auto d = dims_of(n.input(0));
      const int64_t r = static_cast<int64_t>(d.size());
      int64_t start = Attrs{n}.i("start", 0), end = Attrs{n}.i("end", r);
      if (start < 0) start += r;
      if (end < 0) end += r;
      start = std::clamp<int64_t>(start, 0, r);
      end = std::clamp<int64_t>(end, start, r);
      std::vector<int64_t> v(d.begin() + start, d.begin() + end);
      consts_[n.output(0)] = at::tensor(v, at::kLong);
      return;
    }
    bool all_const = true;
    for (const auto& i : n.input()) all_const = all_const && is_const(i);
    if (all_const && t != "QuantizeLinear") return constant_fold(n);
    if (all_const) {  // Q of a constant (weights of a QAT model): fold, remember
      constant_fold(n);
      return;
    }
    if (t == "Identity" || t == "Dropout") {
      rt_[n.output(0)] = rt_.at(n.input(0));
      return;
    }
    if (t == "QuantizeLinear") return quantize(n);
    if (t == "DequantizeLinear") return dequantize(n);
    if (t == "Conv" || t == "ConvTranspose") return conv(n);
    if (t == "BatchNormalization") return batchnorm(n);
    if (t == "PRelu") return prelu(n);
    if (t == "Relu" || t == "LeakyRelu" || t == "Clip" || t == "Sigmoid" || t == "Tanh" ||
        t == "HardSwish" || t == "Elu")
      return eltwise(n);
    if (t == "Add" || t == "Sub" || t == "Mul" || t == "Div") return binary(n);
    if (t == "Concat") return concat(n);
    if (t == "MaxPool" || t == "AveragePool" || t == "GlobalAveragePool" || t == "GlobalMaxPool")
      return pool(n);
    if (t == "Resize" || t == "Upsample") return resize(n);
    if (runtime_ops().count(t)) return aten(n);
    fail(n, "is not supported by the engine");
  }

  void quantize(const onnx::NodeProto& n) {
    const at::Tensor s = cst(n.input(1));
    const at::Tensor z = n.input_size() > 2 ? cst(n.input(2)) : at::Tensor();
    if (!s.defined() || s.numel() != 1) fail(n, "only per-tensor activation quantization runs");
    const float scale = s.item<float>();
    const int zp = z.defined() ? z.item<int>() : 0;
    const bool u8 = !z.defined() || z.scalar_type() == at::kByte;
    const dt type = u8 ? dt::u8 : dt::s8;
    Ref r;
    r.is_q = true;
    r.scale = scale;
    r.zp = zp;
    // Already int8 at this scale (an int8 Concat / pooling): the Q is the identity.
    if (auto qit = rt_.find(n.input(0)); qit != rt_.end()) {
      const Ref& in = qit->second;
      if (in.val < 0 && in.qval >= 0 && !in.is_q && in.scale == scale && in.zp == zp &&
          p_.vals[in.qval].type == type) {
        r.qval = in.qval;
        rt_[n.output(0)] = r;
        return;
      }
    }
    // Requantize straight out of the convolution when it is the only producer: the conv's
    // per-channel output scale becomes alpha_c / s_y and it writes int8 (zero point 0 only).
    Step* c = fusable_conv(n.input(0));
    bool shared = false;  // the conv's output also feeds Concats quantized at this scale
    if (!c && zp == 0) {
      c = shared_conv(n.input(0), n, scale, u8);
      shared = c != nullptr;
    }
    bool homogeneous = c != nullptr && zp == 0;
    if (c)
      for (auto& po : c->post)
        homogeneous = homogeneous && (po.kind == PostOp::kPrelu ||
                                      (po.kind == PostOp::kElt && (po.algo == alg::eltwise_relu ||
                                                                   po.algo == alg::eltwise_clip)));
    if (c && c->int8 && homogeneous) {
      Val& v = p_.vals[c->out];
      v.type = type;
      v.scale = scale;
      v.zp = 0;
      v.name = n.output(0);
      c->tags.push_back(std::string("->") + (u8 ? "u8" : "s8"));
      r.qval = c->out;
      rt_[n.output(0)] = r;
      if (shared) {  // the Concats read the int8 value
        Ref a;
        a.qval = c->out;
        a.scale = scale;
        a.zp = 0;
        rt_[n.input(0)] = a;
      }
      return;
    }
    Step q;
    q.kind = Step::kQuant;
    q.op = "QuantizeLinear";
    q.name = node_name(n);
    q.in = {f32(n.input(0))};
    q.scale = scale;
    q.zp = zp;
    q.out = new_val(n.output(0), p_.vals[q.in[0]].dims, type);
    p_.vals[q.out].scale = scale;
    p_.vals[q.out].zp = zp;
    r.qval = q.out;
    add_step(std::move(q));
    rt_[n.output(0)] = r;
  }

  void dequantize(const onnx::NodeProto& n) {
    auto it = rt_.find(n.input(0));
    if (it == rt_.end() || !it->second.is_q) {
      // DQ of a float runtime value cannot happen in a valid model; run it on ATen
      return aten(n);
    }
    const at::Tensor s = cst(n.input(1));
    const at::Tensor z = n.input_size() > 2 ? cst(n.input(2)) : at::Tensor();
    if (!s.defined() || s.numel() != 1) fail(n, "only per-tensor activation dequantization runs");
    Ref r;
    r.qval = it->second.qval;
    r.scale = s.item<float>();
    r.zp = z.defined() ? z.item<int>() : 0;
    rt_[n.output(0)] = r;
  }

  bool int8_enabled(const std::string& type) const {
    return opt_.int8_op_types.empty() || opt_.int8_op_types.count(type);
  }

  void conv(const onnx::NodeProto& n) {
    Attrs a{n};
    const bool deconv = n.op_type() == "ConvTranspose";
    const at::Tensor w = cst(n.input(1));
    if (!w.defined()) fail(n, "the weight must be constant");
    if (w.dim() != 4) fail(n, "only 2-D convolutions run");
    const at::Tensor b = n.input_size() > 2 ? cst(n.input(2)) : at::Tensor();
    if (n.input_size() > 2 && !n.input(2).empty() && !b.defined())
      fail(n, "the bias must be constant");
    Step s;
    s.kind = Step::kConv;
    s.op = n.op_type();
    s.name = node_name(n);
    s.deconv = deconv;
    s.groups = a.i("group", 1);
    const int64_t kh = w.size(2), kw = w.size(3);
    s.strides = a.ints("strides", {1, 1});
    s.dil = a.ints("dilations", {1, 1});
    auto pads = a.ints("pads", {0, 0, 0, 0});
    const std::string auto_pad = a.s("auto_pad", "NOTSET");

    // int8: input is a DQ of an int8 runtime value, weight a DQ of int8 constant
    auto rin = rt_.find(n.input(0));
    if (rin == rt_.end()) fail(n, "input " + n.input(0) + " is not computed");
    const Ref ref = rin->second;
    auto qi = qinfo_.find(n.input(1));
    const bool want_int8 =
        ref.qval >= 0 && !ref.is_q && qi != qinfo_.end() && int8_enabled(n.op_type());
    bool int8 = false;
    if (want_int8) {
      const QInfo& q = qi->second;
      const bool sym_w =
          q.q.scalar_type() == at::kChar && (!q.zp.defined() || q.zp.abs().max().item<int>() == 0);
      const int64_t oc_axis = deconv ? 1 : 0;
      const bool axis_ok = q.scale.numel() == 1 || (q.axis == oc_axis || q.axis == oc_axis - 4);
      const bool src_ok = ref.zp == 0;  // u8/s8 with zero point 0
      int8 = sym_w && axis_ok && src_ok && (!deconv || s.groups == 1);
      if (!int8) s.tags.push_back("f32(int8 pattern not supported: zero point/axis)");
    }
    const auto& in_dims = dims_of(n.input(0));
    const int64_t N = in_dims[0], C = in_dims[1], H = in_dims[2], W = in_dims[3];
    const int64_t OC = deconv ? w.size(1) * s.groups : w.size(0);
    const int64_t ICw = deconv ? w.size(0) : w.size(1) * s.groups;
    if (ICw != C) fail(n, str_cat("input has ", C, " channels, the weight expects ", ICw));
    std::vector<int64_t> k{kh, kw}, in_sp{H, W}, out_sp(2);
    s.pl = {pads[0], pads[1]};
    s.pr = {pads[2], pads[3]};
    for (int d = 0; d < 2; ++d) {
      const int64_t ek = (k[d] - 1) * s.dil[d] + 1;
      if (!deconv) {
        if (auto_pad == "VALID") s.pl[d] = s.pr[d] = 0;
        if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
          const int64_t o = (in_sp[d] + s.strides[d] - 1) / s.strides[d];
          const int64_t total = std::max<int64_t>((o - 1) * s.strides[d] + ek - in_sp[d], 0);
          s.pl[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
          s.pr[d] = total - s.pl[d];
        }
        out_sp[d] = (in_sp[d] + s.pl[d] + s.pr[d] - ek) / s.strides[d] + 1;
      } else {
        if (auto_pad != "NOTSET" || a.find("output_shape"))
          fail(n, "auto_pad/output_shape are not supported");
        const auto op = a.ints("output_padding", {0, 0});
        out_sp[d] = s.strides[d] * (in_sp[d] - 1) + op[d] + ek - s.pl[d] - s.pr[d];
        s.pr[d] -= op[d];  // output padding extends the right edge
      }
      if (out_sp[d] <= 0) fail(n, "empty output");
    }
    if (int8) {
      const QInfo& q = qi->second;
      s.int8 = true;
      s.w = q.q;
      const auto sw = to_floats(q.scale);
      // acc = sum q_x * q_w; real = s_x * s_w[oc] * acc + b[oc]  =>  alpha = s_x * s_w
      s.alpha.resize(OC);
      s.beta.assign(OC, 0.f);
      for (int64_t c = 0; c < OC; ++c) s.alpha[c] = ref.scale * sw[sw.size() == 1 ? 0 : c];
      if (b.defined()) s.beta = to_floats(b);
      s.in = {ref.qval};
      s.tags.push_back(p_.vals[ref.qval].type == dt::u8 ? "int8 u8" : "int8 s8");
    } else {
      s.w = w.to(at::kFloat).contiguous();
      if (b.defined()) s.b = b.to(at::kFloat).contiguous();
      s.in = {f32(n.input(0))};
      s.tags.push_back("f32");
    }
    if (b.defined()) s.tags.push_back("+bias");
    s.out = new_val(n.output(0), {N, OC, out_sp[0], out_sp[1]});
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // Scales every output channel of conv `s` by a and adds c (BN folded into the conv).
  static void fold_affine(Step& s, const std::vector<float>& a, const std::vector<float>& c) {
    const int64_t OC = static_cast<int64_t>(a.size());
    if (s.int8) {
      // real = alpha*acc + beta  ->  a*(alpha*acc + beta) + c
      for (int64_t i = 0; i < OC; ++i) {
        s.alpha[i] *= a[i];
        s.beta[i] = a[i] * s.beta[i] + c[i];
      }
      return;
    }
    at::Tensor at_a = at::tensor(a), at_c = at::tensor(c);
    if (!s.deconv) {
      s.w = s.w * at_a.view({OC, 1, 1, 1});
    } else {  // [G*ICg, OCg, kh, kw]: output channel g*OCg + j
      const int64_t G = s.groups, OCg = OC / G;
      auto w5 = s.w.view({G, s.w.size(0) / G, OCg, s.w.size(2), s.w.size(3)});
      s.w = (w5 * at_a.view({G, 1, OCg, 1, 1})).reshape(s.w.sizes()).contiguous();
    }
    s.b = s.b.defined() ? s.b * at_a + at_c : at_c;
  }

  void batchnorm(const onnx::NodeProto& n) {
    const float eps = Attrs{n}.f("epsilon", 1e-5f);
    at::Tensor g = cst(n.input(1)), be = cst(n.input(2)), m = cst(n.input(3)), v = cst(n.input(4));
    if (!g.defined() || !be.defined() || !m.defined() || !v.defined())
      fail(n, "scale, bias, mean and variance must be constant");
    // y = a * x + c with a = g / sqrt(v + eps), c = beta - m * a
    at::Tensor at_a = g.to(at::kFloat) / at::sqrt(v.to(at::kFloat) + eps);
    at::Tensor at_c = be.to(at::kFloat) - m.to(at::kFloat) * at_a;
    auto a = to_floats(at_a), c = to_floats(at_c);
    Step* conv = fusable_conv(n.input(0));
    if (conv && conv->post.empty()) {
      bool ok = true;
      if (conv->int8)
        for (size_t i = 0; i < a.size(); ++i) ok = ok && conv->alpha[i] * a[i] != 0.f;
      if (ok) {
        fold_affine(*conv, a, c);
        conv->tags.push_back("+bn");
        rename(*conv, n.output(0));
        return;
      }
    }
    // Standalone: a depthwise 1x1 convolution with weight a_c and bias c_c, so activations
    // and residual adds after it fuse like after any conv.
    const auto& d = dims_of(n.input(0));
    Step s;
    s.kind = Step::kConv;
    s.op = "BatchNormalization";
    s.name = node_name(n);
    s.groups = d[1];
    s.strides = {1, 1};
    s.dil = {1, 1};
    s.pl = s.pr = {0, 0};
    s.w = at_a.view({d[1], 1, 1, 1}).contiguous();
    s.b = at_c.contiguous();
    s.in = {f32(n.input(0))};
    s.tags = {"f32 as depthwise 1x1 (scale+shift)"};
    s.out = new_val(n.output(0), d);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  void add_eltwise(const onnx::NodeProto& n, PostOp po, const std::string& tag_name) {
    if (Step* c = fusable_conv(n.input(0))) {
      c->post.push_back(po);
      c->tags.push_back("+" + tag_name);
      rename(*c, n.output(0));
      return;
    }
    Step s;
    s.kind = po.kind == PostOp::kPrelu ? Step::kPrelu : Step::kElt;
    s.op = n.op_type();
    s.name = node_name(n);
    s.algo = po.algo;
    s.a = po.alpha;
    s.bb = po.beta;
    s.slope = po.slope;
    s.in = {f32(n.input(0))};
    s.out = new_val(n.output(0), p_.vals[s.in[0]].dims);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  void eltwise(const onnx::NodeProto& n) {
    Attrs a{n};
    const std::string& t = n.op_type();
    PostOp po;
    po.kind = PostOp::kElt;
    if (t == "Relu") {
      po.algo = alg::eltwise_relu;
    } else if (t == "LeakyRelu") {
      po.algo = alg::eltwise_relu;
      po.alpha = a.f("alpha", 0.01f);
    } else if (t == "Elu") {
      po.algo = alg::eltwise_elu;
      po.alpha = a.f("alpha", 1.f);
    } else if (t == "Sigmoid") {
      po.algo = alg::eltwise_logistic;
    } else if (t == "Tanh") {
      po.algo = alg::eltwise_tanh;
    } else if (t == "HardSwish") {
      po.algo = alg::eltwise_hardswish;
    } else {  // Clip
      float lo = -INFINITY, hi = INFINITY;
      if (opset_ < 11) {
        lo = a.f("min", lo);
        hi = a.f("max", hi);
      } else {
        if (n.input_size() > 1 && !n.input(1).empty()) {
          if (!is_const(n.input(1))) fail(n, "min must be constant");
          lo = cst(n.input(1)).item<float>();
        }
        if (n.input_size() > 2 && !n.input(2).empty()) {
          if (!is_const(n.input(2))) fail(n, "max must be constant");
          hi = cst(n.input(2)).item<float>();
        }
      }
      po.algo = alg::eltwise_clip;
      po.alpha = lo;
      po.beta = hi;
    }
    std::string name = t;
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    add_eltwise(n, po, name);
  }

  void prelu(const onnx::NodeProto& n) {
    const at::Tensor slope = cst(n.input(1));
    if (!slope.defined()) fail(n, "the slope must be constant");
    const auto& d = dims_of(n.input(0));
    PostOp po;
    if (slope.numel() == 1) {  // PReLU with one slope is a leaky ReLU
      po.kind = PostOp::kElt;
      po.algo = alg::eltwise_relu;
      po.alpha = slope.item<float>();
      return add_eltwise(n, po, "prelu");
    }
    // per channel: slope [C], [C,1,1] or [1,C,1,1]
    if (d.size() != 4 || slope.numel() != d[1] ||
        !(slope.dim() == 1 || (slope.dim() >= 3 && slope.size(slope.dim() - 3) == d[1])))
      return aten(n);
    po.kind = PostOp::kPrelu;
    po.slope = to_floats(slope);
    add_eltwise(n, po, "prelu");
  }

  void binary(const onnx::NodeProto& n) {
    const std::string& t = n.op_type();
    const bool c0 = is_const(n.input(0)), c1 = is_const(n.input(1));
    // Residual Add fused into the conv producing one operand when the other is ready before it.
    if (t == "Add" && !c0 && !c1) {
      for (int i = 0; i < 2; ++i) {
        Step* c = fusable_conv(n.input(i));
        if (!c) continue;
        auto it = rt_.find(n.input(1 - i));
        if (it == rt_.end() || it->second.val < 0) continue;
        const int other = it->second.val;
        const int conv_idx = static_cast<int>(c - p_.ir.data());
        if (p_.vals[other].dims != p_.vals[c->out].dims) continue;
        if (!p_.vals[other].external && producer_[other] >= conv_idx) continue;
        PostOp po;
        po.kind = PostOp::kAdd;
        po.val = other;
        c->post.push_back(po);
        c->in.push_back(other);
        c->tags.push_back("+add");
        rename(*c, n.output(0));
        return;
      }
    }
    Step s;
    s.kind = Step::kBinary;
    s.op = t;
    s.name = node_name(n);
    s.algo = t == "Add"   ? alg::binary_add
             : t == "Sub" ? alg::binary_sub
             : t == "Mul" ? alg::binary_mul
                          : alg::binary_div;
    if (c0 && (t == "Sub" || t == "Div")) return aten(n);
    std::string x = n.input(0), y = n.input(1);
    if (c0) std::swap(x, y);
    s.in = {f32(x)};
    const auto& dx = p_.vals[s.in[0]].dims;
    std::vector<int64_t> dy;
    if (is_const(y)) {
      at::Tensor cy = cst(y).to(at::kFloat);
      if (cy.dim() > static_cast<int64_t>(dx.size())) return aten(n);
      while (cy.dim() < static_cast<int64_t>(dx.size())) cy = cy.unsqueeze(0);
      s.cst = cy.contiguous();
      dy = cy.sizes().vec();
    } else {
      s.in.push_back(f32(y));
      dy = p_.vals[s.in[1]].dims;
      if (dy.size() != dx.size()) return aten(n);
    }
    // src0 must have the output shape; src1 broadcasts
    for (size_t i = 0; i < dx.size(); ++i)
      if (!(dy[i] == dx[i] || dy[i] == 1)) {
        if (!s.cst.defined() && (t == "Add" || t == "Mul") && (dx[i] == 1 || dx[i] == dy[i])) {
          std::swap(s.in[0], s.in[1]);
          return binary_swapped(n, s);
        }
        return aten(n);
      }
    s.out = new_val(n.output(0), dx);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }
  void binary_swapped(const onnx::NodeProto& n, Step s) {
    const auto& dx = p_.vals[s.in[0]].dims;
    const auto& dy = p_.vals[s.in[1]].dims;
    for (size_t i = 0; i < dx.size(); ++i)
      if (!(dy[i] == dx[i] || dy[i] == 1)) return aten(n);
    s.out = new_val(n.output(0), dx);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  void concat(const onnx::NodeProto& n) {
    Step s;
    s.kind = Step::kConcat;
    s.op = "Concat";
    s.name = node_name(n);
    for (const auto& i : n.input())
      if (is_const(i)) return aten(n);
    if (concat_int8(n, s)) return;
    for (const auto& i : n.input()) s.in.push_back(f32(i));
    auto d = p_.vals[s.in[0]].dims;
    int64_t axis = Attrs{n}.i("axis", 1);
    if (axis < 0) axis += d.size();
    s.axis = axis;
    d[axis] = 0;
    for (int v : s.in) d[axis] += p_.vals[v].dims[axis];
    s.out = new_val(n.output(0), d);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // Concat whose only consumer is a Q (zero point 0): each input int8 at the Q's scale (an
  // int8-out conv writes it directly, int8 values at that scale are taken as they are, f32
  // ones quantized: exactly Q(Concat(x)) = Concat(Q(x_i))), the concat itself on int8 (a
  // quarter of the f32 traffic); the Q becomes the identity.
  bool concat_int8(const onnx::NodeProto& n, Step& s) {
    if (!int8_enabled("Concat")) return false;
    const onnx::NodeProto* q = q_consumer(n.output(0));
    if (!q) return false;
    const at::Tensor z = q->input_size() > 2 ? cst(q->input(2)) : at::Tensor();
    if (z.defined() && z.item<int>() != 0) return false;
    const float scale = cst(q->input(1)).item<float>();
    const dt type = !z.defined() || z.scalar_type() == at::kByte ? dt::u8 : dt::s8;
    for (const auto& i : n.input()) {
      auto it = rt_.find(i);
      if (it == rt_.end()) return false;
    }
    for (const auto& i : n.input()) {
      const Ref r = rt_.at(i);
      if (r.val < 0 && r.qval >= 0 && !r.is_q && r.zp == 0 && r.scale == scale &&
          p_.vals[r.qval].type == type) {
        s.in.push_back(r.qval);
        continue;
      }
      Step* c = fusable_conv(i);
      bool homogeneous = c != nullptr && c->int8;
      if (c)
        for (auto& po : c->post)
          homogeneous =
              homogeneous && (po.kind == PostOp::kPrelu ||
                              (po.kind == PostOp::kElt &&
                               (po.algo == alg::eltwise_relu || po.algo == alg::eltwise_clip)));
      if (homogeneous) {
        Val& v = p_.vals[c->out];
        v.type = type;
        v.scale = scale;
        v.zp = 0;
        c->tags.push_back(std::string("->") + (type == dt::u8 ? "u8" : "s8") + "(concat)");
        s.in.push_back(c->out);
        continue;
      }
      Step qs;
      qs.kind = Step::kQuant;
      qs.op = "QuantizeLinear";
      qs.name = i + " (for int8 concat)";
      qs.in = {f32(i)};
      qs.scale = scale;
      qs.out = new_val(i + "#q", p_.vals[qs.in[0]].dims, type);
      p_.vals[qs.out].scale = scale;
      s.in.push_back(qs.out);
      add_step(std::move(qs));
    }
    auto d = p_.vals[s.in[0]].dims;
    int64_t axis = Attrs{n}.i("axis", 1);
    if (axis < 0) axis += d.size();
    s.axis = axis;
    d[axis] = 0;
    for (int v : s.in) d[axis] += p_.vals[v].dims[axis];
    s.out = new_val(n.output(0), d, type);
    p_.vals[s.out].scale = scale;
    s.tags.push_back(type == dt::u8 ? "int8 u8" : "int8 s8");
    add_step(std::move(s));
    Ref r;
    r.qval = p_.ir.back().out;
    r.scale = scale;
    r.zp = 0;
    rt_[n.output(0)] = r;
    return true;
  }

  void pool(const onnx::NodeProto& n) {
    Attrs a{n};
    const std::string& t = n.op_type();
    std::string src = n.input(0);
    auto pit = pad_of_.find(src);
    const auto& d = dims_of(pit != pad_of_.end() ? pit->second.first : src);
    if (d.size() != 4) fail(n, "only 2-D pooling runs");
    Step s;
    s.kind = Step::kPool;
    s.op = t;
    s.name = node_name(n);
    const bool global = t.rfind("Global", 0) == 0;
    std::vector<int64_t> pads{0, 0, 0, 0};
    if (global) {
      s.kernel = {d[2], d[3]};
      s.strides = {1, 1};
    } else {
      if (a.s("auto_pad", "NOTSET") != "NOTSET") return aten(n);
      s.kernel = a.ints("kernel_shape");
      s.strides = a.ints("strides", {1, 1});
      pads = a.ints("pads", {0, 0, 0, 0});
      if (!a.ints("dilations", {1, 1}).empty() &&
          a.ints("dilations", {1, 1}) != std::vector<int64_t>{1, 1})
        return aten(n);
    }
    const bool is_max = t.find("Max") != std::string::npos;
    bool include = a.i("count_include_pad", 0) != 0;
    // Pad(0, spatial) -> AveragePool: the zeros count, i.e. include_padding with those pads.
    if (!is_max && pit != pad_of_.end() && (include || pads == std::vector<int64_t>{0, 0, 0, 0})) {
      for (int i = 0; i < 4; ++i) pads[i] += pit->second.second[i];
      include = true;
      src = pit->second.first;
      s.tags.push_back("+pad");
    }
    const auto& sd = dims_of(src);
    std::vector<int64_t> out_sp(2);
    s.pl = {pads[0], pads[1]};
    s.pr = {pads[2], pads[3]};
    const bool ceil = a.i("ceil_mode", 0) != 0;
    for (int i = 0; i < 2; ++i) {
      const int64_t span = sd[2 + i] + s.pl[i] + s.pr[i] - s.kernel[i];
      out_sp[i] = (ceil ? (span + s.strides[i] - 1) / s.strides[i] : span / s.strides[i]) + 1;
      if (ceil && (out_sp[i] - 1) * s.strides[i] >= sd[2 + i] + s.pl[i]) --out_sp[i];
      const int64_t extra =
          (out_sp[i] - 1) * s.strides[i] + s.kernel[i] - (sd[2 + i] + s.pl[i] + s.pr[i]);
      if (extra > 0) {
        if (!is_max && include) fail(n, "ceil_mode with count_include_pad is not supported");
        s.pr[i] += extra;
      }
    }
    s.algo = is_max    ? alg::pooling_max
             : include ? alg::pooling_avg_include_padding
                       : alg::pooling_avg_exclude_padding;
    // int8 in (an int8 value not materialized in f32, zero point 0) and quantized again with
    // the same scale: pool on int8, the output keeps the scale and the Q is the identity.
    const Ref sr = rt_.at(src);
    const onnx::NodeProto* pq = q_consumer(n.output(0));
    const at::Tensor pz = pq && pq->input_size() > 2 ? cst(pq->input(2)) : at::Tensor();
    if (sr.val < 0 && sr.qval >= 0 && !sr.is_q && sr.zp == 0 && int8_enabled(t) && pq &&
        cst(pq->input(1)).item<float>() == sr.scale && (!pz.defined() || pz.item<int>() == 0) &&
        (pz.defined() && pz.scalar_type() == at::kChar ? dt::s8 : dt::u8) ==
            p_.vals[sr.qval].type) {
      s.in = {sr.qval};
      s.out = new_val(n.output(0), {sd[0], sd[1], out_sp[0], out_sp[1]}, p_.vals[sr.qval].type);
      p_.vals[s.out].scale = sr.scale;
      s.tags.push_back("int8");
      add_step(std::move(s));
      Ref r;
      r.qval = p_.ir.back().out;
      r.scale = sr.scale;
      rt_[n.output(0)] = r;
      return;
    }
    s.in = {f32(src)};
    s.out = new_val(n.output(0), {sd[0], sd[1], out_sp[0], out_sp[1]});
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  void resize(const onnx::NodeProto& n) {
    Attrs a{n};
    const auto& d = dims_of(n.input(0));
    if (d.size() != 4 || opset_ < 11 || n.op_type() == "Upsample") return aten(n);
    const std::string mode = a.s("mode", "nearest");
    const std::string ctm = a.s("coordinate_transformation_mode", "half_pixel");
    const std::string nm = a.s("nearest_mode", "round_prefer_floor");
    at::Tensor scales = n.input_size() > 2 && !n.input(2).empty() ? cst(n.input(2)) : at::Tensor();
    at::Tensor sizes = n.input_size() > 3 && !n.input(3).empty() ? cst(n.input(3)) : at::Tensor();
    if ((n.input_size() > 3 && !n.input(3).empty() && !sizes.defined()) ||
        (n.input_size() > 2 && !n.input(2).empty() && !scales.defined()))
      fail(n, "scales/sizes must be computable at compile time");
    std::vector<int64_t> out = d;
    bool exact = true;  // the coordinate scale equals out / in
    if (sizes.defined() && sizes.numel() == 4) {
      out = ops::to_int_vector(sizes);
    } else if (scales.defined() && scales.numel() == 4) {
      auto sc = to_floats(scales);
      for (int i = 0; i < 4; ++i) {
        out[i] = static_cast<int64_t>(std::floor(d[i] * sc[i]));
        exact = exact &&
                std::fabs(static_cast<double>(out[i]) - d[i] * static_cast<double>(sc[i])) < 1e-6;
      }
    } else {
      fail(n, "needs scales or sizes of rank 4");
    }
    if (out[0] != d[0] || out[1] != d[1]) return aten(n);
    bool ok = exact && a.i("antialias", 0) == 0;
    Step s;
    s.kind = Step::kResample;
    s.op = n.op_type();
    s.name = node_name(n);
    if (mode == "linear") {
      // oneDNN linear = half_pixel (PyTorch align_corners=False); pytorch_half_pixel is the
      // same unless an output extent is 1.
      ok = ok && (ctm == "half_pixel" || (ctm == "pytorch_half_pixel" && out[2] > 1 && out[3] > 1));
      s.algo = alg::resampling_linear;
    } else if (mode == "nearest") {
      // For integer upsampling factors, half_pixel + round_prefer_floor, asymmetric + floor and
      // oneDNN's nearest all pick source floor(dst / k).
      bool integer = out[2] % d[2] == 0 && out[3] % d[3] == 0;
      ok = ok && integer &&
           ((ctm == "asymmetric" && nm == "floor") ||
            ((ctm == "half_pixel" || ctm == "pytorch_half_pixel") && nm == "round_prefer_floor"));
      s.algo = alg::resampling_nearest;
    } else {
      ok = false;
    }
    if (!ok) return aten(n);
    s.in = {f32(n.input(0))};
    s.out = new_val(n.output(0), out);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // Fallback: the executor's ATen kernel on plain f32 NCHW copies.
  void aten(const onnx::NodeProto& n) {
    // Pad(constant 0, spatial only) whose only consumer is an AveragePool / Conv is folded.
    if (n.op_type() == "Pad" && single_use(n.output(0)) && opset_ >= 11) {
      at::Tensor pads = cst(n.input(1));
      at::Tensor val = n.input_size() > 2 && !n.input(2).empty() ? cst(n.input(2)) : at::zeros({});
      const std::string mode = Attrs{n}.s("mode", "constant");
      if (pads.defined() && pads.numel() == 8 && val.defined() && val.item<double>() == 0 &&
          mode == "constant") {
        auto p = ops::to_int_vector(pads);
        if (p[0] == 0 && p[1] == 0 && p[4] == 0 && p[5] == 0 &&
            *std::min_element(p.begin(), p.end()) >= 0) {
          for (const auto& nn : model_.graph().node())
            for (const auto& i : nn.input())
              if (i == n.output(0) && nn.op_type() == "AveragePool") {
                pad_of_[n.output(0)] = {n.input(0), {p[2], p[3], p[6], p[7]}};
                // the padded tensor itself is never materialized; AveragePool reads the source
                return;
              }
        }
      }
    }
    Step s;
    s.kind = Step::kAten;
    s.op = n.op_type();
    s.name = node_name(n);
    s.node = &n;
    for (const auto& i : n.input()) {
      if (is_const(i)) {
        s.const_in.push_back(cst(i));
        s.in_slot.push_back(-1);
      } else {
        s.const_in.push_back(at::Tensor());
        s.in_slot.push_back(static_cast<int>(s.in.size()));
        s.in.push_back(f32(i));
      }
    }
    // output shape: run the kernel once on zeros of the input shapes
    ops::Tensors probe;
    for (size_t k = 0; k < s.const_in.size(); ++k)
      probe.push_back(s.in_slot[k] < 0 ? s.const_in[k]
                                       : at::zeros(p_.vals[s.in[s.in_slot[k]]].dims, at::kFloat));
    const auto* op = ops::Registry::instance().find(n.op_type());
    if (!op) fail(n, "is not supported");
    ops::NodeContext ctx(n, opset_, false);
    auto out = op->run(ctx, probe);
    if (out.empty() || out[0].scalar_type() != at::kFloat) fail(n, "runs only with float outputs");
    s.out = new_val(n.output(0), out[0].sizes().vec());
    s.tags.push_back("aten f32");
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  const onnx::ModelProto& model_;
  const EngineOptions& opt_;
  int64_t opset_;
  Plan& p_;
  std::unordered_map<std::string, at::Tensor> consts_;
  std::unordered_map<std::string, QInfo> qinfo_;
  std::unordered_map<std::string, int> consumers_;
  std::set<std::string> outputs_;
  std::unordered_map<std::string, Ref> rt_;
  std::vector<int> producer_;
  std::unordered_map<std::string, std::pair<std::string, std::vector<int64_t>>> pad_of_;
};

// ================================================================ phase B: IR -> primitives
class Lowering {
 public:
  Lowering(Plan& p, const dnnl::engine& eng, dnnl::stream& strm) : p_(p), eng_(eng), strm_(strm) {}

  void run() {
    Val& in = p_.vals[p_.input_val];
    in.md = memory::desc(mdims(in.dims), dt::f32, plain_tag(in.dims.size()));
    in.has_md = true;
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
  static std::string impl(const dnnl::primitive_desc_base& pd) { return pd.impl_info_str(); }

  // A value with exactly layout `want` (same dims and type): itself, or a reorder of it.
  int ensure(int v, const memory::desc& want) {
    if (md(v) == want) return v;
    auto key = std::make_pair(v, static_cast<size_t>(p_.execs.size()));
    (void)key;
    Val nv = p_.vals[v];
    nv.md = want;
    nv.has_md = true;
    nv.external = false;
    nv.name += "#reorder";
    p_.vals.push_back(nv);
    const int out = static_cast<int>(p_.vals.size()) - 1;
    dnnl::reorder::primitive_desc pd(eng_, md(v), eng_, want);
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, v}, {DNNL_ARG_TO, out}};
    e.reads = {v};
    e.writes = {out};
    p_.execs.push_back(std::move(e));
    p_.lines.push_back("Reorder " + p_.vals[v].name + " (layout)");
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

  void push(Exec e, const Step& s, const std::string& detail) {
    std::string line = s.op + " " + s.name;
    for (const auto& t : s.tags) line += " " + t;
    if (!detail.empty()) line += " [" + detail + "]";
    e.line = line;
    p_.execs.push_back(std::move(e));
    p_.lines.push_back(line);
  }

  void lower(Step& s) {
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
      case Step::kAten:
        return aten(s);
    }
  }

  void conv(Step& s) {
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
    auto search = [&]() {
      const memory::desc nhwc_d(mdims(out.dims), dst_type, tag::acdb);
      const memory::desc dmd(mdims(out.dims), dst_type, tag::any);
      const memory::desc nhwc_s(mdims(sv.dims), sv.type, tag::acdb);
      const memory::desc any_s(mdims(sv.dims), sv.type, tag::any);
      const std::vector<std::pair<memory::desc, memory::desc>> tries{
          {md(src), nhwc_d}, {nhwc_s, nhwc_d}, {any_s, dmd}};
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
    //  - a per-channel PReLU post-op sends 2.6 to its reference kernels (or, for int8
    //    deconvolution, to gemm with a slow post-op pass): run it on its own (the prelu
    //    primitive; for an int8-out conv: conv to f32, prelu, then the Q reorder).
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
    bool requant = false;             // int8-out conv split: f32 out, post-ops, then a Q reorder
    if (is_ref(pd) || is_gemm(pd)) {  // gemm's PReLU post-op is slow too (int8 deconv)
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
    const int src2 = ensure(src, pd.src_desc());
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
    push(std::move(e), s, impl(pd));
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
        t.kind = Step::kPrelu;
        t.op = "PRelu";
        t.slope = p.slope;
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
    const int src = s.in[0];
    memory::desc dmd(mdims(p_.vals[s.out].dims), p_.vals[s.out].type, tag::any);
    dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, s.algo, md(src), dmd,
                                  mdims(s.strides), mdims(s.kernel), mdims(s.pl), mdims(s.pr));
    dnnl::pooling_forward::primitive_desc pd(d, eng_);
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
      if (p_.vals[b].dims == p_.vals[a].dims) b = ensure(b, md(a));
      bmd = md(b);
    }
    dnnl::binary::desc d(s.algo, md(a), bmd, md(a));
    dnnl::binary::primitive_desc pd(d, eng_);
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
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::eltwise_forward(pd);
    e.val_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
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
    const int src = s.in[0];
    memory::desc dmd(mdims(p_.vals[s.out].dims), dt::f32, tag::any);
    dnnl::resampling_forward::desc d(dnnl::prop_kind::forward_inference, s.algo, md(src), dmd);
    dnnl::resampling_forward::primitive_desc pd(d, eng_);
    set_md(s.out, pd.dst_desc());
    Exec e;
    e.prim = dnnl::resampling_forward(pd);
    e.val_args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, impl(pd));
  }

  // Q: q = saturate(round(x / s) + zp), a reorder with output scale 1/s (nhwc int8 out).
  void quant(Step& s) {
    const int src = s.in[0];
    Val& out = p_.vals[s.out];
    const memory::desc dmd(mdims(out.dims), out.type,
                           out.dims.size() == 4 ? tag::acdb : plain_tag(out.dims.size()));
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.f / s.scale});
    if (s.zp != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {s.zp});
    dnnl::reorder::primitive_desc pd(eng_, md(src), eng_, dmd, attr);
    set_md(s.out, dmd);
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, "");
  }

  // DQ: x = (q - zp) * s, a reorder to f32 with output scale s.
  void dequant(Step& s) {
    const int src = s.in[0];
    const memory::desc& smd = md(src);
    const memory::desc dmd(
        mdims(p_.vals[s.out].dims), dt::f32,
        p_.vals[s.out].dims.size() == 4 ? tag::acdb : plain_tag(p_.vals[s.out].dims.size()));
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {s.scale});
    if (s.zp != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {s.zp});
    dnnl::reorder::primitive_desc pd(eng_, smd, eng_, dmd, attr);
    set_md(s.out, dmd);
    Exec e;
    e.prim = dnnl::reorder(pd);
    e.val_args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, s.out}};
    e.reads = {src};
    e.writes = {s.out};
    push(std::move(e), s, "");
  }

  void aten(Step& s) {
    std::vector<int> plain_in;
    for (int v : s.in) {
      const auto& d = p_.vals[v].dims;
      plain_in.push_back(ensure(v, memory::desc(mdims(d), dt::f32, plain_tag(d.size()))));
    }
    const auto& od = p_.vals[s.out].dims;
    set_md(s.out, memory::desc(mdims(od), dt::f32, plain_tag(od.size())));
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
      at::Tensor r = ops::Registry::instance().find(step->node->op_type())->run(ctx, in)[0];
      r = r.to(at::kFloat).contiguous();
      std::memcpy(plan->mems[out].get_data_handle(), r.data_ptr(), r.numel() * sizeof(float));
    };
    e.reads = plain_in;
    e.writes = {out};
    push(std::move(e), s, "");
  }

  Plan& p_;
  const dnnl::engine& eng_;
  dnnl::stream& strm_;
  std::deque<Step> split_;  // steps created while lowering (stable addresses)
};

// ================================================================ phase C: memory plan
void plan_memory(Plan& p, const dnnl::engine& eng) {
  const int nv = static_cast<int>(p.vals.size());
  std::vector<int> last(nv, -1), first(nv, -1);
  for (int i = 0; i < static_cast<int>(p.execs.size()); ++i) {
    for (int v : p.execs[i].reads) last[v] = i;
    for (int v : p.execs[i].writes)
      if (first[v] < 0) first[v] = i;
  }
  last[p.output_val] = static_cast<int>(p.execs.size());  // read by the final reorder
  // Greedy: buffers (offset, size) released after their value's last reader.
  struct Buf {
    size_t off, size;
    int free_at;  // usable by steps > free_at
  };
  std::vector<Buf> bufs;
  std::vector<size_t> off(nv, 0);
  size_t total = 0;
  const size_t align = 64;
  for (int i = 0; i < static_cast<int>(p.execs.size()); ++i) {
    for (int v : p.execs[i].writes) {
      if (first[v] != i || p.vals[v].external) continue;
      const size_t need = (p.vals[v].md.get_size() + align - 1) / align * align;
      int best = -1;
      for (int b = 0; b < static_cast<int>(bufs.size()); ++b)
        if (bufs[b].free_at < i && bufs[b].size >= need &&
            (best < 0 || bufs[b].size < bufs[best].size))
          best = b;
      if (best < 0) {
        bufs.push_back({total, need, 0});
        total += need;
        best = static_cast<int>(bufs.size()) - 1;
      }
      bufs[best].free_at = std::max(last[v], i);
      off[v] = bufs[best].off;
    }
  }
  p.arena =
      std::shared_ptr<uint8_t>(static_cast<uint8_t*>(std::aligned_alloc(align, total + align)),
                               [](uint8_t* q) { std::free(q); });
  p.mems.assign(nv, memory());
  for (int v = 0; v < nv; ++v) {
    if (!p.vals[v].has_md) continue;
    if (p.vals[v].external) {
      p.mems[v] = memory(p.vals[v].md, eng, nullptr);
      p.in_mem = p.mems[v];
    } else {
      p.mems[v] = memory(p.vals[v].md, eng, p.arena.get() + off[v]);
    }
  }
  for (auto& e : p.execs)
    for (const auto& [arg, v] : e.val_args) e.args[arg] = p.mems[v];
}

}  // namespace

void Engine::Impl::check_supported() {
  const auto& g = model.graph();
  std::set<std::string> known;  // values computable at compile time
  for (const auto& i : g.initializer()) known.insert(i.name());
  std::map<std::string, std::string> bad;
  const auto& reg = ops::Registry::instance();
  for (const auto& n : g.node()) {
    const bool default_domain = n.domain().empty() || n.domain() == "ai.onnx";
    const std::string type = default_domain ? n.op_type() : n.domain() + "::" + n.op_type();
    bool all_known = true;
    for (const auto& i : n.input()) all_known = all_known && (i.empty() || known.count(i));
    bool ok = false;
    if (default_domain && (n.op_type() == "Constant" || n.op_type() == "Shape" ||
                           (all_known && reg.find(n.op_type())))) {
      ok = true;
      for (const auto& o : n.output()) known.insert(o);
    } else if (default_domain && runtime_ops().count(n.op_type())) {
      ok = true;
    }
    if (!ok && !bad.count(type)) bad[type] = node_name(n);
  }
  if (bad.empty()) return;
  std::string msg =
      opt.origin + ": the engine cannot run " + std::to_string(bad.size()) + " op type(s): ";
  bool first = true;
  for (const auto& [t, nn] : bad) {
    msg += (first ? "" : ", ") + t + " (node " + nn + ")";
    first = false;
  }
  std::string sup;
  for (const auto& t : runtime_ops()) sup += (sup.empty() ? "" : ", ") + t;
  throw Error(msg + ". Runs: " + sup + " (and any op on compile-time constants)");
}

std::unique_ptr<Plan> Engine::Impl::compile(const std::vector<int64_t>& in_dims) {
  auto p = std::make_unique<Plan>();
  p->opset = opset;
  Builder(model, opt, opset, *p).build(input_name, in_dims);
  Lowering(*p, eng, strm).run();
  // graph boundary: the output to NCHW f32
  Val& ov = p->vals[p->output_val];
  p->out_dims = ov.dims;
  memory::desc omd(mdims(ov.dims), dt::f32, plain_tag(ov.dims.size()));
  p->out_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, ov.md, eng, omd));
  plan_memory(*p, eng);
  p->out_mem = memory(omd, eng, nullptr);
  return p;
}

Engine::Engine(const onnx::ModelProto& model, EngineOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = model;
  impl_->opt = std::move(options);
  impl_->opset = default_opset(model);
  const auto inputs = real_inputs(model.graph());
  SEGSLIM_CHECK(inputs.size() == 1, impl_->opt.origin,
                ": the engine runs models with one input, this one has ", inputs.size());
  SEGSLIM_CHECK(model.graph().output_size() >= 1, impl_->opt.origin, ": the model has no output");
  impl_->input_name = inputs[0]->name();
  impl_->check_supported();
}

Engine::~Engine() = default;

at::Tensor Engine::run(const at::Tensor& input) {
  SEGSLIM_CHECK(input.scalar_type() == at::kFloat && input.device().is_cpu(), impl_->opt.origin,
                ": the engine takes a float32 CPU tensor");
  at::Tensor x = input.contiguous();
  const std::vector<int64_t> dims = x.sizes().vec();
  auto& slot = impl_->plans[dims];
  if (!slot) slot = impl_->compile(dims);
  Plan& p = *slot;
  impl_->last = &p;
  p.in_mem.set_data_handle(x.data_ptr());
  for (auto& e : p.execs) {
    if (e.custom) {
      impl_->strm.wait();
      e.custom();
    } else {
      try {
        e.prim.execute(impl_->strm, e.args);
      } catch (const dnnl::error& err) {
        throw Error(
            str_cat(impl_->opt.origin, ": oneDNN failed in step '", e.line, "': ", err.what()));
      }
    }
  }
  // The previous output, when the caller has let go of it (and of every view of it): a large
  // fresh buffer would be page-faulted in on every run (a 1x19x1024x2048 map is 160 MB).
  if (!p.out_cache.defined() || p.out_cache.use_count() != 1 ||
      p.out_cache.storage().use_count() != 1)  // nor a view of it
    p.out_cache = at::empty(p.out_dims, at::kFloat);
  at::Tensor out = p.out_cache;
  p.out_mem.set_data_handle(out.data_ptr());
  p.out_reorder.execute(impl_->strm, p.mems[p.output_val], p.out_mem);
  impl_->strm.wait();
  return out;
}

std::vector<std::string> Engine::describe() const {
  if (!impl_->last) return {};
  return impl_->last->lines;
}

int Engine::num_int8_steps() const { return impl_->last ? impl_->last->int8_steps : 0; }

}  // namespace segslim::engine

// Phase A of the engine's compilation (plan.h): walk the ONNX graph in order; constant-fold
// every node whose inputs are known at compile time (initializers, Constant, Shape of a tensor
// of known shape, and anything computed from those) with the executor's own ATen kernels; turn
// the rest into IR steps, fusing BatchNormalization / activations / PRelu / residual Add into
// the convolution before them and dissolving Q -> DQ -> Conv patterns into int8 convolutions.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

#include "common/error.h"
#include "engine/plan.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "ops/registry.h"

namespace segslim::engine {
namespace {

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
  // A step writing int8 (zero point 0) at `scale` as runtime value `name`, which has no f32
  // form until a consumer asks for one.
  void add_int8_step(Step s, const std::string& name, float scale) {
    add_step(std::move(s));
    Ref r;
    r.qval = p_.ir.back().out;
    r.scale = scale;
    r.zp = 0;
    rt_[name] = r;
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
  // A copy: the Val it comes from may move when later calls add values.
  std::vector<int64_t> dims_of(const std::string& name) {
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

  // The step of `kind` producing the f32 value `name` when further ops may be folded into it:
  // `name` has exactly `uses` readers (those ops) and is no graph output.
  Step* sole_producer(const std::string& name, Step::Kind kind, int uses = 1) {
    auto ct = consumers_.find(name);
    if (ct == consumers_.end() || ct->second != uses || outputs_.count(name)) return nullptr;
    auto it = rt_.find(name);
    if (it == rt_.end() || it->second.val < 0) return nullptr;
    const int pi = producer_[it->second.val];
    if (pi < 0) return nullptr;
    Step& s = p_.ir[pi];
    if (s.kind != kind || s.out != it->second.val || p_.vals[s.out].type != dt::f32) return nullptr;
    return &s;
  }
  // The conv step producing `name` when further ops may be fused into it.
  Step* fusable_conv(const std::string& name, int uses = 1) {
    return sole_producer(name, Step::kConv, uses);
  }
  // The int8 conv producing `name` (f32, not yet read by any step) when its other consumers
  // (besides Q node `q`) are Concats quantized with the same scale (u8 or s8, zero point 0):
  // the Q then fuses into the conv and the int8 Concats read its int8 output, exactly the
  // values they would quantize it to. (At another scale they would requantize it, rounding
  // twice: measurably off the QDQ graph, so those quantize the f32 output instead.)
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
  // The int8-in average pooling producing `name` (its f32 mean, read by nothing else): the
  // kernel may write the mean quantized instead.
  Step* fusable_int8_pool(const std::string& name) {
    return sole_producer(name, Step::kInt8AvgPool);
  }
  // The reduction over the channels only producing `name` (its f32 map, read by nothing
  // else): its kernel may write the map quantized instead (channel_reduce.h).
  Step* fusable_channel_reduce(const std::string& name) {
    Step* r = sole_producer(name, Step::kReduce);
    if (!r) return nullptr;
    const auto& d = p_.vals[r->in[0]].dims;
    const auto& od = p_.vals[r->out].dims;
    const bool channels_only = d.size() == 4 && od.size() == 4 && od[0] == d[0] && od[1] == 1 &&
                               od[2] == d[2] && od[3] == d[3];
    return channels_only ? r : nullptr;
  }
  // A 2-D MaxPool / AveragePool that may run on int8 input (pool()).
  bool int8_pool(const onnx::NodeProto& n) const {
    const std::string& t = n.op_type();
    if (t != "MaxPool" && t != "AveragePool") return false;
    if (!int8_enabled(t) || Attrs{n}.s("auto_pad", "NOTSET") != "NOTSET") return false;
    const auto dil = Attrs{n}.ints("dilations", {1, 1});
    return dil.empty() || dil == std::vector<int64_t>{1, 1};
  }
  // The only consumer of `name` when it is a QuantizeLinear with constant per-tensor scale.
  const onnx::NodeProto* q_consumer(const std::string& name) const {
    const onnx::NodeProto* c = sole_consumer(name);
    if (!c || c->op_type() != "QuantizeLinear") return nullptr;
    const at::Tensor sc = cst(c->input(1));
    return sc.defined() && sc.numel() == 1 ? c : nullptr;
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
    if (fused_.count(&n)) return;  // computed by an earlier node's step
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
    if (t == "HardSigmoid") return hard_sigmoid(n);
    if (t == "Add" || t == "Sub" || t == "Mul" || t == "Div") return binary(n);
    if (t == "Concat") return concat(n);
    if (t == "MaxPool" || t == "AveragePool" || t == "GlobalAveragePool" || t == "GlobalMaxPool")
      return pool(n);
    if (t == "Resize" || t == "Upsample") return resize(n);
    if (t == "MatMul") return matmul(n);
    if (t == "Softmax") return softmax(n);
    if (t == "ArgMax") return argmax(n);
    if (t == "ReduceMean" || t == "ReduceMax" || t == "ReduceSum") return reduce(n);
    if (t == "Transpose") return transpose(n);
    if (t == "Reshape" && grouped_row_mean(n)) return;
    if (ops::Registry::instance().find(t) && float_result(n)) return aten(n);
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
      writes_quantized(*c, n, type, r, ends_nonneg(*c));
      if (shared) {  // the Concats read the int8 value
        Ref a;
        a.qval = c->out;
        a.scale = scale;
        a.zp = 0;
        rt_[n.input(0)] = a;
      }
      return;
    }
    // A Softmax read only by this Q (attention's probabilities before their MatMul) writes
    // int8 itself: oneDNN's softmax takes an int8 destination with an output scale 1 / s,
    // rounding half to even and saturating as QuantizeLinear does (zero point 0 only).
    if (Step* sm = sole_producer(n.input(0), Step::kSoftmax); sm && zp == 0) {
      writes_quantized(*sm, n, type, r, true);  // probabilities: non-negative
      return;
    }
    // A blend read only by this Q quantizes in its own pass (attention_blend.h).
    if (Step* bl = sole_producer(n.input(0), Step::kBlend); bl && zp == 0) {
      writes_quantized(*bl, n, type, r, false);
      return;
    }
    if (auto it = rt_.find(n.input(0)); zp == 0 && it != rt_.end() && it->second.val >= 0) {
      const int qv = quantized_tail(it->second.val, scale, type, n.output(0));
      if (qv >= 0) {
        r.qval = qv;
        rt_[n.output(0)] = r;
        return;
      }
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
    p_.vals[q.out].nonneg = zp == 0 && known_nonneg(q.in[0]);
    r.qval = q.out;
    add_step(std::move(q));
    rt_[n.output(0)] = r;
  }

  // Step s writes QuantizeLinear q's output itself (`type` at r.scale, zero point 0): the step's
  // float output value becomes that int8 value, which lowering gives an int8 destination.
  void writes_quantized(Step& s, const onnx::NodeProto& q, dt type, Ref r, bool nonneg) {
    Val& v = p_.vals[s.out];
    v.type = type;
    v.scale = r.scale;
    v.zp = 0;
    v.nonneg = nonneg;
    v.name = q.output(0);
    s.tags.push_back(type == dt::u8 ? "->u8" : "->s8");
    r.qval = s.out;
    rt_[q.output(0)] = r;
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
    // after a concatenation's int8 residual sum (concat_add): composed
    if (Step* t = sole_producer(n.input(0), Step::kConcatAffine);
        t && t->slope.empty() && t->qouts.empty()) {
      for (size_t i = 0; i < a.size(); ++i) {
        t->affine_c[i] = a[i] * t->affine_c[i] + c[i];
        t->affine_a[i] *= a[i];
      }
      t->tags.push_back("+bn");
      rename(*t, n.output(0));
      return;
    }
    if (concat_affine(n, a, c)) return;
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
    add_eltwise(n, n.input(0), n.output(0), po, tag_name);
  }
  // Eltwise po of value `in` as value `out` (node n names the step): a post-op of the conv
  // producing `in` when it has no other reader (`uses` readers all folded into this one).
  void add_eltwise(const onnx::NodeProto& n, const std::string& in, const std::string& out,
                   PostOp po, const std::string& tag_name, int uses = 1) {
    // a PRelu / (leaky) ReLU after a concat + BatchNormalization: the same pass
    if (Step* t = sole_producer(in, Step::kConcatAffine, uses);
        t && t->slope.empty() && t->qouts.empty() &&
        (po.kind == PostOp::kPrelu || (po.kind == PostOp::kElt && po.algo == alg::eltwise_relu))) {
      t->slope =
          po.kind == PostOp::kPrelu ? po.slope : std::vector<float>(t->affine_a.size(), po.alpha);
      t->tags.push_back("+" + tag_name);
      rename(*t, out);
      return;
    }
    if (Step* c = fusable_conv(in, uses)) {
      c->post.push_back(po);
      c->tags.push_back("+" + tag_name);
      rename(*c, out);
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
    s.in = {f32(in)};
    s.out = new_val(out, p_.vals[s.in[0]].dims);
    add_step(std::move(s));
    rt_[out].val = p_.ir.back().out;
  }

  // Whether conv c's output is >= 0 whatever its input: its last post-op is a ReLU (not leaky)
  // or a Clip with a non-negative lower bound.
  static bool ends_nonneg(const Step& c) {
    if (c.post.empty()) return false;
    const PostOp& p = c.post.back();
    return p.kind == PostOp::kElt && ((p.algo == alg::eltwise_relu && p.alpha == 0.f) ||
                                      (p.algo == alg::eltwise_clip && p.alpha >= 0.f));
  }
  // Whether value v is known to be >= 0: flagged, or the f32 output of a conv ending in a ReLU.
  bool known_nonneg(int v) const {
    if (p_.vals[v].nonneg) return true;
    const int pi = producer_[v];
    return pi >= 0 && p_.ir[pi].kind == Step::kConv && p_.ir[pi].out == v && ends_nonneg(p_.ir[pi]);
  }
  static PostOp elt_post_op(alg algo, float alpha = 0.f, float beta = 0.f) {
    PostOp po;
    po.kind = PostOp::kElt;
    po.algo = algo;
    po.alpha = alpha;
    po.beta = beta;
    return po;
  }

  // HardSigmoid(x) = clip(alpha x + beta, 0, 1) (oneDNN 2.6 has no such eltwise): linear then
  // clip, as two post-ops of the producing conv or two eltwise steps. x * HardSigmoid(x) with
  // alpha 1/6, beta 1/2 is HardSwish (how MobileNetV3's hardswish exports): one eltwise.
  void hard_sigmoid(const onnx::NodeProto& n) {
    Attrs a{n};
    const float alpha = a.f("alpha", 0.2f), beta = a.f("beta", 0.5f);
    const std::string& x = n.input(0);
    if (std::fabs(alpha - 1.f / 6.f) < 1e-6f && beta == 0.5f) {
      const onnx::NodeProto* m = sole_consumer(n.output(0));
      auto it = consumers_.find(x);
      if (m && m->op_type() == "Mul" && it != consumers_.end() && it->second == 2 &&
          ((m->input(0) == x && m->input(1) == n.output(0)) ||
           (m->input(1) == x && m->input(0) == n.output(0)))) {
        add_eltwise(*m, x, m->output(0), elt_post_op(alg::eltwise_hardswish), "hardswish", 2);
        fused_.insert(m);
        return;
      }
    }
    const PostOp lin = elt_post_op(alg::eltwise_linear, alpha, beta);
    const PostOp clip = elt_post_op(alg::eltwise_clip, 0.f, 1.f);
    if (Step* c = fusable_conv(x)) {
      c->post.push_back(lin);
      c->post.push_back(clip);
      c->tags.push_back("+hardsigmoid");
      rename(*c, n.output(0));
      return;
    }
    add_eltwise(n, x, n.output(0) + "#linear", lin, "linear");
    add_eltwise(n, n.output(0) + "#linear", n.output(0), clip, "clip");
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
    if ((t == "Mul" || t == "Div") && scaled_matmul(n)) return;
    if (t == "Add" && !c0 && !c1 && attention_blend(n)) return;
    if (t == "Add" && !c0 && !c1 && concat_add(n)) return;
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
    aten_inputs(n, s);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }
  void binary_swapped(const onnx::NodeProto& n, Step s) {
    const auto& dx = p_.vals[s.in[0]].dims;
    const auto& dy = p_.vals[s.in[1]].dims;
    for (size_t i = 0; i < dx.size(); ++i)
      if (!(dy[i] == dx[i] || dy[i] == 1)) return aten(n);
    s.out = new_val(n.output(0), dx);
    aten_inputs(n, s);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // Add(Mul(x, a), Mul(y, b)) with x, y full maps and a, b one value per pixel (UAFM's
  // x * alpha + y * (1 - alpha)), each product read only by the Add: one blend step.
  bool attention_blend(const onnx::NodeProto& n) {
    int x[2], w[2];
    Step* mul[2];
    for (int i = 0; i < 2; ++i) {
      mul[i] = sole_producer(n.input(i), Step::kBinary);
      if (!mul[i] || mul[i]->algo != alg::binary_mul || mul[i]->cst.defined() ||
          mul[i]->in.size() != 2 || !mul[i]->post.empty())
        return false;
      const auto& d = p_.vals[mul[i]->out].dims;
      if (d.size() != 4) return false;
      const int u = mul[i]->in[0], v = mul[i]->in[1];
      const std::vector<int64_t> pixel{d[0], 1, d[2], d[3]};
      if (p_.vals[u].dims == d && p_.vals[v].dims == pixel) {
        x[i] = u, w[i] = v;
      } else if (p_.vals[v].dims == d && p_.vals[u].dims == pixel) {
        x[i] = v, w[i] = u;
      } else {
        return false;
      }
    }
    if (p_.vals[mul[0]->out].dims != p_.vals[mul[1]->out].dims) return false;
    Step s;
    s.kind = Step::kBlend;
    s.op = "Add";
    s.name = node_name(n);
    s.in = {x[0], w[0], x[1], w[1]};
    s.out = new_val(n.output(0), p_.vals[mul[0]->out].dims);
    s.tags.push_back("x*a+y*b of " + mul[0]->name + ", " + mul[1]->name);
    mul[0]->removed = mul[1]->removed = true;
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
    return true;
  }

  // MatMul followed by a Mul (or Div) with a constant scalar, attention's q k^T / sqrt(d): the
  // scalar becomes the matmul's output scale (one pass over a map that can be the largest of
  // the network: N x heads x HW x HW' at stage 1 of SegFormer).
  bool scaled_matmul(const onnx::NodeProto& n) {
    const bool c0 = is_const(n.input(0)), c1 = is_const(n.input(1));
    if (c0 == c1 || (c0 && n.op_type() == "Div")) return false;
    const at::Tensor c = cst(n.input(c0 ? 0 : 1));
    if (c.numel() != 1 || !c.is_floating_point()) return false;
    Step* mm = sole_producer(n.input(c0 ? 1 : 0), Step::kMatmul);
    if (!mm) return false;
    Step& m = *mm;
    // the output dims must not change by broadcasting against the scalar's rank
    if (c.dim() > static_cast<int64_t>(p_.vals[m.out].dims.size())) return false;
    const float k = n.op_type() == "Mul" ? c.item<float>() : 1.f / c.item<float>();
    if (m.alpha.empty()) m.alpha.assign(1, 1.f);
    for (float& a : m.alpha) a *= k;
    m.tags.push_back(n.op_type() == "Mul" ? "*scale" : "/scale");
    rename(m, n.output(0));
    return true;
  }

  // Makes step s (its values s.in already chosen, in any order) runnable as node n on ATen too:
  // lowering falls back to that where oneDNN has only a reference kernel (binary ops
  // broadcasting along the last axis of a plain tensor, as in a decomposed LayerNorm).
  void aten_inputs(const onnx::NodeProto& n, Step& s) {
    s.node = &n;
    s.const_in.clear();
    s.in_slot.clear();
    for (const auto& i : n.input()) {
      if (is_const(i)) {
        s.const_in.push_back(cst(i));
        s.in_slot.push_back(-1);
        continue;
      }
      const int v = rt_.at(i).val;
      const auto k = std::find(s.in.begin(), s.in.end(), v);
      SEGSLIM_CHECK(k != s.in.end(), opt_.origin, ": ", node_name(n), ": input ", i,
                    " is not among the step's values");
      s.const_in.push_back(at::Tensor());
      s.in_slot.push_back(static_cast<int>(k - s.in.begin()));
    }
  }

  // The output dims of Concat node n over the values s.in (sets s.axis).
  std::vector<int64_t> concat_dims(const onnx::NodeProto& n, Step& s) const {
    auto d = p_.vals[s.in[0]].dims;
    int64_t axis = Attrs{n}.i("axis", 1);
    if (axis < 0) axis += d.size();
    s.axis = axis;
    d[axis] = 0;
    for (int v : s.in) d[axis] += p_.vals[v].dims[axis];
    return d;
  }

  void concat(const onnx::NodeProto& n) {
    Step s;
    s.kind = Step::kConcat;
    s.op = "Concat";
    s.name = node_name(n);
    for (const auto& i : n.input())
      if (is_const(i)) return aten(n);
    if (concat_int8(n, s)) return;
    for (const auto& i : n.input()) {
      s.const_in.push_back(at::Tensor());  // lowering may fall back to ATen (see there)
      s.in_slot.push_back(static_cast<int>(s.in.size()));
      s.in.push_back(f32(i));
    }
    s.node = &n;
    const std::vector<int64_t> d = concat_dims(n, s);
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
    // Q -> DQ -> Add only: the Add's concat_affine step quantizes the float pieces in its pass
    // (concat_add), with no int8 concatenation in memory
    if (const onnx::NodeProto* dq = sole_consumer(q->output(0));
        dq && dq->op_type() == "DequantizeLinear" && int8_enabled("Add")) {
      const onnx::NodeProto* add = sole_consumer(dq->output(0));
      if (add && add->op_type() == "Add") return false;
    }
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
      // the producer writes int8 at the Concat's scale itself: an int8 conv whose post-ops
      // commute with the scaling, or an int8-in pooling (it quantizes its mean)
      Step* producer = homogeneous ? c : fusable_int8_pool(i);
      if (!producer) producer = fusable_channel_reduce(i);
      if (producer) {
        Val& v = p_.vals[producer->out];
        v.type = type;
        v.scale = scale;
        v.zp = 0;
        v.nonneg = producer == c ? ends_nonneg(*c) : known_nonneg(producer->in[0]);
        producer->tags.push_back(std::string("->") + (type == dt::u8 ? "u8" : "s8") + "(concat)");
        s.in.push_back(producer->out);
        continue;
      }
      if (const int qv = r.val >= 0 ? quantized_tail(r.val, scale, type, i + "#q") : -1; qv >= 0) {
        s.in.push_back(qv);
        continue;
      }
      Step qs;
      qs.kind = Step::kQuant;
      qs.op = "QuantizeLinear";
      if (r.val < 0 && r.qval >= 0 && !r.is_q && r.zp == 0) {
        // int8 at another scale (an int8 pooling): requantize, q' = round(q * s_in / s),
        // without going through f32.
        qs.name = i + " (requantized for int8 concat)";
        qs.in = {r.qval};
        qs.scale = scale / r.scale;
      } else {
        qs.name = i + " (for int8 concat)";
        qs.in = {f32(i)};
        qs.scale = scale;
      }
      qs.out = new_val(i + "#q", p_.vals[qs.in[0]].dims, type);
      p_.vals[qs.out].scale = scale;
      p_.vals[qs.out].nonneg = known_nonneg(qs.in[0]);
      s.in.push_back(qs.out);
      add_step(std::move(qs));
    }
    const std::vector<int64_t> d = concat_dims(n, s);
    s.out = new_val(n.output(0), d, type);
    p_.vals[s.out].scale = scale;
    p_.vals[s.out].nonneg =
        std::all_of(s.in.begin(), s.in.end(), [&](int v) { return p_.vals[v].nonneg; });
    s.tags.push_back(type == dt::u8 ? "int8 u8" : "int8 s8");
    add_int8_step(std::move(s), n.output(0), scale);
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
    const bool int8_in = sr.val < 0 && sr.qval >= 0 && !sr.is_q && sr.zp == 0;
    const bool requantized_same =
        int8_in && int8_enabled(t) && pq && cst(pq->input(1)).item<float>() == sr.scale &&
        (!pz.defined() || pz.item<int>() == 0) &&
        (pz.defined() && pz.scalar_type() == at::kChar ? dt::s8 : dt::u8) == p_.vals[sr.qval].type;
    // The model quantizes the pool's input (a DQ reads it): AveragePool sums the int8 values
    // into a float mean; MaxPool stays int8 at the input's scale (max commutes with
    // quantization), and consumers at another scale requantize the smaller pooled tensor.
    if (!requantized_same && int8_in && int8_pool(n) && !is_max &&
        s.kernel[0] * s.kernel[1] <= 128) {  // int16 window sums (int8_avg_pool.cpp)
      s.kind = Step::kInt8AvgPool;
      s.scale = sr.scale;
      s.in = {sr.qval};
      s.tags.push_back("int8 in");
      // Quantized again (zero point 0): the kernel quantizes the mean, the Q is the identity.
      const bool quantized = pq && (!pz.defined() || pz.item<int>() == 0);
      const dt out_type = !quantized                                      ? dt::f32
                          : pz.defined() && pz.scalar_type() == at::kChar ? dt::s8
                                                                          : dt::u8;
      s.out = new_val(n.output(0), {sd[0], sd[1], out_sp[0], out_sp[1]}, out_type);
      if (quantized) {
        const float q_scale = cst(pq->input(1)).item<float>();
        p_.vals[s.out].scale = q_scale;
        p_.vals[s.out].nonneg = p_.vals[sr.qval].nonneg;  // a mean of values >= 0
        s.tags.push_back(out_type == dt::u8 ? "->u8" : "->s8");
        add_int8_step(std::move(s), n.output(0), q_scale);
        return;
      }
      add_step(std::move(s));
      rt_[n.output(0)].val = p_.ir.back().out;
      return;
    }
    if (requantized_same || (int8_in && int8_pool(n) && is_max)) {
      s.in = {sr.qval};
      s.out = new_val(n.output(0), {sd[0], sd[1], out_sp[0], out_sp[1]}, p_.vals[sr.qval].type);
      p_.vals[s.out].scale = sr.scale;
      p_.vals[s.out].nonneg = p_.vals[sr.qval].nonneg;
      s.tags.push_back("int8");
      add_int8_step(std::move(s), n.output(0), sr.scale);
      return;
    }
    s.in = {f32(src)};
    s.out = new_val(n.output(0), {sd[0], sd[1], out_sp[0], out_sp[1]});
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // ArgMax over the channels as the graph's output: the class-id map a deployed segmentation
  // model ends in (PaddleSeg's export appends one by default). A bilinear Resize read only by
  // it folds in, so the full-resolution scores are never written (bilinear_resize.h).
  void argmax(const onnx::NodeProto& n) {
    Attrs a{n};
    const auto d = dims_of(n.input(0));
    const int64_t axis = a.i("axis", 0);
    if (n.output(0) != model_.graph().output(0).name())
      fail(n, "ArgMax runs only as the graph's (first) output, the class-id map");
    if (d.size() != 4 || (axis != 1 && axis != -3))
      fail(n, str_cat("runs over the channels of a rank-4 tensor (axis 1); this one has rank ",
                      d.size(), " and axis ", axis));
    if (a.i("select_last_index", 0) != 0) fail(n, "select_last_index=1 is not supported");
    Step s;
    s.kind = Step::kArgMax;
    s.op = n.op_type();
    s.name = node_name(n);
    if (Step* r = sole_producer(n.input(0), Step::kResample);
        r && r->algo == alg::resampling_linear && r->in.size() == 1) {
      s.resize_to = {d[2], d[3]};
      s.in = r->in;
      s.tags.push_back("of the bilinear resize " + r->name);
      r->removed = true;
    } else {
      s.in = {f32(n.input(0))};
    }
    std::vector<int64_t> od{d[0], d[2], d[3]};
    if (a.i("keepdims", 1)) od.insert(od.begin() + 1, 1);
    s.out = new_val(n.output(0), od, dt::s32);
    p_.vals[s.out].int64 = true;
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

  // MatMul (numpy semantics) of a runtime A by a runtime or constant B of rank >= 2: oneDNN
  // matmul on plain layouts, batch dimensions broadcast. A constant B of lower rank (the
  // weights of a linear layer) gets leading 1s; other rank mismatches run on ATen.
  void matmul(const onnx::NodeProto& n) {
    if (is_const(n.input(0))) return aten(n);
    const std::vector<int64_t> da = dims_of(n.input(0));
    const bool b_const = is_const(n.input(1));
    at::Tensor w = b_const ? cst(n.input(1)).to(at::kFloat).contiguous() : at::Tensor();
    std::vector<int64_t> db = b_const ? w.sizes().vec() : dims_of(n.input(1));
    if (da.size() < 2 || db.size() < 2 || da.size() > 5) return aten(n);
    if (b_const && db.size() < da.size()) {
      db.insert(db.begin(), da.size() - db.size(), 1);
      w = w.reshape(db);
    }
    if (db.size() != da.size()) return aten(n);
    const size_t r = da.size();
    if (da[r - 1] != db[r - 2]) fail(n, "inner dimensions differ");
    std::vector<int64_t> out(r);
    for (size_t i = 0; i + 2 < r; ++i) {
      if (da[i] != db[i] && da[i] != 1 && db[i] != 1) fail(n, "batch dimensions do not broadcast");
      // oneDNN broadcasts B's batch dimensions over A's, not A's over B's
      if (da[i] == 1 && db[i] != 1) return aten(n);
      out[i] = std::max(da[i], db[i]);
    }
    out[r - 2] = da[r - 2];
    out[r - 1] = db[r - 1];
    Step s;
    s.kind = Step::kMatmul;
    s.op = "MatMul";
    s.name = node_name(n);
    if (matmul_int8(n, da, db, s)) {
      s.out = new_val(n.output(0), out);
      add_step(std::move(s));
      rt_[n.output(0)].val = p_.ir.back().out;
      return;
    }
    s.in = {f32(n.input(0))};
    if (b_const) {
      s.w = w;
    } else {
      s.in.push_back(f32(n.input(1)));
    }
    s.tags.push_back("f32");
    s.out = new_val(n.output(0), out);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // QDQ MatMul: A a DQ of an int8 runtime value (zero point 0); B a DQ of a constant int8
  // weight (symmetric, per-tensor or per output column, the last axis) or of an s8 runtime
  // value. acc = sum_k qa * qb in int32; real = s_a * s_b[n] * acc, written in f32.
  bool matmul_int8(const onnx::NodeProto& n, const std::vector<int64_t>& da,
                   const std::vector<int64_t>& db, Step& s) {
    if (!int8_enabled("MatMul")) return false;
    const Ref ra = rt_.at(n.input(0));
    if (!(ra.val < 0 && ra.qval >= 0 && !ra.is_q && ra.zp == 0)) return false;
    const int64_t cols = db.back();
    std::vector<float> alpha(cols, ra.scale);  // s.alpha only once the matmul is int8
    if (auto qi = qinfo_.find(n.input(1)); qi != qinfo_.end()) {
      const QInfo& q = qi->second;
      const int64_t rank = q.q.dim();
      const bool sym =
          q.q.scalar_type() == at::kChar && (!q.zp.defined() || q.zp.abs().max().item<int>() == 0);
      const bool axis_ok = q.scale.numel() == 1 || q.axis == rank - 1 || q.axis == -1;
      if (!sym || !axis_ok) return false;
      const auto sw = to_floats(q.scale);
      for (int64_t c = 0; c < cols; ++c) alpha[c] *= sw[sw.size() == 1 ? 0 : c];
      s.w = q.q.reshape(db).contiguous();
      s.in = {ra.qval};
    } else {
      auto rb = rt_.find(n.input(1));
      if (rb == rt_.end()) return false;
      const Ref r = rb->second;
      if (!(r.val < 0 && r.qval >= 0 && !r.is_q && r.zp == 0) || p_.vals[r.qval].type != dt::s8)
        return false;
      for (auto& a : alpha) a *= r.scale;
      s.in = {ra.qval, r.qval};
    }
    s.alpha = std::move(alpha);
    s.int8 = true;
    s.tags.push_back(p_.vals[ra.qval].type == dt::u8 ? "int8 u8" : "int8 s8");
    return true;
  }

  // A Transpose of a runtime tensor: a layout reorder when lowered (lowering.cpp), with the
  // ATen kernel as its fallback.
  void transpose(const onnx::NodeProto& n) {
    const int64_t r = static_cast<int64_t>(dims_of(n.input(0)).size());
    Step s = aten_step(n);
    s.kind = Step::kTranspose;
    s.perm = ops::transpose_perm(ops::NodeContext(n, opset_, false), r);
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // Reductions with keepdims over constant axes (attribute, or ReduceSum's input from opset
  // 13): oneDNN reduction in the source's layout (UAFM's channel mean/max, pooled features).
  void reduce(const onnx::NodeProto& n) {
    Attrs a{n};
    const std::string& t = n.op_type();
    const auto& d = dims_of(n.input(0));
    const int64_t r = static_cast<int64_t>(d.size());
    std::vector<int64_t> axes = a.ints("axes");
    if (n.input_size() > 1 && !n.input(1).empty()) {
      if (!is_const(n.input(1))) return aten(n);
      axes = ops::to_int_vector(cst(n.input(1)));
    }
    if (a.i("keepdims", 1) == 0 || r > 5) return aten(n);
    if (axes.empty() && t == "ReduceSum" && a.i("noop_with_empty_axes", 0)) return aten(n);
    if (axes.empty())
      for (int64_t i = 0; i < r; ++i) axes.push_back(i);
    std::vector<int64_t> out = d;
    for (int64_t ax : axes) {
      if (ax < 0) ax += r;
      if (ax < 0 || ax >= r) fail(n, str_cat("axis ", ax, " is out of range for rank ", r));
      out[ax] = 1;
    }
    if (out == d) return aten(n);  // nothing to reduce (oneDNN refuses that)
    // Prepared as an aten step too: lowering falls back to it where oneDNN has only its
    // reference kernel (e.g. channel reductions of plain NCHW), which ATen beats.
    Step s = aten_step(n);
    s.kind = Step::kReduce;
    s.algo = t == "ReduceMean"  ? alg::reduction_mean
             : t == "ReduceMax" ? alg::reduction_max
                                : alg::reduction_sum;
    add_step(std::move(s));
    rt_[n.output(0)].val = p_.ir.back().out;
  }

  // The node writing `name` (nullptr for the graph input and constants).
  const onnx::NodeProto* onnx_producer(const std::string& name) const {
    for (const auto& c : model_.graph().node())
      for (const auto& o : c.output())
        if (o == name) return &c;
    return nullptr;
  }

  // Concat -> [Add of a residual] -> BatchNormalization, where nothing else reads the float
  // concatenation (ESPNet's blocks and its BR modules): one concat_affine step
  // (concat_affine.h) reads the pieces and the residual once and writes the normalized map;
  // the PRelu / ReLU after it (add_eltwise) and QuantizeLinear nodes of its output
  // (quantized_tail) join the same pass. The step takes the place of the Add (or the Concat),
  // where all its inputs are ready.
  bool concat_affine(const onnx::NodeProto& n, const std::vector<float>& a,
                     const std::vector<float>& c) {
    const std::string& x = n.input(0);
    const onnx::NodeProto* pn = onnx_producer(x);
    if (!pn) return false;
    std::string cat_name = x;
    Step* add = nullptr;
    if (pn->op_type() == "Add") {
      add = sole_producer(x, Step::kBinary);
      if (!add || add->algo != alg::binary_add || add->cst.defined() || add->in.size() != 2)
        return false;
      cat_name.clear();
      for (int k = 0; k < 2 && cat_name.empty(); ++k) {
        const onnx::NodeProto* q = onnx_producer(pn->input(k));
        if (q && q->op_type() == "Concat") cat_name = pn->input(k);
      }
      if (cat_name.empty()) return false;
    }
    Step* cat = sole_producer(cat_name, Step::kConcat);
    if (!cat || cat->axis != 1 || p_.vals[cat->out].dims.size() != 4) return false;
    const std::vector<int64_t> d = p_.vals[cat->out].dims;
    int residual = -1;
    if (add) {
      const int k = add->in[0] == cat->out ? 1 : 0;
      if (add->in[1 - k] != cat->out || p_.vals[add->in[k]].dims != d) return false;
      residual = add->in[k];
    }
    Step f = concat_affine_step(
        n, *cat, residual, a, c,
        {static_cast<int>(cat - p_.ir.data()), add ? static_cast<int>(add - p_.ir.data()) : -1});
    f.tags.push_back(add ? "+residual +bn" : "+bn");
    Step& host = add ? *add : *cat;
    if (add) cat->removed = true;
    host = std::move(f);
    producer_[host.out] = static_cast<int>(&host - p_.ir.data());
    rt_[n.output(0)].val = host.out;
    return true;
  }

  // Add(concatenation, residual) where the residual is int8 (the DQ of an int8 value) or the
  // concatenation is quantized (DQ(Q(Concat))), and only this Add reads the concatenation: a
  // QDQ model that quantizes its residual sums (configs/compress/espnet_camvid_qat_res.yml).
  // One concat_affine step (identity affine, into which the BatchNormalization and the PRelu
  // after it fold) quantizes the concatenation in its pass where the model does
  // (Step::concat_q_scale) and adds the residual, read as int8 where it is: no float
  // concatenation, no float residual. (Both float: concat_affine at the BatchNormalization.)
  bool concat_add(const onnx::NodeProto& n) {
    if (!int8_enabled("Add")) return false;
    for (int k = 0; k < 2; ++k) {
      // the concatenation, directly or through Q -> DQ (each read only by the next)
      std::string cat_name = n.input(k);
      const onnx::NodeProto* dq = onnx_producer(cat_name);
      const onnx::NodeProto* q = nullptr;
      if (!single_use(cat_name) || !dq) continue;
      if (dq->op_type() == "DequantizeLinear") {
        q = onnx_producer(dq->input(0));
        if (!q || q->op_type() != "QuantizeLinear" || !single_use(dq->input(0))) continue;
        cat_name = q->input(0);
      }
      const onnx::NodeProto* cat_node = onnx_producer(cat_name);
      if (!cat_node || cat_node->op_type() != "Concat" || !single_use(cat_name)) continue;
      const Step* cat_step = sole_producer(cat_name, Step::kConcat);
      if (!cat_step || cat_step->axis != 1) continue;
      // indices: f32() below may add a step and move p_.ir
      const int ci = static_cast<int>(cat_step - p_.ir.data());
      int qi = -1;
      if (q) {
        const Ref r = rt_[n.input(k)];
        if (r.val >= 0 || r.qval < 0 || r.zp != 0 || producer_[r.qval] < 0) continue;
        qi = producer_[r.qval];
        const Step& q_step = p_.ir[qi];
        if (q_step.kind != Step::kQuant || q_step.out != r.qval || q_step.in[0] != cat_step->out ||
            q_step.zp != 0 || q_step.scale != r.scale)
          continue;
      }
      const std::vector<int64_t> d = p_.vals[cat_step->out].dims;
      auto ot = rt_.find(n.input(1 - k));
      if (d.size() != 4 || ot == rt_.end() || dims_of(n.input(1 - k)) != d) continue;
      // the residual: its int8 value when it is a DQ at that value's scale, else float
      const Ref o = ot->second;
      const bool int8_residual =
          o.val < 0 && o.qval >= 0 && !o.is_q && o.zp == 0 && p_.vals[o.qval].scale == o.scale;
      if (!q && !int8_residual) continue;
      const int residual = int8_residual ? o.qval : f32(n.input(1 - k));
      Step& cat = p_.ir[ci];
      const auto C = static_cast<size_t>(d[1]);
      Step f = concat_affine_step(n, cat, residual, std::vector<float>(C, 1.f),
                                  std::vector<float>(C, 0.f), {ci});
      if (q) {
        Step& quant = p_.ir[qi];
        f.concat_q_scale = quant.scale;
        f.concat_q_type = p_.vals[quant.out].type;
        f.tags.push_back(f.concat_q_type == dt::u8 ? "->u8" : "->s8");
        quant.removed = true;
      }
      f.tags.push_back(int8_residual ? "+int8 residual" : "+residual");
      cat.removed = true;
      add_step(std::move(f));
      rt_[n.output(0)].val = p_.ir.back().out;
      return true;
    }
    return false;
  }

  // A concat_affine step over concatenation `cat`'s pieces with `residual` (or -1), named
  // after node n and writing its output. Pieces and residual that a DequantizeLinear step makes
  // from int8 values are read as int8 (int8_source; `replaced`: the steps this one takes the
  // place of, which read them too).
  Step concat_affine_step(const onnx::NodeProto& n, const Step& cat, int residual,
                          std::vector<float> a, std::vector<float> c,
                          const std::set<int>& replaced) {
    Step f;
    f.kind = Step::kConcatAffine;
    f.op = "ConcatAffine";
    f.name = node_name(n);
    f.in = cat.in;
    for (int& v : f.in) v = int8_source(v, replaced);
    f.residual = residual >= 0 ? int8_source(residual, replaced) : -1;
    f.affine_a = std::move(a);
    f.affine_c = std::move(c);
    f.tags = {str_cat("concat of ", cat.in.size())};
    f.out = new_val(n.output(0), p_.vals[cat.out].dims);
    return f;
  }

  // The int8 value that float value v dequantizes, where v comes from a DequantizeLinear step
  // (zero point 0, the int8 value's own scale) that no step but those in `readers` reads: that
  // step is removed and v's name forgets it (a later reader dequantizes anew). Else v.
  int int8_source(int v, const std::set<int>& readers) {
    const int di = producer_[v];
    if (di < 0) return v;
    const Step& dq = p_.ir[di];
    if (dq.removed || dq.kind != Step::kDequant || dq.out != v || dq.zp != 0 ||
        p_.vals[dq.in[0]].scale != dq.scale || v == p_.output_val)
      return v;
    for (size_t k = 0; k < p_.ir.size(); ++k) {
      const Step& t = p_.ir[k];
      if (!t.removed && !readers.count(static_cast<int>(k)) && step_reads(t, v)) return v;
    }
    auto it = rt_.find(p_.vals[v].name);
    if (it != rt_.end() && it->second.val == v) it->second.val = -1;
    p_.ir[di].removed = true;
    return p_.ir[di].in[0];
  }

  // The quantized output (zero point 0, `type` at `scale`) of the concat_affine step writing
  // float value v, added to that step (it writes Q(v) in the same pass), or -1 when v comes
  // from elsewhere.
  int quantized_tail(int v, float scale, dt type, const std::string& name) {
    const int pi = producer_[v];
    if (pi < 0 || p_.ir[pi].kind != Step::kConcatAffine || p_.ir[pi].out != v) return -1;
    for (int q : p_.ir[pi].qouts)
      if (p_.vals[q].type == type && p_.vals[q].scale == scale) return q;
    const int q = new_val(name, p_.vals[v].dims, type);
    Step& s = p_.ir[pi];
    p_.vals[q].scale = scale;
    p_.vals[q].nonneg = !s.slope.empty() && std::all_of(s.slope.begin(), s.slope.end(),
                                                        [](float k) { return k == 0.f; });
    s.qouts.push_back(q);
    producer_[q] = pi;
    s.tags.push_back(type == dt::u8 ? "->u8" : "->s8");
    return q;
  }

  // The only node reading `name` (nullptr when it has several readers or is a graph output).
  const onnx::NodeProto* sole_consumer(const std::string& name) const {
    if (!single_use(name)) return nullptr;
    for (const auto& c : model_.graph().node())
      for (const auto& i : c.input())
        if (i == name) return &c;
    return nullptr;
  }

  // Reshape [N,C,H,W] -> [N,C,H,k,W/k], then ReduceMean over the last axis without keepdims:
  // the means of k groups of W/k columns, i.e. AveragePool with kernel and stride (1, W/k).
  // That is how adaptive average pooling exports without fixed input sizes (PP-LiteSeg's
  // SPPM, tools/zoo): one pooling step instead of a copy of the whole map and an ATen mean.
  bool grouped_row_mean(const onnx::NodeProto& n) {
    if (is_const(n.input(0)) || !is_const(n.input(1)) || Attrs{n}.i("allowzero", 0) != 0)
      return false;
    const onnx::NodeProto* m = sole_consumer(n.output(0));
    if (!m || m->op_type() != "ReduceMean" || Attrs{*m}.i("keepdims", 1) != 0) return false;
    std::vector<int64_t> axes = Attrs{*m}.ints("axes");
    if (m->input_size() > 1 && !m->input(1).empty()) {
      if (!is_const(m->input(1))) return false;
      axes = ops::to_int_vector(cst(m->input(1)));
    }
    if (axes != std::vector<int64_t>{-1} && axes != std::vector<int64_t>{4}) return false;
    const std::vector<int64_t> d = dims_of(n.input(0));
    std::vector<int64_t> shape = ops::to_int_vector(cst(n.input(1)));
    if (d.size() != 4 || shape.size() != 5 || d[3] <= 0) return false;
    for (size_t i = 0; i < 3; ++i)
      if (shape[i] == 0) shape[i] = d[i];
    const int64_t k = shape[3];
    if (k <= 0 || d[3] % k != 0) return false;
    if (shape[4] == -1) shape[4] = d[3] / k;
    if (shape != std::vector<int64_t>{d[0], d[1], d[2], k, d[3] / k}) return false;
    Step s;
    s.kind = Step::kPool;
    s.op = "AveragePool";
    s.name = node_name(n) + "+" + node_name(*m);
    s.kernel = {1, d[3] / k};
    s.strides = s.kernel;
    s.pl = {0, 0};
    s.pr = {0, 0};
    s.algo = alg::pooling_avg_exclude_padding;
    s.tags.push_back("grouped row mean");
    s.in = {f32(n.input(0))};
    s.out = new_val(m->output(0), {d[0], d[1], d[2], k});
    add_step(std::move(s));
    rt_[m->output(0)].val = p_.ir.back().out;
    fused_.insert(m);
    return true;
  }

  // Softmax along one axis (opset 13's semantics; before 13, the same only for the last axis).
  void softmax(const onnx::NodeProto& n) {
    const auto& d = dims_of(n.input(0));
    const int64_t r = static_cast<int64_t>(d.size());
    int64_t axis = Attrs{n}.i("axis", opset_ >= 13 ? -1 : 1);
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r || r > 5 || (opset_ < 13 && axis != r - 1)) return aten(n);
    Step s;
    s.kind = Step::kSoftmax;
    s.op = "Softmax";
    s.name = node_name(n);
    s.axis = axis;
    s.in = {f32(n.input(0))};
    s.out = new_val(n.output(0), d);
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
    const int idx = add_step(aten_step(n));
    rt_[n.output(0)].val = p_.ir[idx].out;
    for (size_t k = 0; k < p_.ir[idx].more_out.size(); ++k)
      if (p_.ir[idx].more_out[k] >= 0) {
        producer_[p_.ir[idx].more_out[k]] = idx;
        rt_[n.output(static_cast<int>(k) + 1)].val = p_.ir[idx].more_out[k];
      }
  }

  // The aten step of node `n` (not added): its runtime inputs as f32, constants kept, output
  // shapes from one run of the kernel on zeros.
  Step aten_step(const onnx::NodeProto& n) {
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
    for (const auto& t : out)
      if (t.defined() && t.scalar_type() != at::kFloat) fail(n, "runs only with float outputs");
    s.out = new_val(n.output(0), out.at(0).sizes().vec());
    for (int k = 1; k < n.output_size() && k < static_cast<int>(out.size()); ++k)
      s.more_out.push_back(n.output(k).empty() ? -1 : new_val(n.output(k), out[k].sizes().vec()));
    return s;
  }

  const onnx::ModelProto& model_;
  const EngineOptions& opt_;
  int64_t opset_;
  Plan& p_;
  std::unordered_map<std::string, at::Tensor> consts_;
  std::unordered_map<std::string, QInfo> qinfo_;
  std::unordered_map<std::string, int> consumers_;
  std::set<std::string> outputs_;
  std::set<const onnx::NodeProto*> fused_;  // nodes an earlier node's step computes
  std::unordered_map<std::string, Ref> rt_;
  std::vector<int> producer_;
  std::unordered_map<std::string, std::pair<std::string, std::vector<int64_t>>> pad_of_;
};

}  // namespace

void build_ir(const onnx::ModelProto& model, const EngineOptions& opt, int64_t opset,
              const std::string& input, const std::vector<int64_t>& dims, Plan& p) {
  Builder(model, opt, opset, p).build(input, dims);
}

}  // namespace segslim::engine

#include "ops/registry.h"

#include <algorithm>
#include <set>

#include "common/error.h"
#include "common/strings.h"
#include "graph/tensor_proto.h"

namespace segslim::ops {

std::string NodeContext::name() const {
  if (!node_.name().empty()) return node_.name();
  return node_.output_size() ? "<" + node_.op_type() + " producing " + node_.output(0) + ">"
                             : "<unnamed " + node_.op_type() + ">";
}

void NodeContext::fail(const std::string& message) const {
  throw Error(str_cat(op_type(), " node '", name(), "': ", message));
}

const onnx::AttributeProto* NodeContext::find(const std::string& name) const {
  for (const auto& a : node_.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

int64_t NodeContext::attr_int(const std::string& name, int64_t fallback) const {
  const auto* a = find(name);
  return a ? a->i() : fallback;
}

int64_t NodeContext::attr_int(const std::string& name) const {
  const auto* a = find(name);
  if (!a) fail("required attribute '" + name + "' is missing");
  return a->i();
}

float NodeContext::attr_float(const std::string& name, float fallback) const {
  const auto* a = find(name);
  return a ? a->f() : fallback;
}

std::string NodeContext::attr_string(const std::string& name, const std::string& fallback) const {
  const auto* a = find(name);
  return a ? a->s() : fallback;
}

std::vector<int64_t> NodeContext::attr_ints(const std::string& name,
                                            const std::vector<int64_t>& fallback) const {
  const auto* a = find(name);
  if (!a) return fallback;
  return {a->ints().begin(), a->ints().end()};
}

std::vector<float> NodeContext::attr_floats(const std::string& name,
                                            const std::vector<float>& fallback) const {
  const auto* a = find(name);
  if (!a) return fallback;
  return {a->floats().begin(), a->floats().end()};
}

at::Tensor NodeContext::attr_tensor(const std::string& name) const {
  const auto* a = find(name);
  if (!a || !a->has_t()) fail("required tensor attribute '" + name + "' is missing");
  return tensor_from_proto(a->t());
}

const Registry& Registry::instance() {
  static const Registry registry = [] {
    Registry r;
    register_conv_ops(r);
    register_normalization_ops(r);
    register_activation_ops(r);
    register_elementwise_ops(r);
    register_tensor_ops(r);
    register_resize_ops(r);
    register_pool_ops(r);
    register_reduce_ops(r);
    register_matmul_ops(r);
    register_quantize_ops(r);
    return r;
  }();
  return registry;
}

void Registry::add(const std::string& op_type, OpInfo info) {
  SEGSLIM_CHECK(!ops_.count(op_type), "op ", op_type, " registered twice");
  ops_[op_type] = std::move(info);
}

const OpInfo* Registry::find(const std::string& op_type) const {
  auto it = ops_.find(op_type);
  return it == ops_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::op_types() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : ops_) out.push_back(k);
  return out;
}

void check_supported(const onnx::GraphProto& graph, const std::string& origin) {
  const auto& registry = Registry::instance();
  std::map<std::string, std::string> unsupported;  // op type -> first node name
  for (const auto& node : graph.node()) {
    const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    const std::string type =
        default_domain ? node.op_type() : node.domain() + "::" + node.op_type();
    if (default_domain && registry.find(node.op_type())) continue;
    if (!unsupported.count(type))
      unsupported[type] =
          node.name().empty() ? "(unnamed, output " + node.output(0) + ")" : node.name();
  }
  if (unsupported.empty()) return;
  std::string msg =
      origin + ": " + std::to_string(unsupported.size()) + " unsupported op type(s): ";
  bool first = true;
  for (const auto& [type, node] : unsupported) {
    msg += (first ? "" : ", ") + type + " (node " + node + ")";
    first = false;
  }
  msg += ". Supported: " + join(registry.op_types());
  throw Error(msg);
}

int64_t normalize_axis(const NodeContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1))
    ctx.fail(str_cat("axis ", axis, " is out of range for a rank-", rank, " tensor"));
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> to_int_vector(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).to(at::kLong).contiguous().reshape({-1});
  const int64_t* p = c.data_ptr<int64_t>();
  return {p, p + c.numel()};
}

std::vector<int64_t> normalize_axes(const NodeContext& ctx, std::vector<int64_t> axes,
                                    int64_t rank) {
  for (auto& a : axes) a = normalize_axis(ctx, a, rank);
  std::vector<int64_t> sorted = axes;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    ctx.fail("axes contain a repeated axis");
  return axes;
}

std::vector<int64_t> transpose_perm(const NodeContext& ctx, int64_t rank) {
  const std::vector<int64_t> given = ctx.attr_ints("perm");
  std::vector<int64_t> perm = given;
  if (perm.empty())
    for (int64_t d = rank - 1; d >= 0; --d) perm.push_back(d);
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(rank, 0)), false);
  bool ok = static_cast<int64_t>(perm.size()) == rank;
  for (auto& p : perm) {
    if (p < 0) p += rank;
    ok = ok && p >= 0 && p < rank && !seen[p];
    if (ok) seen[p] = true;
  }
  if (!ok)
    ctx.fail(str_cat("perm ", at::IntArrayRef(given), " must be a permutation of 0..", rank - 1,
                     " for an input of rank ", rank));
  return perm;
}

std::vector<int64_t> spatial_attr(const NodeContext& ctx, const std::string& name, size_t n,
                                  int64_t fallback) {
  auto v = ctx.attr_ints(name, std::vector<int64_t>(n, fallback));
  if (v.size() != n)
    ctx.fail(str_cat("attribute '", name, "' has ", v.size(), " values, expected ", n));
  return v;
}

Tensors on_common_device(const Tensors& in) {
  c10::optional<at::Device> device;
  for (const auto& t : in)
    if (t.defined() && !t.device().is_cpu()) {
      device = t.device();
      break;
    }
  if (!device) return in;
  Tensors out;
  for (const auto& t : in) out.push_back(t.defined() ? t.to(*device) : t);
  return out;
}

}  // namespace segslim::ops

// ESPNet's blocks for dilated_branches.h: a concat_affine step whose pieces all come from int8
// 3x3 convolutions of one int8 value (stride 1, padding = dilation, one group), each conv
// either alone or adding the previous piece (the hierarchical sums, a sum post-op), their
// outputs read by nothing else. The convolutions join the step (Step::branches) and are
// removed: the lowering runs them in the step's pass, with no float piece maps.
#include <set>
#include <unordered_map>

#include "engine/plan.h"

namespace segslim::engine {
namespace {

// The value a conv's single sum post-op adds, or -1.
int added(const Step& c) {
  return c.post.size() == 1 && c.post[0].kind == PostOp::kAdd ? c.post[0].val : -1;
}

// Whether c is such a convolution of value src (any int8 value when src < 0). Branches wider
// than 64 channels are left to oneDNN, whose lanes they fill anyway.
bool is_branch(const Plan& p, const Step& c, int src) {
  if (c.kind != Step::kConv || c.deconv || !c.int8 || c.groups != 1 || c.w.dim() != 4 ||
      c.w.scalar_type() != at::kChar || c.w.size(2) != 3 || c.w.size(3) != 3 || c.w.size(0) > 64 ||
      (src >= 0 && c.in[0] != src))
    return false;
  const int64_t d = c.dil.empty() ? 0 : c.dil[0];
  const std::vector<int64_t> dd{d, d};
  const Val& x = p.vals[c.in[0]];
  const Val& y = p.vals[c.out];
  return c.strides == std::vector<int64_t>{1, 1} && c.dil == dd && c.pl == dd && c.pr == dd &&
         (x.type == dt::s8 || x.type == dt::u8) && x.zp == 0 && x.dims.size() == 4 &&
         y.type == dt::f32 && y.dims.size() == 4 && y.dims[2] == x.dims[2] &&
         y.dims[3] == x.dims[3];
}

}  // namespace

void fuse_dilated_branches(Plan& p) {
  std::unordered_map<int, int> producer, readers;
  for (size_t i = 0; i < p.ir.size(); ++i) {
    const Step& t = p.ir[i];
    if (t.removed) continue;
    producer[t.out] = static_cast<int>(i);
    // each value once per step (a conv's sum operand is also one of its inputs)
    std::set<int> read(t.in.begin(), t.in.end());
    if (t.residual >= 0) read.insert(t.residual);
    for (const auto& po : t.post)
      if (po.kind == PostOp::kAdd) read.insert(po.val);
    for (int v : read) ++readers[v];
  }
  // the conv making piece k of s, or nullptr
  auto maker = [&](const Step& s, size_t k) -> const Step* {
    if (k >= s.in.size()) return nullptr;
    const auto it = producer.find(s.in[k]);
    return it == producer.end() ? nullptr : &p.ir[static_cast<size_t>(it->second)];
  };
  for (Step& s : p.ir) {
    if (s.removed || s.kind != Step::kConcatAffine) continue;
    std::vector<int> convs;
    int src = -1;
    for (size_t k = 0; k < s.in.size(); ++k) {
      const int v = s.in[k];
      const Step* c = maker(s, k);
      if (!c || v == p.output_val || !is_branch(p, *c, src)) break;
      if (!c->post.empty() && (k == 0 || added(*c) != s.in[k - 1])) break;
      // read by this step, and by the next branch when it adds this piece
      const Step* next = maker(s, k + 1);
      if (readers[v] != 1 + (next && added(*next) == v ? 1 : 0)) break;
      src = c->in[0];
      convs.push_back(producer[v]);
    }
    if (convs.size() != s.in.size()) continue;
    s.branches = convs;
    for (int c : convs) p.ir[static_cast<size_t>(c)].removed = true;
  }
}

}  // namespace segslim::engine

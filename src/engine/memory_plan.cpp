// Phase C of the engine's compilation (plan.h): one arena for all activations; a value's
// buffer is reused by later values once its last reader has run.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>

#include "engine/plan.h"

namespace segslim::engine {

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
      if (first[v] != i || p.vals[v].external || (p.output_direct && v == p.output_val)) continue;
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
  // The arena in 2 MB pages where the kernel allows it (transparent huge pages on madvise,
  // Debian's default): physically contiguous, so which activations collide in the L2 cache
  // no longer depends on where the kernel happened to place each 4 KB page. With 4 KB pages
  // the same binary ran some processes a third slower than others (PP-MobileSeg-Base INT8:
  // 21.6 vs 34.1 ms, `segslim bench` run six times).
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = (total + align + kHuge - 1) / kHuge * kHuge;
  auto* base = static_cast<uint8_t*>(std::aligned_alloc(kHuge, bytes));
  SEGSLIM_CHECK(base, "engine: cannot allocate ", bytes, " bytes of activations");
  madvise(base, bytes, MADV_HUGEPAGE);  // advice only: without it, 4 KB pages
  p.arena = std::shared_ptr<uint8_t>(base, [](uint8_t* q) { std::free(q); });
  p.mems.assign(nv, memory());
  for (int v = 0; v < nv; ++v) {
    if (!p.vals[v].has_md) continue;
    if (p.vals[v].external) {
      p.mems[v] = memory(p.vals[v].md, eng, nullptr);
      p.in_mem = p.mems[v];
    } else if (p.output_direct && v == p.output_val) {
      p.mems[v] = memory(p.vals[v].md, eng, nullptr);
      p.out_mem = p.mems[v];
    } else {
      p.mems[v] = memory(p.vals[v].md, eng, p.arena.get() + off[v]);
    }
  }
  for (auto& e : p.execs)
    for (const auto& [arg, v] : e.val_args) {
      auto re = e.arg_md.find(arg);
      e.args[arg] =
          re == e.arg_md.end() ? p.mems[v] : memory(re->second, eng, p.mems[v].get_data_handle());
    }
}

}  // namespace segslim::engine

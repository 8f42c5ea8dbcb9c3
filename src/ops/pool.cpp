#include "ops/registry.h"

namespace segslim::ops {

void register_pool_ops(Registry& r) { (void)r; }

}  // namespace segslim::ops

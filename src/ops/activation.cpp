#include "ops/registry.h"

namespace segslim::ops {

void register_activation_ops(Registry& r) { (void)r; }

}  // namespace segslim::ops

#pragma once
// How a command (`segslim compress`, `segslim train`) runs data-parallel. One entry point
// decides the role of this process from its options and environment:
//   - a worker of a job (RANK and WORLD_SIZE set, by torchrun or by the launcher below): joins
//     the job and runs `body` with its Group;
//   - no job and nproc * nnodes == 1: runs `body` alone (a single-process Group);
//   - otherwise: the launcher of this machine's nproc workers (dist/launcher.h), which run the
//     same command line again as workers.
// A worker's own error is recorded for the others (they name it) and rethrown prefixed with
// the rank; a PeerFailure (another rank's) is rethrown prefixed with the rank that saw it.
// After `body`, the job ends with Group::finish(): everyone leaves once rank 0 is done.
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "dist/group.h"
#include "dist/launcher.h"

namespace segslim::dist {

void run_data_parallel(const LaunchOptions& options, const std::vector<std::string>& argv,
                       at::Device device, const std::function<void(Group&)>& body);

}  // namespace segslim::dist

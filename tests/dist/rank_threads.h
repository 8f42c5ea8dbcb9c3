#pragma once
// Runs the ranks of a small job as threads of the test process, each with its own Group (its
// own c10d process group and store connections), against a store served by the test (as the
// launcher serves it).
#include <functional>
#include <string>
#include <vector>

#include "dist/group.h"

namespace segslim::testing {

// Runs body(rank, group) on `world` threads and returns each rank's exception message ("" when
// it returned normally). The groups are destroyed without Group::finish() unless the body
// calls it. Their monitors never end the process unless `end_process_on_peer_failure`
// (death tests).
std::vector<std::string> run_ranks(int world, double timeout_s,
                                   const std::function<void(int rank, dist::Group&)>& body,
                                   bool end_process_on_peer_failure = false);

// A TCP port nobody listens on right now.
int free_port();

}  // namespace segslim::testing

#pragma once
// The local launcher (torchrun's role): starts this machine's worker processes of a job, each
// running this program again with the job described in its environment (dist/env.h), and
// watches them.
#include <string>
#include <vector>

namespace segslim::dist {

struct LaunchOptions {
  int nproc = 1;            // --nproc: worker processes on this machine
  int nnodes = 1;           // --nnodes: machines in the job
  int node_rank = 0;        // --node-rank: this machine's index in [0, nnodes)
  std::string master_addr;  // --master-addr: machine 0 (default MASTER_ADDR, else 127.0.0.1)
  int master_port = -1;     // --master-port (default MASTER_PORT, else 29500 with several
                            // machines and any free port on one)
  double timeout_s = 300;   // --dist-timeout: see GroupOptions::timeout
};

// Throws segslim::Error for values a user got wrong, naming the flag and the value.
void check_launch_options(const LaunchOptions& options);

// Starts options.nproc workers running `argv` (argv[0] is replaced by this executable) as
// ranks node_rank * nproc + i of nnodes * nproc, serves the job's store when this is machine 0
// (workers connect to it, as torchrun's agent store), and waits for them. Returns when every
// worker exited with 0. When one fails (non-zero exit, signal), its failure is recorded in the
// store unless it recorded one itself, so that the others name it; they are given time to stop
// by themselves, then killed; and a segslim::Error says what the first failure was.
void launch_workers(const LaunchOptions& options, const std::vector<std::string>& argv);

}  // namespace segslim::dist

#pragma once
// The job a worker process belongs to, read from the environment as torchrun (and
// `segslim ... --nproc N`, dist/launcher.h) sets it:
//   RANK, WORLD_SIZE              this process's rank in [0, WORLD_SIZE) and the job's size
//   LOCAL_RANK, LOCAL_WORLD_SIZE  its rank among the job's processes on this machine (it picks
//                                 the GPU) and their number (it divides the cores); 0 and 1
//                                 when unset
//   MASTER_ADDR, MASTER_PORT      where the rendezvous store (a c10d::TCPStore) listens
//   TORCHELASTIC_USE_AGENT_STORE  "True": a launcher (torchrun's agent or segslim's) hosts the
//                                 store, and TORCHELASTIC_RESTART_COUNT scopes the keys to the
//                                 attempt; otherwise rank 0 hosts it (torch's env:// rule)
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace segslim::dist {

struct JobEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr;
  int master_port = 0;
  bool launcher_hosts_store = false;
  int restart_count = 0;
};

// getenv-like: the value of a variable, or nullptr when it is unset.
using EnvLookup = std::function<const char*(const char*)>;
const char* process_env(const char* name);

// std::nullopt when neither RANK nor WORLD_SIZE is set (this process is no worker of a job).
// A malformed or inconsistent value throws segslim::Error naming the variable and the value.
std::optional<JobEnv> job_from_environment(const EnvLookup& lookup = process_env);

// The environment variables that describe `job` to a worker (what job_from_environment reads).
std::vector<std::pair<std::string, std::string>> job_variables(const JobEnv& job);

}  // namespace segslim::dist

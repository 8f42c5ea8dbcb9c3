#include "dist/env.h"

#include <cstdlib>
#include <limits>

#include "common/error.h"

namespace segslim::dist {

namespace {

// A non-negative integer no larger than `max`, or an error naming the variable and its value.
int parse_int(const char* name, const char* text, int max) {
  const std::string s = text;
  bool digits = !s.empty() && s.size() <= 9;
  for (char c : s) digits = digits && c >= '0' && c <= '9';
  SEGSLIM_CHECK(digits, "environment variable ", name, "='", s, "' is not a non-negative integer");
  const int v = std::stoi(s);
  SEGSLIM_CHECK(v <= max, "environment variable ", name, "=", v, " is larger than ", max);
  return v;
}

}  // namespace

const char* process_env(const char* name) { return std::getenv(name); }

std::optional<JobEnv> job_from_environment(const EnvLookup& lookup) {
  const char* rank = lookup("RANK");
  const char* world = lookup("WORLD_SIZE");
  if (!rank && !world) return std::nullopt;
  SEGSLIM_CHECK(rank && world, "environment variable ", rank ? "RANK" : "WORLD_SIZE", "=",
                rank ? rank : world, " is set but ", rank ? "WORLD_SIZE" : "RANK",
                " is not: a worker of a distributed job needs both");
  constexpr int kMax = std::numeric_limits<int>::max();
  JobEnv job;
  job.world_size = parse_int("WORLD_SIZE", world, kMax);
  SEGSLIM_CHECK(job.world_size >= 1, "environment variable WORLD_SIZE=0: a job has at least one ",
                "process");
  job.rank = parse_int("RANK", rank, kMax);
  SEGSLIM_CHECK(job.rank < job.world_size, "environment variable RANK=", job.rank,
                " is not below WORLD_SIZE=", job.world_size, " (ranks are 0 to ",
                job.world_size - 1, ")");
  if (const char* v = lookup("LOCAL_WORLD_SIZE")) {
    job.local_world_size = parse_int("LOCAL_WORLD_SIZE", v, job.world_size);
    SEGSLIM_CHECK(job.local_world_size >= 1, "environment variable LOCAL_WORLD_SIZE=0: at least ",
                  "this process runs on this machine");
  }
  if (const char* v = lookup("LOCAL_RANK")) {
    job.local_rank = parse_int("LOCAL_RANK", v, kMax);
    SEGSLIM_CHECK(!lookup("LOCAL_WORLD_SIZE") || job.local_rank < job.local_world_size,
                  "environment variable LOCAL_RANK=", job.local_rank,
                  " is not below LOCAL_WORLD_SIZE=", job.local_world_size);
  }
  if (const char* v = lookup("TORCHELASTIC_USE_AGENT_STORE"))
    job.launcher_hosts_store = std::string(v) == "True";
  if (const char* v = lookup("TORCHELASTIC_RESTART_COUNT"))
    job.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", v, kMax);
  if (job.world_size == 1 && !job.launcher_hosts_store) return job;  // nothing to meet

  const char* addr = lookup("MASTER_ADDR");
  const char* port = lookup("MASTER_PORT");
  SEGSLIM_CHECK(addr && *addr,
                "environment variable MASTER_ADDR is not set: with WORLD_SIZE=", job.world_size,
                " every process needs the address of rank 0's machine");
  SEGSLIM_CHECK(port && *port,
                "environment variable MASTER_PORT is not set: with WORLD_SIZE=", job.world_size,
                " every process needs the port of the rendezvous store");
  job.master_addr = addr;
  job.master_port = parse_int("MASTER_PORT", port, 65535);
  SEGSLIM_CHECK(job.master_port >= 1, "environment variable MASTER_PORT=0 is no port (1-65535)");
  return job;
}

std::vector<std::pair<std::string, std::string>> job_variables(const JobEnv& job) {
  std::vector<std::pair<std::string, std::string>> v = {
      {"RANK", std::to_string(job.rank)},
      {"WORLD_SIZE", std::to_string(job.world_size)},
      {"LOCAL_RANK", std::to_string(job.local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(job.local_world_size)},
      {"MASTER_ADDR", job.master_addr},
      {"MASTER_PORT", std::to_string(job.master_port)}};
  if (job.launcher_hosts_store) {
    v.emplace_back("TORCHELASTIC_USE_AGENT_STORE", "True");
    v.emplace_back("TORCHELASTIC_RESTART_COUNT", std::to_string(job.restart_count));
  }
  return v;
}

}  // namespace segslim::dist

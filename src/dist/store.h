#pragma once
// The rendezvous store of a job: a c10d::TCPStore that the ranks use to find each other (c10d's
// process groups exchange their addresses through it) and that dist/health.h uses for
// heartbeats and failure records.
#include <chrono>
#include <string>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "dist/env.h"

namespace segslim::dist {

// This worker's connection to the job's store, as torch.distributed's env:// init makes it:
// with a launcher (job.launcher_hosts_store), a client of the launcher's server with the keys
// scoped to the attempt ("/worker/attempt_<n>/"); otherwise rank 0 hosts the server (when
// `may_host`) and everyone else connects to MASTER_ADDR:MASTER_PORT. Connecting retries for
// `timeout` (rank 0 may start last). Errors name the address and port.
c10::intrusive_ptr<c10d::Store> connect_job_store(const JobEnv& job,
                                                  std::chrono::milliseconds timeout, bool may_host);

// A store server for a launcher on `port` (0: any free port; TCPStore::getPort() says which).
// A port in use is a segslim::Error naming it and `port_origin` (the flag or variable it came
// from).
c10::intrusive_ptr<c10d::TCPStore> host_store(int port, std::chrono::milliseconds timeout,
                                              const std::string& port_origin);

// The launcher's view of one attempt's keys (what connect_job_store gives its workers).
c10::intrusive_ptr<c10d::Store> attempt_store(const c10::intrusive_ptr<c10d::Store>& store,
                                              int restart_count);

}  // namespace segslim::dist

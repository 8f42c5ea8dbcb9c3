#pragma once
// The processes of a data-parallel job, as the training code sees them: this process's rank,
// and the few collective operations training needs, on LibTorch's c10d (ProcessGroupGloo on
// the CPU, ProcessGroupNCCL for CUDA devices when LibTorch was built with NCCL).
//
// Every rank must call the same collectives in the same order. A default-constructed Group is
// a single process (rank 0 of 1) whose collectives return their input, so training code runs
// the same with and without data parallelism.
//
// Failures: a collective that fails or times out, and a barrier at which another rank does not
// arrive, throw PeerFailure naming the rank that died, hung or failed (dist/health.h). Work
// that only rank 0 does (evaluation, writing outputs) is followed by barrier(), which waits as
// long as rank 0 is alive and making progress rather than a fixed time.
#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "dist/env.h"

namespace c10d {
class ProcessGroup;
}

namespace segslim::dist {

// Another rank failed, died or hung: this rank stops (and does not report a failure of its own).
class PeerFailure : public Error {
 public:
  using Error::Error;
};

struct GroupOptions {
  // Collectives and the rendezvous wait at most this long for the other ranks; a rank that makes
  // no progress for this long while the others wait for it counts as hung.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Where this rank computes: collectives run on it (kCPU: Gloo; kCUDA: NCCL).
  at::Device device = at::kCPU;
  // A known failure of another rank that this process does not act on within a few
  // heartbeats (busy in rank-0 work, blocked in a collective) ends the process from the
  // monitor thread. Off only where the ranks are threads of one process (tests).
  bool end_process_on_peer_failure = true;
};

class Group {
 public:
  // A single process.
  Group();
  // Joins the job (rendezvous through its store, then the c10d process group). Blocks until
  // every rank has joined or options.timeout passes (an Error naming the missing ranks).
  Group(const JobEnv& job, const GroupOptions& options);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const;
  int world_size() const;
  int local_rank() const;
  int local_world_size() const;
  bool is_root() const { return rank() == 0; }
  at::Device device() const;
  std::chrono::milliseconds timeout() const;

  // Element-wise sum / maximum over the ranks (small host vectors: losses, statistics).
  std::vector<double> all_reduce_sum(std::vector<double> values);
  std::vector<double> all_reduce_max(std::vector<double> values);
  // In place: each tensor becomes the mean over the ranks (floating tensors, on device()).
  void average_(const std::vector<at::Tensor>& tensors);
  // In place: every rank gets `root`'s values (tensors on device(); any dtype).
  void broadcast_(const std::vector<at::Tensor>& tensors, int root = 0);
  // `root`'s bytes on every rank (the argument is ignored elsewhere).
  std::string broadcast_bytes(const std::string& bytes, int root = 0);
  // Waits until every rank has arrived, for as long as the missing ones are alive and moving.
  void barrier();

  // Runs `body`, which communicates through process_group() (e.g. a backward pass whose
  // gradient hooks all-reduce), as one synchronisation point: its failure is explained like
  // a collective's. `what` names it in messages.
  void collective(const std::string& what, const std::function<void()>& body);
  // Throws PeerFailure now if another rank is known to have failed.
  void check_peers();

  // This rank's own failure, recorded so that the others name it and say why.
  void report_failure(const std::string& message);
  // The job's end: a last barrier (rank 0 has written everything), then leave so that nobody
  // mistakes the silence for a failure.
  void finish();

  // The c10d process group (null for a single process).
  c10::intrusive_ptr<c10d::ProcessGroup> process_group() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace segslim::dist

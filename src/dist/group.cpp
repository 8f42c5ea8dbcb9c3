#include "dist/group.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "dist/health.h"
#include "dist/store.h"

namespace segslim::dist {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

bool is_loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

// Gloo's transport endpoint for this process: GLOO_SOCKET_IFNAME when set (as torch reads it),
// the loopback address for a job on one machine, else the address the host name resolves to.
std::shared_ptr<gloo::transport::Device> gloo_device(const JobEnv& job) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (is_loopback(job.master_addr))
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(
    const c10::intrusive_ptr<c10d::Store>& store, const JobEnv& job, const GroupOptions& o) {
  if (o.device.is_cuda()) {
#ifdef USE_C10D_NCCL
    // Without one of these NCCL never enforces the timeout (torch 1.13's rule).
    ::setenv("NCCL_ASYNC_ERROR_HANDLING", "1", /*overwrite=*/0);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = o.timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, job.rank, job.world_size, options);
#else
    throw Error(str_cat("device ", o.device.str(), ": this LibTorch was built without NCCL ",
                        "(USE_C10D_NCCL), so data-parallel training runs on the CPU only"));
#endif
  }
  SEGSLIM_CHECK(o.device.is_cpu(), "data-parallel training on device ", o.device.str(),
                " is not supported (cpu: Gloo, cuda: NCCL)");
  auto options = c10d::ProcessGroupGloo::Options::create(o.timeout);
  options->devices.push_back(gloo_device(job));
  options->threads = 2;  // torch's default: one collective can overlap the next one's setup
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, job.rank, job.world_size, options);
}

std::string joined_key(int rank) { return str_cat("segslim/joined/", rank); }

// The tensors grouped by dtype (in order of first appearance, the same on every rank), each
// group flattened into one contiguous tensor: one collective per dtype instead of one per
// tensor. `op` runs on each flat tensor in place; the results are copied back. (ProcessGroup's
// allreduce_coalesced would do this, but NCCL does not implement it.)
void for_each_flat(const std::vector<at::Tensor>& tensors,
                   const std::function<void(at::Tensor&)>& op) {
  at::NoGradGuard no_grad;
  std::vector<at::ScalarType> order;
  std::map<at::ScalarType, std::vector<at::Tensor>> groups;
  for (const auto& t : tensors) {
    if (!groups.count(t.scalar_type())) order.push_back(t.scalar_type());
    groups[t.scalar_type()].push_back(t.detach());
  }
  for (at::ScalarType type : order) {
    std::vector<at::Tensor> flat_parts;
    for (const auto& t : groups[type]) flat_parts.push_back(t.reshape({-1}));
    at::Tensor flat = at::cat(flat_parts);
    op(flat);
    int64_t offset = 0;
    for (auto& t : groups[type]) {
      t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

}  // namespace

struct Group::Impl {
  JobEnv job;
  GroupOptions options;
  bool distributed = false;
  c10::intrusive_ptr<c10d::Store> store;  // the main thread's connection
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::unique_ptr<HealthMonitor> monitor;
  int64_t barriers = 0;
  bool finished = false;

  // A collective failed (`error`) after waiting `waited`: name the cause, which is usually
  // another rank, or report it as this rank's own failure.
  [[noreturn]] void fail(const std::string& what, const std::string& error,
                         Clock::duration waited) {
    // A peer's death breaks a collective at once, before its launcher's record or its missing
    // heartbeat have named it: give them the time they need.
    const auto& h = monitor->options();
    const auto deadline = Clock::now() + h.liveness + 2 * h.interval;
    while (Clock::now() < deadline) {
      if (auto f = monitor->peer_failure()) throw PeerFailure(*f);
      std::this_thread::sleep_for(std::max<std::chrono::milliseconds>(h.interval / 4, 20ms));
    }
    const std::vector<int> behind = monitor->ranks_behind();
    if (!behind.empty() && waited >= options.timeout * 9 / 10)
      throw PeerFailure(str_cat(describe_ranks(behind), " did not reach ", what, " within ",
                                options.timeout.count() / 1000.0,
                                " s (--dist-timeout): hung, or far slower than this rank"));
    throw Error(str_cat(what, " failed: ", first_line(error)));
  }
};

Group::Group() : impl_(std::make_unique<Impl>()) {}

Group::Group(const JobEnv& job, const GroupOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->job = job;
  impl_->options = options;
  if (job.world_size == 1) return;  // a job of one process: nobody to meet
  impl_->distributed = true;
  // A peer that dies closes its sockets; writing to them must be an error, not a SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  impl_->store = connect_job_store(job, options.timeout, /*may_host=*/true);
  impl_->store->add(joined_key(job.rank), 1);
  try {
    impl_->pg = make_process_group(impl_->store, job, options);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::vector<int> missing;
    try {
      for (int r = 0; r < job.world_size; ++r)
        if (!impl_->store->check({joined_key(r)})) missing.push_back(r);
    } catch (const std::exception&) {
    }
    if (!missing.empty())
      throw Error(str_cat("rendezvous at ", job.master_addr, ":", job.master_port, ": ",
                          describe_ranks(missing), " of ", job.world_size, " did not join within ",
                          options.timeout.count() / 1000.0, " s (--dist-timeout)"));
    throw Error(str_cat("cannot set up the process group of ", job.world_size,
                        " ranks: ", first_line(e.what())));
  }
  HealthOptions health =
      health_options(options.timeout, job.launcher_hosts_store ? "the launcher" : "rank 0");
  health.end_process_on_failure = options.end_process_on_peer_failure;
  impl_->monitor =
      std::make_unique<HealthMonitor>(connect_job_store(job, options.timeout, /*may_host=*/false),
                                      job.rank, job.world_size, health);
}

Group::~Group() {
  if (impl_->monitor) impl_->monitor->stop();
}

int Group::rank() const { return impl_->job.rank; }
int Group::world_size() const { return impl_->job.world_size; }
int Group::local_rank() const { return impl_->job.local_rank; }
int Group::local_world_size() const { return impl_->job.local_world_size; }
at::Device Group::device() const { return impl_->options.device; }
std::chrono::milliseconds Group::timeout() const { return impl_->options.timeout; }

c10::intrusive_ptr<c10d::ProcessGroup> Group::process_group() const { return impl_->pg; }

void Group::check_peers() {
  if (!impl_->distributed) return;
  if (auto f = impl_->monitor->peer_failure()) throw PeerFailure(*f);
}

void Group::collective(const std::string& what, const std::function<void()>& body) {
  if (!impl_->distributed) {
    body();
    return;
  }
  check_peers();
  impl_->monitor->enter_sync();
  const auto started = Clock::now();
  try {
    body();
  } catch (const PeerFailure&) {
    impl_->monitor->leave_sync();
    throw;
  } catch (const std::exception& e) {
    impl_->monitor->leave_sync();
    impl_->fail(what, e.what(), Clock::now() - started);
  }
  impl_->monitor->leave_sync();
}

namespace {

std::vector<double> reduce(Group& group, std::vector<double> values, c10d::ReduceOp op,
                           const std::string& what) {
  if (group.world_size() == 1 || values.empty()) return values;
  at::Tensor t =
      at::tensor(at::ArrayRef<double>(values), at::TensorOptions(at::kDouble)).to(group.device());
  group.collective(what, [&] {
    std::vector<at::Tensor> tensors{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    group.process_group()->allreduce(tensors, o)->wait();
  });
  const at::Tensor host = t.to(at::kCPU).contiguous();
  const double* p = host.data_ptr<double>();
  return std::vector<double>(p, p + host.numel());
}

}  // namespace

std::vector<double> Group::all_reduce_sum(std::vector<double> values) {
  return reduce(*this, std::move(values), c10d::ReduceOp::SUM, "an all-reduce (sum)");
}

std::vector<double> Group::all_reduce_max(std::vector<double> values) {
  return reduce(*this, std::move(values), c10d::ReduceOp::MAX, "an all-reduce (max)");
}

void Group::average_(const std::vector<at::Tensor>& tensors) {
  if (!impl_->distributed || tensors.empty()) return;
  for (const auto& t : tensors)
    SEGSLIM_CHECK(at::isFloatingType(t.scalar_type()), "cannot average a tensor of type ",
                  t.scalar_type(), " over the ranks");
  const double world = static_cast<double>(world_size());
  for_each_flat(tensors, [&](at::Tensor& flat) {
    collective("an all-reduce (mean)", [&] {
      std::vector<at::Tensor> v{flat};
      impl_->pg->allreduce(v)->wait();
    });
    flat.div_(world);
  });
}

void Group::broadcast_(const std::vector<at::Tensor>& tensors, int root) {
  if (!impl_->distributed || tensors.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> data;
  for (const auto& t : tensors) data.push_back(t.detach());
  // c10d's own coalescing (what DDP syncs its module states with): one broadcast per dtype
  // and 256 MiB.
  collective("a broadcast",
             [&] { c10d::broadcast_coalesced(impl_->pg, data, size_t{256} << 20, root); });
}

std::string Group::broadcast_bytes(const std::string& bytes, int root) {
  if (!impl_->distributed) return bytes;
  const bool sender = rank() == root;
  at::Tensor size = at::full({1}, sender ? static_cast<int64_t>(bytes.size()) : int64_t{0},
                             at::TensorOptions(at::kLong).device(device()));
  broadcast_({size}, root);
  const int64_t n = size.to(at::kCPU).item<int64_t>();
  if (n == 0) return std::string();
  at::Tensor data = at::empty({n}, at::TensorOptions(at::kByte));
  if (sender) std::memcpy(data.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  data = data.to(device());
  broadcast_({data}, root);
  const at::Tensor host = data.to(at::kCPU).contiguous();
  return std::string(reinterpret_cast<const char*>(host.data_ptr<uint8_t>()),
                     static_cast<size_t>(n));
}

void Group::barrier() {
  if (!impl_->distributed) return;
  check_peers();
  auto& monitor = *impl_->monitor;
  const std::string key = str_cat("segslim/barrier/", ++impl_->barriers);
  const int64_t world = world_size();
  monitor.enter_sync();
  const auto started = Clock::now();
  try {
    // A store counter rather than a collective: the wait is bounded by the others' health
    // (dist/health.h), not by a fixed time, so rank 0 may evaluate for as long as it needs.
    impl_->store->add(key, 1);
    auto delay = 1ms;
    while (impl_->store->add(key, 0) < world) {
      if (auto f = monitor.peer_failure()) throw PeerFailure(*f);
      if (auto h = monitor.hung_peer()) throw PeerFailure(*h);
      std::this_thread::sleep_for(delay);
      delay = std::min<std::chrono::milliseconds>(delay * 2, 50ms);
    }
  } catch (const PeerFailure&) {
    monitor.leave_sync();
    throw;
  } catch (const std::exception& e) {
    monitor.leave_sync();
    impl_->fail("a barrier", e.what(), Clock::now() - started);
  }
  monitor.leave_sync();
}

void Group::report_failure(const std::string& message) {
  if (!impl_->distributed || !impl_->monitor) return;
  impl_->monitor->report_failure(str_cat("rank ", rank(), " failed: ", message));
}

void Group::finish() {
  if (!impl_->distributed || impl_->finished) return;
  barrier();
  impl_->finished = true;
  impl_->monitor->finish();
  // Rank 0 serving the store must outlive the others' last use of it, or they would take its
  // exit for a failure.
  try {
    impl_->store->add(kLeftKey, 1);
    if (rank() == 0 && !impl_->job.launcher_hosts_store) {
      const auto deadline = Clock::now() + impl_->monitor->options().liveness;
      while (impl_->store->add(kLeftKey, 0) < world_size() && Clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
    }
  } catch (const std::exception&) {
    // Everyone has passed the last barrier: the job is complete whatever happens to the store.
  }
}

}  // namespace segslim::dist

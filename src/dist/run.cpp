#include "dist/run.h"

#include "dist/env.h"

namespace segslim::dist {

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

void run_data_parallel(const LaunchOptions& options, const std::vector<std::string>& argv,
                       at::Device device, const std::function<void(Group&)>& body) {
  check_launch_options(options);
  const std::optional<JobEnv> job = job_from_environment();
  if (!job) {
    if (options.nproc * options.nnodes == 1) {
      Group single;
      body(single);
    } else {
      launch_workers(options, argv);
    }
    return;
  }
  // A worker. Its launcher passed the same --nproc along; any other value means two launchers
  // (e.g. torchrun ... segslim --nproc 2).
  SEGSLIM_CHECK(options.nproc == 1 || options.nproc == job->local_world_size, "--nproc ",
                options.nproc,
                " inside a job that already has LOCAL_WORLD_SIZE=", job->local_world_size,
                " processes on this machine (RANK is set): start the workers either with "
                "--nproc or with another launcher, not both");
  GroupOptions go;
  go.timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  // One GPU per local rank unless the caller chose one.
  go.device = device.is_cuda() && !device.has_index()
                  ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(job->local_rank))
                  : device;
  const std::string who = job->world_size > 1 ? str_cat("[rank ", job->rank, "] ") : "";
  std::unique_ptr<Group> group;
  try {
    group = std::make_unique<Group>(*job, go);
  } catch (const std::exception& e) {
    throw Error(who + first_line(e.what()));
  }
  try {
    body(*group);
    group->finish();
  } catch (const PeerFailure& e) {
    throw PeerFailure(who + "stopped: " + e.what());
  } catch (const std::exception& e) {
    const std::string message = first_line(e.what());
    group->report_failure(message);
    throw Error(who + message);
  }
}

}  // namespace segslim::dist

#include "rank_threads.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "dist/store.h"

namespace segslim::testing {

std::vector<std::string> run_ranks(int world, double timeout_s,
                                   const std::function<void(int rank, dist::Group&)>& body,
                                   bool end_process_on_peer_failure) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  auto server = dist::host_store(0, timeout, "test");
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        dist::JobEnv job;
        job.rank = r;
        job.world_size = world;
        job.local_rank = r;
        job.local_world_size = world;
        job.master_addr = "127.0.0.1";
        job.master_port = server->getPort();
        job.launcher_hosts_store = true;
        dist::GroupOptions options;
        options.timeout = timeout;
        options.end_process_on_peer_failure = end_process_on_peer_failure;
        dist::Group group(job, options);
        body(r, group);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "(exception without a message)";
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace segslim::testing

#include "dist/launcher.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "common/error.h"
#include "dist/env.h"
#include "dist/health.h"
#include "dist/store.h"

extern char** environ;

namespace segslim::dist {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string signal_name(int sig) {
  switch (sig) {
    case SIGKILL:
      return "SIGKILL";
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGILL:
      return "SIGILL";
    case SIGPIPE:
      return "SIGPIPE";
    default:
      return str_cat("signal ", sig);
  }
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status))
    return str_cat("was killed by signal ", WTERMSIG(status), " (", signal_name(WTERMSIG(status)),
                   ")");
  return str_cat("exited with code ", WEXITSTATUS(status));
}

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
};

// This process's environment with the job's variables replaced by `job`'s.
std::vector<std::string> worker_environment(const JobEnv& job) {
  const auto vars = job_variables(job);
  std::set<std::string> names = {"TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"};
  for (const auto& [name, value] : vars) names.insert(name);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    if (!names.count(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  for (const auto& [name, value] : vars) env.push_back(name + "=" + value);
  return env;
}

pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // The workers must not outlive a launcher that is killed.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(1);
  ::execve("/proc/self/exe", args.data(), envp.data());
  const char msg[] = "segslim: error: cannot start a worker process (execve failed)\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::_exit(127);
}

}  // namespace

void check_launch_options(const LaunchOptions& o) {
  SEGSLIM_CHECK(o.nproc >= 1, "--nproc ", o.nproc, ": must be at least 1");
  SEGSLIM_CHECK(o.nnodes >= 1, "--nnodes ", o.nnodes, ": must be at least 1");
  SEGSLIM_CHECK(o.node_rank >= 0 && o.node_rank < o.nnodes, "--node-rank ", o.node_rank,
                " is not in [0, ", o.nnodes, ") (--nnodes ", o.nnodes, ")");
  SEGSLIM_CHECK(o.master_port >= -1 && o.master_port <= 65535, "--master-port ", o.master_port,
                " is no port (1-65535, or 0 for any free one)");
  SEGSLIM_CHECK(std::isfinite(o.timeout_s) && o.timeout_s >= 1, "--dist-timeout ", o.timeout_s,
                ": must be at least 1 second");
  if (o.nnodes > 1) {
    const char* addr = std::getenv("MASTER_ADDR");
    SEGSLIM_CHECK(!o.master_addr.empty() || (addr && *addr), "--nnodes ", o.nnodes,
                  ": every machine needs machine 0's address (--master-addr or MASTER_ADDR)");
    SEGSLIM_CHECK(o.master_port != 0, "--master-port 0 (any free port) works on one machine ",
                  "only: with --nnodes ", o.nnodes, " all machines must name the same port");
  }
}

void launch_workers(const LaunchOptions& o, const std::vector<std::string>& argv) {
  check_launch_options(o);
  SEGSLIM_CHECK(!argv.empty(), "no command line to start the workers with");
  std::signal(SIGPIPE, SIG_IGN);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));

  JobEnv job;
  job.world_size = o.nproc * o.nnodes;
  job.local_world_size = o.nproc;
  job.launcher_hosts_store = true;
  const char* env_addr = std::getenv("MASTER_ADDR");
  job.master_addr = !o.master_addr.empty()  ? o.master_addr
                    : env_addr && *env_addr ? std::string(env_addr)
                                            : std::string("127.0.0.1");
  std::string port_origin;
  if (o.master_port >= 0) {
    job.master_port = o.master_port;
    port_origin = "--master-port";
  } else if (const char* p = std::getenv("MASTER_PORT"); p && *p) {
    const std::string text = p;
    const bool digits =
        text.size() <= 5 && text.find_first_not_of("0123456789") == std::string::npos;
    SEGSLIM_CHECK(digits && std::stoi(text) <= 65535, "environment variable MASTER_PORT='", text,
                  "' is no port (1-65535)");
    job.master_port = std::stoi(text);
    port_origin = "MASTER_PORT";
  } else {
    job.master_port = o.nnodes > 1 ? 29500 : 0;
    port_origin = o.nnodes > 1 ? "the default port" : "any free port";
  }

  c10::intrusive_ptr<c10d::TCPStore> server;
  c10::intrusive_ptr<c10d::Store> store;
  if (o.node_rank == 0) {
    server = host_store(job.master_port, timeout, port_origin);
    job.master_port = server->getPort();
    store = attempt_store(server, job.restart_count);
  } else {
    store = connect_job_store(job, timeout, /*may_host=*/false);
  }

  const int first_rank = o.node_rank * o.nproc;
  std::fprintf(stderr, "[launcher] starting ranks %d-%d of %d on this machine (store at %s:%d)\n",
               first_rank, first_rank + o.nproc - 1, job.world_size, job.master_addr.c_str(),
               job.master_port);
  std::vector<Worker> workers(static_cast<size_t>(o.nproc));
  for (int i = 0; i < o.nproc; ++i) {
    JobEnv w = job;
    w.rank = first_rank + i;
    w.local_rank = i;
    workers[i].rank = w.rank;
    workers[i].pid = spawn(argv, worker_environment(w));
    if (workers[i].pid < 0) {
      const std::string why = std::strerror(errno);
      for (int k = 0; k < i; ++k) ::kill(workers[k].pid, SIGKILL);
      for (int k = 0; k < i; ++k) ::waitpid(workers[k].pid, nullptr, 0);
      throw Error(str_cat("cannot start worker process ", i, ": ", why));
    }
    workers[i].running = true;
  }

  // A failed rank's peers stop by themselves once they know (dist/health.h: at their next
  // synchronisation point, or from their monitor thread a few heartbeats later); after a grace
  // well beyond that the launcher stops them itself.
  const HealthOptions health = health_options(timeout, "the launcher");
  const auto grace = health.liveness + 2 * health.interval + 5s;
  std::optional<std::string> first_failure;
  Clock::time_point failed_at;
  bool killed = false;
  size_t running = workers.size();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& w : workers) {
        if (w.pid != pid || !w.running) continue;
        w.running = false;
        --running;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) break;
        const std::string what =
            str_cat("rank ", w.rank, " (pid ", pid, ") ", describe_exit(status));
        try {
          if (!has_failure_record(*store, w.rank)) record_failure(*store, w.rank, what);
        } catch (const std::exception&) {
          // The store is gone with machine 0's launcher: the workers notice that themselves.
        }
        if (!first_failure) first_failure = what, failed_at = Clock::now();
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (first_failure && !killed && Clock::now() - failed_at > grace) {
      for (const auto& w : workers) {
        if (!w.running) continue;
        std::fprintf(stderr,
                     "[launcher] rank %d did not stop within %.0f s of the failure; "
                     "killing it\n",
                     w.rank, std::chrono::duration<double>(grace).count());
        ::kill(w.pid, SIGKILL);
      }
      killed = true;
    }
    std::this_thread::sleep_for(20ms);
  }
  if (!first_failure) {
    // Machine 0's launcher serves the store: it waits (briefly) until the other machines'
    // workers have left it too, or they would take its exit for a failure.
    if (o.node_rank == 0 && o.nnodes > 1) {
      const auto deadline = Clock::now() + health.liveness;
      try {
        while (store->add(kLeftKey, 0) < job.world_size && Clock::now() < deadline)
          std::this_thread::sleep_for(20ms);
      } catch (const std::exception&) {
      }
    }
    return;
  }
  // The earliest record is the cause: a worker's own error beats the launcher's note that it
  // exited, and a killed rank beats the peers that stopped because of it.
  std::string cause = *first_failure;
  try {
    if (auto record = first_failure_record(*store, job.world_size)) cause = *record;
  } catch (const std::exception&) {
  }
  throw Error(str_cat(cause, "; the job stopped (with --resume it continues from its last ",
                      "checkpoint, with any number of processes)"));
}

}  // namespace segslim::dist

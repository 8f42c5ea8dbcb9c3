#include "dist/store.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "common/error.h"

namespace segslim::dist {

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

bool mentions(const std::string& text, const char* what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

c10::intrusive_ptr<c10d::Store> attempt_store(const c10::intrusive_ptr<c10d::Store>& store,
                                              int restart_count) {
  return c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(restart_count),
                                                store);
}

c10::intrusive_ptr<c10d::TCPStore> host_store(int port, std::chrono::milliseconds timeout,
                                              const std::string& port_origin) {
  SEGSLIM_CHECK(port >= 0 && port <= 65535, port_origin, " ", port, " is no port (0-65535)");
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = true;
  o.waitWorkers = false;
  o.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
  } catch (const std::exception& e) {
    const std::string what = first_line(e.what());
    if (mentions(what, "in use") || mentions(what, "errno: 98"))
      throw Error(str_cat("cannot host the rendezvous store on port ", port, " (", port_origin,
                          "): the port is in use, by another job or program; choose a free one"));
    throw Error(
        str_cat("cannot host the rendezvous store on port ", port, " (", port_origin, "): ", what));
  }
}

c10::intrusive_ptr<c10d::Store> connect_job_store(const JobEnv& job,
                                                  std::chrono::milliseconds timeout,
                                                  bool may_host) {
  const bool host = may_host && !job.launcher_hosts_store && job.rank == 0;
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(job.master_port);
  o.isServer = host;
  o.waitWorkers = false;
  o.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(job.master_addr, o);
  } catch (const std::exception& e) {
    const std::string what = first_line(e.what());
    if (host && (mentions(what, "in use") || mentions(what, "errno: 98")))
      throw Error(
          str_cat("rank 0 cannot host the rendezvous store on MASTER_PORT=", job.master_port,
                  ": the port is in use, by another job or program; choose a free one"));
    throw Error(str_cat(host ? "rank 0 cannot host" : "cannot reach",
                        " the rendezvous store at MASTER_ADDR=", job.master_addr,
                        " MASTER_PORT=", job.master_port,
                        host ? "" : str_cat(" within ", timeout.count() / 1000.0, " s"), " (", what,
                        ")", host ? "" : "; is rank 0 (or the launcher) running, and reachable?"));
  }
  return job.launcher_hosts_store ? attempt_store(store, job.restart_count) : store;
}

}  // namespace segslim::dist

// Reading a job from the environment (as torchrun sets it), and the rendezvous store's errors.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>

#include "common/error.h"
#include "dist/env.h"
#include "dist/rank_threads.h"
#include "dist/store.h"

namespace segslim::testing {
namespace {

using Vars = std::map<std::string, std::string>;

std::optional<dist::JobEnv> job(const Vars& vars) {
  return dist::job_from_environment([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string job_error(const Vars& vars) {
  try {
    job(vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const Vars kTorchrun = {{"RANK", "3"},
                        {"WORLD_SIZE", "4"},
                        {"LOCAL_RANK", "1"},
                        {"LOCAL_WORLD_SIZE", "2"},
                        {"MASTER_ADDR", "10.0.0.7"},
                        {"MASTER_PORT", "29500"},
                        {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                        {"TORCHELASTIC_RESTART_COUNT", "2"}};

TEST(JobEnv, ReadsWhatTorchrunSets) {
  const auto j = job(kTorchrun);
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->rank, 3);
  EXPECT_EQ(j->world_size, 4);
  EXPECT_EQ(j->local_rank, 1);
  EXPECT_EQ(j->local_world_size, 2);
  EXPECT_EQ(j->master_addr, "10.0.0.7");
  EXPECT_EQ(j->master_port, 29500);
  EXPECT_TRUE(j->launcher_hosts_store);
  EXPECT_EQ(j->restart_count, 2);
  // What a launcher sets is what a worker reads.
  Vars back;
  for (const auto& [name, value] : dist::job_variables(*j)) back[name] = value;
  EXPECT_EQ(back, kTorchrun);
}

TEST(JobEnv, NotAJobWithoutRankAndWorldSize) {
  EXPECT_FALSE(job({}).has_value());
  EXPECT_FALSE(job({{"MASTER_ADDR", "x"}, {"LOCAL_RANK", "0"}}).has_value());
  // A job of one needs no store: rank 0 of 1 without a master address is fine.
  const auto single = job({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  ASSERT_TRUE(single.has_value());
  EXPECT_EQ(single->world_size, 1);
  EXPECT_FALSE(single->launcher_hosts_store);
}

TEST(JobEnv, MistakesNameTheVariableAndValue) {
  Vars v = kTorchrun;
  v["RANK"] = "abc";
  EXPECT_NE(job_error(v).find("RANK='abc' is not a non-negative integer"), std::string::npos)
      << job_error(v);
  v["RANK"] = "-1";
  EXPECT_NE(job_error(v).find("RANK='-1'"), std::string::npos) << job_error(v);
  v["RANK"] = "4";
  EXPECT_NE(job_error(v).find("RANK=4 is not below WORLD_SIZE=4"), std::string::npos)
      << job_error(v);
  v = kTorchrun;
  v["WORLD_SIZE"] = "0";
  EXPECT_NE(job_error(v).find("WORLD_SIZE=0"), std::string::npos) << job_error(v);
  v = kTorchrun;
  v.erase("WORLD_SIZE");
  EXPECT_NE(job_error(v).find("RANK=3 is set but WORLD_SIZE is not"), std::string::npos)
      << job_error(v);
  v = kTorchrun;
  v.erase("MASTER_ADDR");
  EXPECT_NE(job_error(v).find("MASTER_ADDR is not set"), std::string::npos) << job_error(v);
  v = kTorchrun;
  v["MASTER_PORT"] = "70000";
  EXPECT_NE(job_error(v).find("MASTER_PORT=70000 is larger than 65535"), std::string::npos)
      << job_error(v);
  v = kTorchrun;
  v["LOCAL_RANK"] = "2";
  EXPECT_NE(job_error(v).find("LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"), std::string::npos)
      << job_error(v);
}

TEST(Store, APortInUseIsNamed) {
  // Hold a port, then ask for it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  try {
    dist::host_store(port, std::chrono::seconds(5), "--master-port");
    ADD_FAILURE() << "served a store on a port in use";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--master-port"), std::string::npos) << e.what();
  }
  ::close(fd);
}

TEST(Store, AnUnreachableStoreIsNamed) {
  dist::JobEnv j;
  j.rank = 1;
  j.world_size = 2;
  j.master_addr = "127.0.0.1";
  j.master_port = free_port();
  try {
    dist::connect_job_store(j, std::chrono::milliseconds(1500), true);
    ADD_FAILURE() << "connected to nothing";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("cannot reach the rendezvous store at MASTER_ADDR=127.0.0.1"),
        std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace segslim::testing

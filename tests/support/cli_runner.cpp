#include "support/cli_runner.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>

namespace segslim::testing {

CliResult run_cli(const std::string& args, const std::string& env) {
  CliResult r;
  const std::string cmd =
      (env.empty() ? "" : "env " + env + " ") + std::string(SEGSLIM_CLI) + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  // A child killed by a signal shows as the shell's 128 + signal number.
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace segslim::testing

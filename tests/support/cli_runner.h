#pragma once
// Runs the segslim binary as a user would and captures its exit code and output.
#include <string>

namespace segslim::testing {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// `args` is appended to the binary's path as a shell command line; `env` (e.g. "A=1 B=2")
// is prepended to set environment variables for that run only.
CliResult run_cli(const std::string& args, const std::string& env = "");

}  // namespace segslim::testing

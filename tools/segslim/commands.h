#pragma once
// One file per subcommand; each only parses flags and prints: the work lives in src/.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dist/group.h"
#include "dist/launcher.h"
#include "runtime/model_runner.h"

namespace segslim::cli {

void add_inspect_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_compress_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_bench_command(CLI::App& app);

// --threads: LibTorch defaults to 1 thread on these machines, so always set it explicitly.
CLI::Option* add_threads_option(CLI::App& cmd, int& threads);
void apply_threads(int threads);
// The cores of this machine shared among the job's processes on it (the default of --threads
// for a data-parallel worker).
int threads_per_process(int local_processes);

// --nproc, --nnodes, --node-rank, --master-addr, --master-port, --dist-timeout (dist/run.h).
void add_dist_options(CLI::App& cmd, dist::LaunchOptions& options);

// Runs job(group) in every process of the launch (dist/run.h), each with `threads` intra-op
// threads, or (threads_given false) its share of this machine's cores.
void run_data_parallel_job(const dist::LaunchOptions& launch, int threads, bool threads_given,
                           const std::function<void(dist::Group&)>& job);

// The command line this process was started with (a launcher starts its workers with it).
const std::vector<std::string>& command_line();

// --engine onednn|torch|auto, --int8-ops and --f32-links, for the commands that run inference.
struct EngineArgs {
  std::string engine = "onednn";
  std::string int8_ops;    // comma-separated op types; empty = all the model quantizes
  bool f32_links = false;  // EngineOptions::half_links off
};
void add_engine_options(CLI::App& cmd, EngineArgs& args);
RunnerOptions runner_options(const EngineArgs& args, const std::string& origin);

// "1x3x360x480" -> {1, 3, 360, 480}; throws naming the flag.
std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag);

}  // namespace segslim::cli

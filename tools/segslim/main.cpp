// segslim: QAT + distillation for ONNX segmentation models, and the tools to prove the result.
#include <ATen/Parallel.h>

#include <algorithm>
#include <iostream>
#include <sstream>
#include <thread>

#include "commands.h"
#include "common/error.h"
#include "dist/run.h"

namespace segslim::cli {

namespace {
std::vector<std::string> g_command_line;
}  // namespace

const std::vector<std::string>& command_line() { return g_command_line; }

CLI::Option* add_threads_option(CLI::App& cmd, int& threads) {
  threads = static_cast<int>(std::thread::hardware_concurrency());
  return cmd.add_option("--threads", threads, "intra-op threads (default: all cores)")
      ->check(CLI::PositiveNumber);
}

int threads_per_process(int local_processes) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, local_processes));
}

void run_data_parallel_job(const dist::LaunchOptions& launch, int threads, bool threads_given,
                           const std::function<void(dist::Group&)>& job) {
  dist::run_data_parallel(launch, command_line(), at::kCPU, [&](dist::Group& group) {
    apply_threads(threads_given ? threads : threads_per_process(group.local_world_size()));
    job(group);
  });
}

void add_dist_options(CLI::App& cmd, dist::LaunchOptions& o) {
  cmd.add_option("--nproc", o.nproc,
                 "data-parallel worker processes on this machine (default 1; a job started by "
                 "torchrun is joined through RANK, WORLD_SIZE, MASTER_ADDR, ...)");
  cmd.add_option("--nnodes", o.nnodes, "machines in the job (default 1; run the command on each)");
  cmd.add_option("--node-rank", o.node_rank, "this machine's index in [0, nnodes) (default 0)");
  cmd.add_option("--master-addr", o.master_addr,
                 "address of machine 0, where the rendezvous store runs (default: MASTER_ADDR, "
                 "else 127.0.0.1)");
  cmd.add_option("--master-port", o.master_port,
                 "port of the rendezvous store (default: MASTER_PORT, else 29500 with several "
                 "machines and any free port on one)");
  cmd.add_option("--dist-timeout", o.timeout_s,
                 "seconds the processes wait for one another at a collective before naming the "
                 "one that hangs (default 300)");
}

void add_engine_options(CLI::App& cmd, EngineArgs& args) {
  cmd.add_option("--engine", args.engine,
                 "onednn (default: segslim's inference engine), torch (the LibTorch executor "
                 "compress trains with: fake-quant numerics), auto (oneDNN unless it refuses "
                 "the model)");
  cmd.add_option("--int8-ops", args.int8_ops,
                 "oneDNN: comma-separated op types to run in INT8, e.g. Conv,Concat (default: "
                 "every op the QDQ model quantizes); the rest run FP32");
  cmd.add_flag("--f32-links", args.f32_links,
               "oneDNN, INT8 models: keep float maps between the engine's fused int8 steps in "
               "float32 (default: float16, half the memory traffic)");
}

RunnerOptions runner_options(const EngineArgs& args, const std::string& origin) {
  RunnerOptions o;
  o.backend = parse_backend(args.engine);
  o.origin = origin;
  o.int8_op_types = parse_int8_op_types(args.int8_ops);
  o.half_links = !args.f32_links;
  return o;
}

void apply_threads(int threads) { at::set_num_threads(threads); }

std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag) {
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, 'x')) {
    size_t used = 0;
    int64_t d = -1;
    try {
      d = std::stoll(part, &used);
    } catch (const std::exception&) {
    }
    SEGSLIM_CHECK(used == part.size() && d > 0, flag, " '", text,
                  "' is not a shape like 1x3x360x480 (positive integers joined by 'x')");
    dims.push_back(d);
  }
  SEGSLIM_CHECK(dims.size() == 4, flag, " '", text, "' must have 4 dims (NxCxHxW)");
  return dims;
}

}  // namespace segslim::cli

int main(int argc, char** argv) {
  segslim::cli::g_command_line.assign(argv, argv + argc);
  CLI::App app{"segslim: make ONNX semantic-segmentation models fast with INT8 QAT + distillation"};
  app.require_subcommand(1);
  segslim::cli::add_inspect_command(app);
  segslim::cli::add_eval_command(app);
  segslim::cli::add_predict_command(app);
  segslim::cli::add_compress_command(app);
  segslim::cli::add_train_command(app);
  segslim::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const segslim::Error& e) {
    std::cerr << "segslim: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "segslim: error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
  return 0;
}

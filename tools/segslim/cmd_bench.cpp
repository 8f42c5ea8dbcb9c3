#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "commands.h"
#include "common/error.h"
#include "common/files.h"
#include "graph/model.h"
#include "metrics/latency.h"
#include "runtime/model_runner.h"

namespace segslim::cli {

namespace {

struct BenchArgs {
  std::string model, shape, json;
  EngineArgs engine;
  int warmup = 10, repeat = 100, threads = 1;
  int profile = 0;  // print the N slowest steps (oneDNN)
};

// The `limit` steps that took longest (all runs, warm-up included), with their share.
void print_profile(const ModelRunner& runner, int limit) {
  if (!runner.profile) {
    std::cout << "--profile: per-step times come from the oneDNN engine only\n";
    return;
  }
  std::vector<engine::StepTime> steps = runner.profile();
  double total = 0;
  for (const auto& s : steps) total += s.total_ms;
  std::stable_sort(steps.begin(), steps.end(),
                   [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  const int64_t runs = steps.empty() ? 1 : std::max<int64_t>(steps[0].runs, 1);
  std::cout << fmt::format("\nslowest steps of {} (ms per run, share; stream drained per step)\n",
                           steps.size());
  for (size_t i = 0; i < steps.size() && static_cast<int>(i) < limit; ++i)
    std::cout << fmt::format("  {:8.2f}  {:5.1f}%  {}\n", steps[i].total_ms / runs,
                             100 * steps[i].total_ms / std::max(total, 1e-9), steps[i].line);
}

void run_bench(const BenchArgs& args) {
  onnx::ModelProto model = load_model(args.model);
  std::vector<int64_t> shape;
  if (!args.shape.empty()) {
    shape = parse_shape(args.shape, "--shape");
  } else {
    const auto inputs = real_inputs(model.graph());
    SEGSLIM_CHECK(inputs.size() == 1, args.model, ": bench needs a model with one input");
    shape = declared_shape(*inputs[0]);
    if (!shape.empty() && shape[0] < 0) shape[0] = 1;
    for (int64_t d : shape)
      SEGSLIM_CHECK(d > 0, args.model, ": the input has dynamic dimensions (",
                    shape_string(*inputs[0]), "): pass --shape NxCxHxW");
  }
  apply_threads(args.threads);
  RunnerOptions options = runner_options(args.engine, args.model);
  options.channels_last = true;  // LibTorch's fastest CPU layout: compare against its best
  options.profile = args.profile > 0;
  ModelRunner runner = make_runner(model, options);
  if (!runner.note.empty()) std::cerr << "note: " << runner.note << "\n";
  at::manual_seed(0);
  const at::Tensor input = at::randn(shape);
  for (int i = 0; i < args.warmup; ++i) runner.forward(input);
  std::vector<double> samples;
  for (int i = 0; i < args.repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    runner.forward(input);
    samples.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  const LatencyStats s = latency_stats(samples, static_cast<int>(shape[0]));
  std::cout << fmt::format(
      "{} on {} ({} threads, shape {}x{}x{}x{}, {} warm-up, {} runs)\n"
      "mean {:.2f} ms  p50 {:.2f} ms  p90 {:.2f} ms  min {:.2f} ms  {:.2f} images/s\n",
      args.model, runner.backend, args.threads, shape[0], shape[1], shape[2], shape[3], args.warmup,
      args.repeat, s.mean_ms, s.p50_ms, s.p90_ms, s.min_ms, s.images_per_s);
  if (args.profile > 0) print_profile(runner, args.profile);
  if (!args.json.empty()) {
    nlohmann::json j = to_json(s);
    j["model"] = args.model;
    j["engine"] = runner.backend;
    j["threads"] = args.threads;
    j["shape"] = shape;
    j["warmup"] = args.warmup;
    write_file_atomic(args.json, j.dump(2) + "\n");
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "latency of a model: mean, p50, p90, min, images/s");
  cmd->add_option("--model", args->model, "ONNX model (FP32 or QDQ)")->required();
  cmd->add_option("--shape", args->shape, "input shape NxCxHxW (default: the declared one)");
  cmd->add_option("--warmup", args->warmup, "untimed runs first")->check(CLI::NonNegativeNumber);
  cmd->add_option("--repeat", args->repeat, "timed runs")->check(CLI::PositiveNumber);
  add_engine_options(*cmd, args->engine);
  cmd->add_option("--profile", args->profile,
                  "oneDNN: also print the N slowest compiled steps (time per step)")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(*cmd, args->threads);
  cmd->add_option("--json", args->json, "write the statistics as JSON");
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace segslim::cli

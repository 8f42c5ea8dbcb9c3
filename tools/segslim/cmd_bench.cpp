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
  std::string model, vs, shape, json;
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

// The input shape to time: --shape, else the model's declared one (batch 1 if dynamic).
std::vector<int64_t> bench_shape(const BenchArgs& args, const onnx::ModelProto& model) {
  if (!args.shape.empty()) return parse_shape(args.shape, "--shape");
  const auto inputs = real_inputs(model.graph());
  SEGSLIM_CHECK(inputs.size() == 1, args.model, ": bench needs a model with one input");
  std::vector<int64_t> shape = declared_shape(*inputs[0]);
  if (!shape.empty() && shape[0] < 0) shape[0] = 1;
  for (int64_t d : shape)
    SEGSLIM_CHECK(d > 0, args.model, ": the input has dynamic dimensions (",
                  shape_string(*inputs[0]), "): pass --shape NxCxHxW");
  return shape;
}

// One model compiled for timing, and its timed runs.
struct Subject {
  std::string path;
  ModelRunner runner;
  std::vector<double> samples_ms;

  double time_one_run(const at::Tensor& input) {
    const auto t0 = std::chrono::steady_clock::now();
    runner.forward(input);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    samples_ms.push_back(ms);
    return ms;
  }
};

Subject compile_subject(const std::string& path, const onnx::ModelProto& model,
                        const BenchArgs& args) {
  RunnerOptions options = runner_options(args.engine, path);
  options.channels_last = true;  // LibTorch's fastest CPU layout: compare against its best
  options.profile = args.profile > 0;
  Subject s{path, make_runner(model, options), {}};
  if (!s.runner.note.empty()) std::cerr << "note: " << path << ": " << s.runner.note << "\n";
  return s;
}

nlohmann::json stats_json(const Subject& s, const LatencyStats& stats) {
  nlohmann::json j = to_json(stats);
  j["model"] = s.path;
  j["engine"] = s.runner.backend;
  j["samples_ms"] = s.samples_ms;  // in run order (with --vs: alternating with the other's)
  return j;
}

void run_bench(const BenchArgs& args) {
  const onnx::ModelProto model = load_model(args.model);
  const std::vector<int64_t> shape = bench_shape(args, model);
  apply_threads(args.threads);
  std::vector<Subject> subjects;
  subjects.push_back(compile_subject(args.model, model, args));
  if (!args.vs.empty()) subjects.push_back(compile_subject(args.vs, load_model(args.vs), args));
  at::manual_seed(0);
  const at::Tensor input = at::randn(shape);
  for (auto& s : subjects)
    for (int i = 0; i < args.warmup; ++i) s.runner.forward(input);
  // With --vs the two models alternate run by run, the order flipping every pair (A B, B A,
  // A B, ...), so both see the same load on a shared machine and neither always runs first:
  // their ratio is then far steadier than one taken between separate processes.
  std::vector<double> pair_ratios;
  for (int i = 0; i < args.repeat; ++i) {
    if (subjects.size() == 1) {
      subjects[0].time_one_run(input);
      continue;
    }
    const bool flip = i % 2 == 1;
    const double first = subjects[flip ? 1 : 0].time_one_run(input);
    const double second = subjects[flip ? 0 : 1].time_one_run(input);
    pair_ratios.push_back(flip ? second / first : first / second);
  }
  const int batch = static_cast<int>(shape[0]);
  std::vector<LatencyStats> stats;
  for (const auto& s : subjects) {
    stats.push_back(latency_stats(s.samples_ms, batch));
    const LatencyStats& st = stats.back();
    std::cout << fmt::format(
        "{} on {} ({} threads, shape {}x{}x{}x{}, {} warm-up, {} runs{})\n"
        "mean {:.2f} ms  p50 {:.2f} ms  p90 {:.2f} ms  min {:.2f} ms  {:.2f} images/s\n",
        s.path, s.runner.backend, args.threads, shape[0], shape[1], shape[2], shape[3], args.warmup,
        args.repeat, subjects.size() > 1 ? ", alternating with the other" : "", st.mean_ms,
        st.p50_ms, st.p90_ms, st.min_ms, st.images_per_s);
  }
  nlohmann::json j = stats_json(subjects[0], stats[0]);
  if (subjects.size() > 1) {
    const double speedup = stats[0].p50_ms / stats[1].p50_ms;
    // the median by the same nearest-rank rule as the p50s
    const double pair_median = latency_stats(pair_ratios, 1).p50_ms;
    std::cout << fmt::format(
        "{} is {:.2f}x faster than {} (ratio of the p50s; median of the {} run-by-run ratios "
        "{:.2f}x)\n",
        args.vs, speedup, args.model, pair_ratios.size(), pair_median);
    j["vs"] = stats_json(subjects[1], stats[1]);
    j["speedup"] = speedup;
    j["pair_speedup_median"] = pair_median;
  }
  if (args.profile > 0)
    for (const auto& s : subjects) {
      if (subjects.size() > 1) std::cout << "\n" << s.path << ":";
      print_profile(s.runner, args.profile);
    }
  if (!args.json.empty()) {
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
  cmd->add_option("--vs", args->vs,
                  "a second model timed in the same process, alternating run by run with "
                  "--model; prints both and how much faster --vs is (ratio of the p50s)");
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

#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "fit/fit.h"

namespace segslim::cli {

namespace {

void print_summary(const FitSummary& s) {
  std::cout << fmt::format("\n{:<8}{:>10}{:>10}\n", "", "mIoU", "acc");
  std::cout << fmt::format("{:<8}{:>10.4f}{:>10.4f}\n", "before", s.before.miou, s.before.acc);
  std::cout << fmt::format("{:<8}{:>10.4f}{:>10.4f}   ({:+.2f} points)\n", "after", s.after.miou,
                           s.after.acc, (s.after.miou - s.before.miou) * 100);
  std::cout << fmt::format("\nwrote {}\nwrote {}\n({} iterations, {:.0f} s)\n", s.model_path,
                           s.report_path, s.iterations, s.wall_seconds);
}

void run(FitRequest req, const dist::LaunchOptions& launch, bool threads_given) {
  run_data_parallel_job(launch, req.threads, threads_given, [&](dist::Group& group) {
    if (!threads_given) req.threads = threads_per_process(group.local_world_size());
    const FitSummary s = run_train(req, group);
    if (group.is_root()) print_summary(s);
  });
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto req = std::make_shared<FitRequest>();
  auto launch = std::make_shared<dist::LaunchOptions>();
  auto* cmd = app.add_subcommand(
      "train", "FP32 training / fine-tuning of an ONNX model -> trained ONNX model + report");
  cmd->add_option("--model", req->model_path, "ONNX model to train (from its current weights)");
  cmd->add_option("--data", req->data_path, "dataset YAML (PaddleSeg format)");
  cmd->add_option("--config", req->config_path,
                  "training YAML: TrainConfig (as compress's), Loss, Eval, Global.seed");
  cmd->add_option("--out", req->out_dir, "output folder (default: output/train)");
  cmd->add_flag("--resume", req->resume, "continue from the last checkpoint in OUT/checkpoint");
  auto* threads = add_threads_option(*cmd, req->threads);
  add_dist_options(*cmd, *launch);
  cmd->callback([req, launch, threads] { run(*req, *launch, threads->count() > 0); });
}

}  // namespace segslim::cli

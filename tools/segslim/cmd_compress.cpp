#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "compress/compress.h"

namespace segslim::cli {

namespace {

void print_summary(const CompressSummary& s) {
  std::cout << fmt::format("\nstrategy {}\n{:<8}{:>10}{:>10}\n", s.strategy, "", "mIoU", "acc");
  std::cout << fmt::format("{:<8}{:>10.4f}{:>10.4f}\n", "FP32", s.fp32.miou, s.fp32.acc);
  if (s.ptq) std::cout << fmt::format("{:<8}{:>10.4f}{:>10.4f}\n", "PTQ", s.ptq->miou, s.ptq->acc);
  std::cout << fmt::format("{:<8}{:>10.4f}{:>10.4f}   ({:+.2f} points vs FP32)\n", "INT8",
                           s.int8.miou, s.int8.acc, (s.int8.miou - s.fp32.miou) * 100);
  std::cout << fmt::format("\nwrote {}\nwrote {}\n({:.0f} s)\n", s.model_path, s.report_path,
                           s.wall_seconds);
}

void run(CompressRequest req, const dist::LaunchOptions& launch, bool threads_given) {
  run_data_parallel_job(launch, req.threads, threads_given, [&](dist::Group& group) {
    if (!threads_given) req.threads = threads_per_process(group.local_world_size());
    const CompressSummary s = run_compress(req, group);
    if (group.is_root()) print_summary(s);
  });
}

}  // namespace

void add_compress_command(CLI::App& app) {
  auto req = std::make_shared<CompressRequest>();
  auto launch = std::make_shared<dist::LaunchOptions>();
  auto* cmd = app.add_subcommand(
      "compress", "QAT with distillation (or PTQ / auto) -> INT8 QDQ ONNX model + report");
  cmd->add_option("--config", req->config_path, "compression YAML (PaddleSlim ACT keys)")
      ->required();
  cmd->add_option("--model", req->model_path, "FP32 ONNX model (overrides Global.model)");
  cmd->add_option("--data", req->data_path, "dataset YAML (overrides Global.data)");
  cmd->add_option("--out", req->out_dir,
                  "output folder (default: Global.output_dir or "
                  "output/compress)");
  cmd->add_flag("--resume", req->resume,
                "continue from the last checkpoint in OUT/checkpoint (with any --nproc)");
  auto* threads = add_threads_option(*cmd, req->threads);
  add_dist_options(*cmd, *launch);
  cmd->callback([req, launch, threads] { run(*req, *launch, threads->count() > 0); });
}

}  // namespace segslim::cli

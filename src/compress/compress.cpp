#include "compress/compress.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "compress/calibration.h"
#include "compress/qat_trainer.h"
#include "config/compress_config.h"
#include "data/dataset_config.h"
#include "graph/model.h"
#include "metrics/evaluate.h"
#include "metrics/metrics_json.h"
#include "passes/export_qdq.h"
#include "passes/fold_batchnorm.h"
#include "passes/weight_scales.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

// Global.model, else Global.model_dir/model_filename, else model_dir itself when it is a file.
std::string model_from_config(const GlobalConfig& g) {
  if (!g.model.empty()) return g.model;
  if (!g.model_dir.empty() && !g.model_filename.empty())
    return (fs::path(g.model_dir) / g.model_filename).string();
  if (!g.model_dir.empty() && fs::is_regular_file(g.model_dir)) return g.model_dir;
  return "";
}

// The training recipe auto mode uses when PTQ is not enough and the config has no TrainConfig:
// a short, gentle fine-tune (QAT starts from PTQ scales, so little is needed).
TrainConfig default_auto_train() {
  TrainConfig t;
  t.epochs = 2;
  t.eval_iter = 1 << 30;  // evaluate at the end of training
  t.learning_rate.type = "CosineAnnealingDecay";
  t.learning_rate.learning_rate = 5e-5;
  t.optimizer.type = "Adam";
  t.checkpoint_every = 50;
  return t;
}

struct Workspace {
  CompressConfig config;
  std::string model_path, out_dir, model_out, report_path, checkpoint_dir;
  onnx::ModelProto fp32, folded;
  DataConfig data;
  std::unique_ptr<SegDataset> train, val, calib;
  int eval_batch = 4;
};

CalibrationOptions calibration_options(const std::string& algo, double hist_percent, int batch_size,
                                       int batch_nums, const QuantAwareConfig& qa) {
  CalibrationOptions co;
  co.algo = algo;
  co.observer.hist_percent = hist_percent;
  co.observer.symmetric = qa.activation_dtype != "uint8";
  co.observer.bits = qa.activation_bits;
  co.batch_size = batch_size;
  co.batch_nums = batch_nums;
  return co;
}

void save_best(const Workspace& w, const onnx::ModelProto& model) {
  save_model(model, w.model_out);
  std::fprintf(stderr, "wrote %s\n", w.model_out.c_str());
}

}  // namespace

CompressSummary run_compress(const CompressRequest& req) {
  dist::Group single_process;
  return run_compress(req, single_process);
}

CompressSummary run_compress(const CompressRequest& req, dist::Group& group) {
  const auto started = std::chrono::steady_clock::now();
  const bool root = group.is_root();
  Workspace w;
  w.config = load_compress_config(req.config_path);
  const CompressConfig& cfg = w.config;
  w.model_path = !req.model_path.empty() ? req.model_path : model_from_config(cfg.global);
  SEGSLIM_CHECK(!w.model_path.empty(), req.config_path,
                ": no model given: pass --model or set Global.model (an .onnx file)");
  const std::string data_path = !req.data_path.empty() ? req.data_path : cfg.global.data;
  SEGSLIM_CHECK(!data_path.empty(), req.config_path,
                ": no dataset given: pass --data or set Global.data (a dataset YAML)");
  w.out_dir = !req.out_dir.empty()             ? req.out_dir
              : !cfg.global.output_dir.empty() ? cfg.global.output_dir
                                               : std::string("output/compress");
  w.model_out = (fs::path(w.out_dir) / "model.onnx").string();
  w.report_path = (fs::path(w.out_dir) / "compress_report.json").string();
  w.checkpoint_dir = (fs::path(w.out_dir) / "checkpoint").string();
  SEGSLIM_CHECK(fs::weakly_canonical(w.model_out) != fs::weakly_canonical(w.model_path),
                "the output ", w.model_out,
                " would overwrite the input model: choose another --out");

  // Everything a user can get wrong is checked before any work starts.
  w.fp32 = load_model(w.model_path);
  SEGSLIM_CHECK(real_inputs(w.fp32.graph()).size() == 1, w.model_path,
                ": compress needs a model with one image input");
  w.data = load_data_config(data_path);
  SEGSLIM_CHECK(w.data.train && w.data.val, data_path,
                ": compress needs both train_dataset and val_dataset");
  w.val = std::make_unique<SegDataset>(*w.data.val);
  w.train = std::make_unique<SegDataset>(*w.data.train);
  DatasetSpec calib_spec = *w.data.train;  // train images, deterministic val preprocessing
  calib_spec.transforms = w.data.val->transforms;
  w.calib = std::make_unique<SegDataset>(calib_spec);
  w.eval_batch = cfg.eval.batch_size.value_or(w.data.batch_size.value_or(1));

  const QuantAwareConfig qa = cfg.quant_aware.value_or(QuantAwareConfig{});
  std::string strategy = cfg.quant_aware || cfg.train ? "qat"
                         : cfg.hpo                    ? "hpo"
                         : cfg.quant_post             ? "ptq"
                                                      : "auto";
  SEGSLIM_CHECK(
      !(strategy == "qat" && !cfg.train), req.config_path,
      ": QuantAware needs a TrainConfig section (epochs or train_iter, learning_rate, ...)");
  passes::QuantPolicy policy;
  policy.op_types = {qa.onnx_op_types.begin(), qa.onnx_op_types.end()};
  policy.not_quant_patterns = qa.not_quant_pattern;
  policy.skip_first_last = qa.skip_first_last;
  policy.activation_unsigned = qa.activation_dtype == "uint8";
  policy.sum_inputs_shared_only = qa.add_concat_inputs == "shared";
  int folded_count = 0;
  w.folded = qa.freeze_bn ? passes::fold_batchnorm(w.fp32, &folded_count) : w.fp32;
  const passes::QdqModel qdq = passes::insert_qdq(w.folded, policy);
  if (root)
    std::fprintf(stderr,
                 "%s: %s strategy; %d BatchNormalization folded; %zu weights and %zu "
                 "activations quantized\n",
                 w.model_path.c_str(), strategy.c_str(), folded_count, qdq.weights.size(),
                 qdq.activations.size());

  const at::Device device = at::kCPU;
  Executor teacher(w.fp32, ExecutorOptions{device, at::kFloat, w.model_path});
  ExecutorOptions so{device, at::kFloat, "student"};
  so.learnable_quant_scales = qa.use_learnable_scale;
  Executor student(qdq.model, so);
  passes::refresh_weight_scales(student, qdq.weights);

  EvalOptions eo;
  eo.batch_size = w.eval_batch;
  const int workers = cfg.train ? cfg.train->num_workers : 2;
  eo.num_workers = workers;

  CompressSummary summary;
  std::optional<std::string> resumed_extra;
  if (req.resume && root) resumed_extra = checkpoint_extra_json(w.checkpoint_dir);
  nlohmann::json extra = resumed_extra && !resumed_extra->empty()
                             ? nlohmann::json::parse(*resumed_extra)
                             : nlohmann::json::object();

  // FP32 reference (stored in checkpoints, so a resumed run does not redo it). Evaluation,
  // calibration and the strategy decision are rank 0's: the others wait below.
  if (root && extra.contains("fp32")) {
    summary.fp32 = metrics_from_json(extra["fp32"]);
  } else if (root) {
    std::fprintf(stderr, "evaluating the FP32 model\n");
    summary.fp32 = evaluate(teacher, *w.val, eo).metrics;
    extra["fp32"] = to_json(summary.fp32);
  }

  // PTQ: always (it initialises QAT's scales too), unless a resumed QAT restores them.
  const QuantPostConfig qp = cfg.quant_post.value_or(QuantPostConfig{});
  std::string ptq_algo = qp.algo;
  if (root && !(resumed_extra && strategy == "qat")) {
    std::vector<CalibrationOptions> trials;
    if (strategy == "hpo") {
      const auto& h = *cfg.hpo;
      for (const auto& algo : h.ptq_algo)
        for (double hp : h.hist_percent)
          for (int bn : h.batch_num)
            if (static_cast<int>(trials.size()) < h.max_quant_count)
              trials.push_back(calibration_options(algo, hp, qp.batch_size, bn, qa));
    } else {
      trials.push_back(
          calibration_options(qp.algo, qp.hist_percent, qp.batch_size, qp.batch_nums, qa));
    }
    double best = -1;
    ActivationParams best_params;
    nlohmann::json trial_log = nlohmann::json::array();
    for (const auto& co : trials) {
      ActivationParams params = calibrate(w.folded, qdq.activations, *w.calib, co, device);
      apply_activation_params(student, qdq.activations, params);
      SegMetrics m = evaluate(student, *w.val, eo).metrics;
      std::fprintf(stderr, "[ptq] %s (hist_percent %g, %d batches): val mIoU %.4f\n",
                   co.algo.c_str(), co.observer.hist_percent, co.batch_nums, m.miou);
      trial_log.push_back({{"algo", co.algo},
                           {"hist_percent", co.observer.hist_percent},
                           {"batch_num", co.batch_nums},
                           {"miou", m.miou}});
      if (m.miou > best) {
        best = m.miou;
        best_params = params;
        summary.ptq = m;
        ptq_algo = co.algo;
      }
    }
    apply_activation_params(student, qdq.activations, best_params);
    extra["ptq"] = to_json(*summary.ptq);
    extra["ptq_algo"] = ptq_algo;
    extra["ptq_trials"] = trial_log;
  } else if (extra.contains("ptq")) {
    summary.ptq = metrics_from_json(extra["ptq"]);
    ptq_algo = extra.value("ptq_algo", ptq_algo);
  }

  const double drop_points = summary.ptq ? (summary.fp32.miou - summary.ptq->miou) * 100 : 0;
  bool run_qat = strategy == "qat";
  if (strategy == "auto" && root) {
    run_qat = drop_points > cfg.auto_config.ptq_max_drop;
    strategy = run_qat ? "auto-qat" : "auto-ptq";
    std::fprintf(stderr, "[auto] PTQ loses %.2f mIoU points (limit %.2f): %s\n", drop_points,
                 cfg.auto_config.ptq_max_drop, run_qat ? "continuing with QAT" : "keeping PTQ");
  }
  if (group.world_size() > 1) {
    // The others wait (as long as rank 0 is alive and busy) and take its decision; its
    // calibrated scales reach them with the training state (train_qat).
    group.barrier();
    const nlohmann::json decision = nlohmann::json::parse(group.broadcast_bytes(
        root ? nlohmann::json{{"run_qat", run_qat}, {"strategy", strategy}}.dump()
             : std::string()));
    run_qat = decision["run_qat"].get<bool>();
    strategy = decision["strategy"].get<std::string>();
    if (root && !run_qat)
      std::fprintf(stderr,
                   "note: strategy %s does not train: the other processes have nothing to do\n",
                   strategy.c_str());
  }

  nlohmann::json qat_json;
  if (run_qat) {
    QatSetup setup;
    setup.config = &w.config;
    setup.seed = cfg.global.seed;
    setup.train = cfg.train.value_or(default_auto_train());
    if (!setup.train.epochs && !setup.train.train_iter) setup.train.epochs = 1;
    setup.teacher = &teacher;
    setup.student = &student;
    setup.qdq = &qdq;
    setup.train_data = w.train.get();
    setup.val_data = w.val.get();
    setup.group = &group;
    setup.batch_size = setup.train.batch_size.value_or(w.data.batch_size.value_or(4));
    setup.eval_batch_size = w.eval_batch;
    setup.checkpoint_dir = w.checkpoint_dir;
    setup.resume = req.resume;
    setup.extra_json = extra.dump();
    setup.on_best = [&](const onnx::ModelProto& model, const SegMetrics&, int64_t) {
      save_best(w, model);
    };
    QatResult r = train_qat(setup);
    qat_json = loop_report(r, setup, group.world_size());
  } else if (root) {
    save_best(w, passes::export_qdq(student.export_model()));
  }
  summary.strategy = strategy;
  if (!root) return summary;  // rank 0 evaluates and writes; the others wait in Group::finish

  // The exported file itself, reloaded from disk, is what gets reported.
  Executor exported(load_model(w.model_out), ExecutorOptions{device, at::kFloat, w.model_out});
  std::fprintf(stderr, "evaluating the exported INT8 model %s\n", w.model_out.c_str());
  summary.int8 = evaluate(exported, *w.val, eo).metrics;
  summary.strategy = strategy;
  summary.model_path = w.model_out;
  summary.report_path = w.report_path;
  summary.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  nlohmann::json report = {{"model", w.model_path},
                           {"data", data_path},
                           {"config", req.config_path},
                           {"config_text", read_file(req.config_path, "compression config")},
                           {"strategy", strategy},
                           {"output_model", w.model_out},
                           {"class_names", w.data.val->class_names},
                           {"fp32", to_json(summary.fp32)},
                           {"int8", to_json(summary.int8)},
                           {"ptq_algo", ptq_algo},
                           {"ptq_drop_points", drop_points},
                           {"threads", req.threads},
                           {"processes", group.world_size()},
                           {"wall_seconds_this_run", summary.wall_seconds},
                           {"quantized",
                            {{"weights", qdq.weights.size()},
                             {"activations", qdq.activations.size()},
                             {"batchnorm_folded", folded_count}}}};
  if (summary.ptq) report["ptq"] = to_json(*summary.ptq);
  if (extra.contains("ptq_trials")) report["ptq_trials"] = extra["ptq_trials"];
  if (!qat_json.is_null()) report["qat"] = qat_json;
  write_file_atomic(w.report_path, report.dump(2) + "\n");
  return summary;
}

}  // namespace segslim

#include "compress/qat_trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/progress.h"
#include "common/strings.h"
#include "data/loader.h"
#include "dist/executor_sync.h"
#include "dist/grad_sync.h"
#include "dist/observer_sync.h"
#include "metrics/evaluate.h"
#include "metrics/metrics_json.h"
#include "passes/export_qdq.h"
#include "passes/weight_scales.h"
#include "quant/observer.h"
#include "train/checkpoint.h"
#include "train/distill_loss.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"
#include "train/training_loop.h"

namespace segslim {

namespace {

// PaddleSlim's activation_quantize_type -> our observer algorithm.
std::string observer_algo(const QuantAwareConfig& qa) {
  const std::string& t = qa.activation_quantize_type;
  if (t == "moving_average_abs_max") return "moving_average_abs_max";
  if (t == "abs_max" || t == "range_abs_max") return "abs_max";
  if (t == "min_max") return "min_max";
  throw Error(str_cat("QuantAware.activation_quantize_type '", t,
                      "' is not supported (valid: moving_average_abs_max, abs_max, "
                      "range_abs_max, min_max)"));
}

void check_tensor_exists(const Executor& exec, const std::string& name, const std::string& role) {
  if (exec.has_value(name)) return;
  throw Error(str_cat("Distillation.node: '", name, "' is not a tensor of the ", role,
                      " graph; closest names: ", join(closest_names(name, exec.value_names(), 5)),
                      " (run `segslim inspect MODEL` for the candidates)"));
}

}  // namespace

std::vector<std::pair<std::string, std::string>> distill_pairs(const CompressConfig& config,
                                                               const Executor& teacher,
                                                               const Executor& student) {
  std::vector<std::string> nodes;
  if (config.distillation) nodes = config.distillation->node;
  if (nodes.empty()) nodes = {teacher.output_names().at(0)};  // default: the output logits
  auto pairs = resolve_distill_pairs(nodes, student.has_value(nodes[0]), config.path);
  for (const auto& [t, s] : pairs) {
    check_tensor_exists(teacher, t, "teacher");
    check_tensor_exists(student, s, "student");
  }
  return pairs;
}

std::optional<std::string> checkpoint_extra_json(const std::string& dir) {
  auto ckpt = load_checkpoint(dir);
  if (!ckpt) return std::nullopt;
  return ckpt->extra_json;
}

QatResult train_qat(const QatSetup& s) {
  const CompressConfig& cfg = *s.config;
  const QuantAwareConfig qa = cfg.quant_aware.value_or(QuantAwareConfig{});
  const DistillationConfig dc = cfg.distillation.value_or(DistillationConfig{});
  Executor& teacher = *s.teacher;
  Executor& student = *s.student;
  const auto& qdq = *s.qdq;
  dist::Group single_process;
  dist::Group& group = s.group ? *s.group : single_process;
  const int world = group.world_size();

  const bool distill = dc.enable;
  const auto pairs = distill ? distill_pairs(cfg, teacher, student)
                             : std::vector<std::pair<std::string, std::string>>{};
  const bool need_ce = !distill || dc.ce_weight > 0;
  const std::string output_name = student.output_names().at(0);
  std::vector<std::string> student_fetch, teacher_fetch;
  for (const auto& [t, st] : pairs) {
    teacher_fetch.push_back(t);
    student_fetch.push_back(st);
  }
  const int64_t ignore_index = s.train_data->spec().ignore_index;

  // Activation observers (not with LSQ, where the scales are trained). The forward pass only
  // records each batch's summary; they are folded in after it, merged over the ranks
  // (dist/observer_sync.h), so that every rank holds the same scales.
  ObserverOptions oo;
  oo.moving_rate = qa.moving_rate;
  oo.symmetric = qa.activation_dtype != "uint8";
  oo.bits = qa.activation_bits;
  std::map<std::string, std::unique_ptr<Observer>> observers;
  std::map<std::string, const passes::QdqSite*> site_of;
  if (!qa.use_learnable_scale)
    for (const auto& site : qdq.activations) {
      observers[site.tensor] = make_observer(observer_algo(qa), oo);
      site_of[site.tensor] = &site;
    }
  dist::ObserverSync observations;
  bool observing = false;
  bool nonfinite_activation = false;  // divergence shows here before it reaches the loss
  student.set_node_observer(
      [&](const onnx::NodeProto& node, const ops::Tensors& in, const ops::Tensors&) {
        if (!observing || node.op_type() != "QuantizeLinear" || in.empty()) return;
        auto it = observers.find(node.input(0));
        if (it == observers.end()) return;
        at::Tensor x = in[0].detach();
        if (!at::isfinite(x).all().item<bool>()) {
          nonfinite_activation = true;  // reported with the loss check below
          return;
        }
        observations.record(*it->second, x);
      });
  auto update_activation_scales = [&] {
    at::NoGradGuard no_grad;
    for (const auto& [tensor, obs] : observers) {
      if (!obs->ready()) continue;
      const QuantParams p = obs->params();
      student.initializers().at(site_of[tensor]->scale).fill_(p.scale);
      student.initializers().at(site_of[tensor]->zero_point).fill_(p.zero_point);
    }
  };

  const LoopSetup ls(s, "qat", &student, &group);

  LoopHooks hooks;
  hooks.export_model = [&] { return passes::export_qdq(student.export_model()); };
  hooks.save_state = [&] {
    std::map<std::string, std::vector<double>> states;
    for (const auto& [name, obs] : observers) states[name] = obs->state();
    return states;
  };
  hooks.load_state = [&](const std::map<std::string, std::vector<double>>& states) {
    for (const auto& [name, st] : states)
      if (observers.count(name)) observers[name]->load_state(st);
  };
  hooks.before_loop = [&] {
    passes::refresh_weight_scales(student, qdq.weights);
    student.set_training(!qa.freeze_bn);
  };
  hooks.loss = [&](const Batch& batch) {
    at::Tensor images_dev = batch.images.to(student.device());
    TensorMap teacher_out;
    if (!teacher_fetch.empty()) {
      at::NoGradGuard no_grad;
      teacher_out = teacher.run({{teacher.input_names().at(0), images_dev}}, teacher_fetch);
    }
    std::vector<std::string> fetch = student_fetch;
    if (need_ce) fetch.push_back(output_name);
    observing = true;
    TensorMap student_out = student.run({{student.input_names().at(0), images_dev}}, fetch);
    observing = false;

    // Each rank's loss is a mean over its shard. The distillation terms average over the same
    // number of elements on every rank, so the mean of the ranks' losses (which the averaged
    // gradients follow) is the loss of the global batch.
    at::Tensor loss = at::zeros({}, images_dev.options());
    for (const auto& [t, st] : pairs) {
      at::Tensor d =
          dc.loss == "soft_label"
              ? soft_label_distill_loss(student_out.at(st), teacher_out.at(t), dc.temperature)
              : l2_distill_loss(student_out.at(st), teacher_out.at(t));
      loss = loss + dc.alpha * d;
    }
    if (need_ce) {
      const double w = distill ? dc.ce_weight : 1.0;
      at::Tensor labels = batch.labels.to(student.device());
      at::Tensor ce = segmentation_ce_loss(student_out.at(output_name), labels, ignore_index);
      if (world > 1) {
        // Cross entropy averages over the non-ignored pixels, whose count differs between
        // shards. The global mean is sum_r n_r ce_r / N (N = sum_r n_r); the gradients are
        // averaged over the ranks, so rank r contributes world * n_r / N * ce_r.
        const double n_r = (labels != ignore_index).sum().item<double>();
        const double n = group.all_reduce_sum({n_r})[0];
        if (n > 0) ce = ce * (world * n_r / n);
      }
      loss = loss + w * ce;
    }
    double loss_value = nonfinite_activation ? NAN : loss.item<double>();
    if (world > 1) {
      // One decision for all ranks: a non-finite loss anywhere stops everyone here.
      const bool finite = std::isfinite(loss_value);
      const auto sum = group.all_reduce_sum({finite ? loss_value : 0.0, finite ? 0.0 : 1.0});
      loss_value = sum[1] > 0 ? (finite ? NAN : loss_value) : sum[0] / world;
    }
    return BatchLoss{loss, loss_value};
  };
  hooks.after_step = [&] {
    // This batch's activation ranges, merged over the ranks: every rank now holds the observer
    // state one process would after the whole global batch.
    observations.fold(group);
    // Scales follow the new weights and the observed activation ranges (after the step:
    // the backward pass needed the scales it was computed with).
    passes::refresh_weight_scales(student, qdq.weights);
    update_activation_scales();
  };
  return run_training_loop(ls, hooks);
}

}  // namespace segslim

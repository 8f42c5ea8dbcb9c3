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
  const TrainConfig& tc = s.train;
  const QuantAwareConfig qa = cfg.quant_aware.value_or(QuantAwareConfig{});
  const DistillationConfig dc = cfg.distillation.value_or(DistillationConfig{});
  Executor& teacher = *s.teacher;
  Executor& student = *s.student;
  const auto& qdq = *s.qdq;
  dist::Group single_process;
  dist::Group& group = s.group ? *s.group : single_process;
  const bool root = group.is_root();
  const int world = group.world_size();
  QatResult result;
  result.extra_json = s.extra_json;

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

  LoaderOptions lo;
  lo.batch_size = s.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.num_workers = tc.num_workers;
  lo.seed = static_cast<uint64_t>(cfg.global.seed);
  lo.shard = {group.rank(), world};
  DataLoader loader(*s.train_data, lo);
  const int64_t global_batch = int64_t{s.batch_size} * world;
  const int64_t per_epoch = static_cast<int64_t>(loader.num_batches());
  SEGSLIM_CHECK(per_epoch > 0, "the train split has ", s.train_data->size(),
                " images, fewer than one batch of ", global_batch,
                world > 1 ? str_cat(" (", s.batch_size, " per process x ", world, " processes)")
                          : std::string(),
                " (lower TrainConfig.batch_size)");
  int64_t total = tc.train_iter ? *tc.train_iter : int64_t{*tc.epochs} * per_epoch;
  const int64_t ckpt_every = std::max<int64_t>(1, tc.checkpoint_every);

  at::manual_seed(cfg.global.seed);
  Optimizer optimizer(tc.optimizer, student.weights());
  dist::GradientSync gradients(group, dist::weights_in_graph_order(student));
  const std::string optimizer_path = s.checkpoint_dir + "/optimizer.pt";

  // Where the data stands: the epoch and the images of its order already trained on. Counted in
  // images, not batches, so that a run resumed with another number of processes (another
  // global batch) carries on with the very next image.
  int epoch = 0;
  int64_t epoch_offset = 0;
  int64_t start = 0;
  double best = -1;
  if (s.resume && root) {
    auto ckpt = load_checkpoint(s.checkpoint_dir);
    if (ckpt) {
      at::NoGradGuard no_grad;
      for (const auto& [name, t] : ckpt->tensors) {
        auto it = student.initializers().find(name);
        SEGSLIM_CHECK(it != student.initializers().end(), "checkpoint in ", s.checkpoint_dir,
                      " holds tensor '", name, "' that the student graph lacks: it belongs to ",
                      "another model or config");
        it->second.copy_(t);
      }
      for (const auto& [name, st] : ckpt->observer_states)
        if (observers.count(name)) observers[name]->load_state(st);
      optimizer.load(optimizer_path);
      start = ckpt->iteration;
      best = ckpt->best_miou;
      result.extra_json = ckpt->extra_json;
      result.resumed = true;
      auto j = nlohmann::json::parse(ckpt->extra_json.empty() ? "{}" : ckpt->extra_json);
      result.best_iteration = j.value("best_iteration", int64_t{-1});
      if (j.contains("best_metrics")) result.best_metrics = metrics_from_json(j["best_metrics"]);
      // Checkpoints without a data position come from single-process runs of whole batches.
      const int64_t saved_batch = j.value("global_batch", global_batch);
      epoch = j.value("data_epoch", static_cast<int>(start / per_epoch));
      epoch_offset = j.value("data_offset", (start % per_epoch) * global_batch);
      // Iterations keep their meaning (the LR schedule runs over the original total).
      total = j.value("total_iterations", total);
      std::fprintf(stderr, "resuming from %s at iteration %lld (best mIoU %.4f)\n",
                   s.checkpoint_dir.c_str(), static_cast<long long>(start), best);
      if (saved_batch != global_batch)
        std::fprintf(stderr,
                     "note: the checkpoint was trained with a global batch of %lld images, "
                     "this run uses %lld (%d process%s x %d): each remaining iteration sees "
                     "%lld images\n",
                     static_cast<long long>(saved_batch), static_cast<long long>(global_batch),
                     world, world > 1 ? "es" : "", s.batch_size,
                     static_cast<long long>(global_batch));
    } else {
      std::fprintf(stderr, "--resume: no checkpoint in %s, starting from the beginning\n",
                   s.checkpoint_dir.c_str());
    }
  }
  if (world > 1) {
    // Every rank starts from rank 0's state: its calibrated (or checkpointed) weights, scales
    // and statistics, observer states, optimizer moments and data position.
    dist::broadcast_initializers(group, student);
    nlohmann::json state;
    if (root) {
      nlohmann::json obs = nlohmann::json::object();
      for (const auto& [name, o] : observers) obs[name] = o->state();
      state = {{"start", start},
               {"total", total},
               {"epoch", epoch},
               {"offset", epoch_offset},
               {"resumed", result.resumed},
               {"observers", obs}};
    }
    state = nlohmann::json::parse(group.broadcast_bytes(root ? state.dump() : std::string()));
    const std::string opt_state =
        state["resumed"].get<bool>()
            ? group.broadcast_bytes(root ? optimizer.state_bytes() : std::string())
            : std::string();
    if (!root) {
      start = state["start"].get<int64_t>();
      total = state["total"].get<int64_t>();
      epoch = state["epoch"].get<int>();
      epoch_offset = state["offset"].get<int64_t>();
      for (const auto& [name, o] : observers)
        o->load_state(state["observers"][name].get<std::vector<double>>());
      if (!opt_state.empty()) optimizer.load_state_bytes(opt_state, "rank 0's optimizer state");
    }
  }
  const int64_t eval_every = std::max<int64_t>(1, std::min(tc.eval_iter, total));
  LrSchedule schedule(tc.learning_rate, total);

  auto save = [&](int64_t iteration) {
    Checkpoint ckpt;
    ckpt.iteration = iteration;
    // Epochs completed: the current one is, when no whole global batch is left in it.
    const bool epoch_used_up =
        epoch_offset + global_batch > static_cast<int64_t>(s.train_data->size());
    ckpt.epoch = epoch + (epoch_used_up ? 1 : 0);
    ckpt.best_miou = best;
    for (const auto& [name, t] : student.initializers()) ckpt.tensors[name] = t.detach();
    for (const auto& [name, obs] : observers) ckpt.observer_states[name] = obs->state();
    auto j = nlohmann::json::parse(result.extra_json.empty() ? "{}" : result.extra_json);
    j["best_iteration"] = result.best_iteration;
    if (result.best_iteration >= 0) j["best_metrics"] = to_json(result.best_metrics);
    j["data_epoch"] = epoch;
    j["data_offset"] = epoch_offset;
    j["total_iterations"] = total;
    j["global_batch"] = global_batch;
    j["processes"] = world;
    ckpt.extra_json = j.dump();
    // optimizer first: the checkpoint file is the commit point that names a consistent pair
    optimizer.save(optimizer_path);
    save_checkpoint(s.checkpoint_dir, ckpt);
  };

  auto evaluate_student = [&](int64_t iteration) {
    EvalOptions eo;
    eo.batch_size = s.eval_batch_size;
    eo.num_workers = tc.num_workers;
    EvalResult r = evaluate(student, *s.val_data, eo);
    result.last_metrics = r.metrics;
    std::fprintf(stderr, "[qat] iteration %lld: val mIoU %.4f (best %.4f)\n",
                 static_cast<long long>(iteration), r.metrics.miou, std::max(best, r.metrics.miou));
    if (r.metrics.miou > best) {
      best = r.metrics.miou;
      result.best_iteration = iteration;
      result.best_metrics = r.metrics;
      if (s.on_best) s.on_best(passes::export_qdq(student.export_model()), r.metrics, iteration);
    }
  };

  // Resume tests: SIGKILL after an iteration, in every process or in one rank only.
  const char* kill_env = std::getenv("SEGSLIM_TEST_KILL_AFTER_ITER");
  const int64_t kill_after = kill_env ? std::atoll(kill_env) : -1;
  const char* kill_rank_env = std::getenv("SEGSLIM_TEST_KILL_RANK");
  const int kill_rank = kill_rank_env ? std::atoi(kill_rank_env) : -1;

  passes::refresh_weight_scales(student, qdq.weights);
  student.set_training(!qa.freeze_bn);
  const bool sync_batchnorm =
      world > 1 && student.training() && !dist::batchnorm_statistics(student).empty();
  Progress progress("qat", total - start, "iter", /*visible=*/root);
  int64_t images = 0;
  double train_seconds = 0;
  loader.set_epoch_at_sample(epoch, static_cast<size_t>(epoch_offset));
  for (int64_t it = start; it < total; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    auto batch = loader.next();
    if (!batch) {  // this epoch has no whole global batch left: the next one, reshuffled
      ++epoch;
      epoch_offset = 0;
      loader.set_epoch_at_sample(epoch, 0);
      batch = loader.next();
    }
    SEGSLIM_CHECK(batch.has_value(), "data loader ran dry at iteration ", it);
    at::Tensor images_dev = batch->images.to(student.device());

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
      at::Tensor labels = batch->labels.to(student.device());
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
    if (!std::isfinite(loss_value)) {
      throw Error(str_cat("the loss became ", loss_value, " at iteration ", it, " (lr ",
                          schedule.at(it), "); training stopped. ",
                          result.best_iteration >= 0
                              ? str_cat("The best model so far (val mIoU ", best, ", iteration ",
                                        result.best_iteration, ") is kept.")
                              : std::string(root ? "No model was exported yet."
                                                 : "Rank 0 keeps the best model so far."),
                          " Lower TrainConfig.learning_rate or add optimizer_builder.grad_clip."));
    }
    optimizer.zero_grad();
    gradients.backward(loss);  // averaged over the ranks when it returns
    const double lr = schedule.at(it);
    optimizer.step(lr);
    // This batch's activation ranges, merged over the ranks: every rank now holds the observer
    // state one process would after the whole global batch.
    observations.fold(group);
    if (sync_batchnorm) dist::average_batchnorm_statistics(group, student);
    // Scales follow the new weights and the observed activation ranges (after the step:
    // the backward pass needed the scales it was computed with).
    passes::refresh_weight_scales(student, qdq.weights);
    update_activation_scales();
    epoch_offset += global_batch;
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    images += batch->images.size(0) * world;
    progress.advance(1, fmt::format("loss {:.5f} lr {:.2e} {:.2f} img/s", loss_value, lr,
                                    images / std::max(train_seconds, 1e-9)));

    const int64_t done = it + 1;
    bool rank0_work = false;
    if (done % eval_every == 0 || done == total) {
      if (root) evaluate_student(done);
      rank0_work = true;
    }
    if (done % ckpt_every == 0 || done % eval_every == 0 || done == total) {
      if (root) save(done);
      rank0_work = true;
    }
    // The others wait for rank 0's evaluation and checkpoint, however long they take.
    if (rank0_work) group.barrier();
    if (kill_after >= 0 && done == kill_after && (kill_rank < 0 || kill_rank == group.rank()))
      std::raise(SIGKILL);
  }
  progress.finish();
  result.iterations = total;
  result.train_seconds = train_seconds;
  result.images_per_s = train_seconds > 0 ? images / train_seconds : 0;
  return result;
}

}  // namespace segslim

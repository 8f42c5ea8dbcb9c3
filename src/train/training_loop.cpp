#include "train/training_loop.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>

#include "common/error.h"
#include "common/progress.h"
#include "common/strings.h"
#include "dist/executor_sync.h"
#include "dist/grad_sync.h"
#include "metrics/evaluate.h"
#include "metrics/metrics_json.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"

namespace segslim {

LoopResult run_training_loop(const LoopSetup& s, const LoopHooks& hooks) {
  SEGSLIM_CHECK(hooks.loss, "run_training_loop: no loss hook");
  const TrainConfig& tc = s.train;
  Executor& model = *s.model;
  dist::Group single_process;
  dist::Group& group = s.group ? *s.group : single_process;
  const bool root = group.is_root();
  const int world = group.world_size();
  LoopResult result;
  result.extra_json = s.extra_json;

  LoaderOptions lo;
  lo.batch_size = s.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.num_workers = tc.num_workers;
  lo.seed = static_cast<uint64_t>(s.seed);
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

  at::manual_seed(s.seed);
  Optimizer optimizer(tc.optimizer, model.weights());
  dist::GradientSync gradients(group, dist::weights_in_graph_order(model));
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
        auto it = model.initializers().find(name);
        SEGSLIM_CHECK(it != model.initializers().end(), "checkpoint in ", s.checkpoint_dir,
                      " holds tensor '", name, "' that the trained graph lacks: it belongs to ",
                      "another model or config");
        it->second.copy_(t);
      }
      if (hooks.load_state) hooks.load_state(ckpt->observer_states);
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
    // Every rank starts from rank 0's state: its weights, scales and statistics, extra state
    // (observers), optimizer moments and data position.
    dist::broadcast_initializers(group, model);
    nlohmann::json state;
    if (root) {
      nlohmann::json extra = nlohmann::json::object();
      if (hooks.save_state)
        for (const auto& [name, st] : hooks.save_state()) extra[name] = st;
      state = {{"start", start},
               {"total", total},
               {"epoch", epoch},
               {"offset", epoch_offset},
               {"resumed", result.resumed},
               {"state", extra}};
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
      if (hooks.load_state) {
        std::map<std::string, std::vector<double>> extra;
        for (const auto& [name, st] : state["state"].items())
          extra[name] = st.get<std::vector<double>>();
        hooks.load_state(extra);
      }
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
    for (const auto& [name, t] : model.initializers()) ckpt.tensors[name] = t.detach();
    if (hooks.save_state) ckpt.observer_states = hooks.save_state();
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

  auto evaluate_model = [&](int64_t iteration) {
    EvalOptions eo;
    eo.batch_size = s.eval_batch_size;
    eo.num_workers = tc.num_workers;
    const EvalResult r = evaluate(model, *s.val_data, eo);  // restores the training mode
    result.last_metrics = r.metrics;
    std::fprintf(stderr, "[%s] iteration %lld: val mIoU %.4f (best %.4f)\n", s.tag.c_str(),
                 static_cast<long long>(iteration), r.metrics.miou, std::max(best, r.metrics.miou));
    if (r.metrics.miou > best) {
      best = r.metrics.miou;
      result.best_iteration = iteration;
      result.best_metrics = r.metrics;
      if (s.on_best)
        s.on_best(hooks.export_model ? hooks.export_model() : model.export_model(), r.metrics,
                  iteration);
    }
  };

  // Resume tests: SIGKILL after an iteration, in every process or in one rank only.
  const char* kill_env = std::getenv("SEGSLIM_TEST_KILL_AFTER_ITER");
  const int64_t kill_after = kill_env ? std::atoll(kill_env) : -1;
  const char* kill_rank_env = std::getenv("SEGSLIM_TEST_KILL_RANK");
  const int kill_rank = kill_rank_env ? std::atoi(kill_rank_env) : -1;

  if (hooks.before_loop) hooks.before_loop();
  const bool sync_batchnorm =
      world > 1 && model.training() && !dist::batchnorm_statistics(model).empty();
  Progress progress(s.tag, total - start, "iter", /*visible=*/root);
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
    const BatchLoss bl = hooks.loss(*batch);
    if (!std::isfinite(bl.value))
      throw Error(str_cat("the loss became ", bl.value, " at iteration ", it, " (lr ",
                          schedule.at(it), "); training stopped. ",
                          result.best_iteration >= 0
                              ? str_cat("The best model so far (val mIoU ", best, ", iteration ",
                                        result.best_iteration, ") is kept.")
                              : std::string(root ? "No model was written yet."
                                                 : "Rank 0 keeps the best model so far."),
                          " Lower TrainConfig.learning_rate or add optimizer_builder.grad_clip."));
    optimizer.zero_grad();
    gradients.backward(bl.loss);  // averaged over the ranks when it returns
    const double lr = schedule.at(it);
    optimizer.step(lr);
    if (sync_batchnorm) dist::average_batchnorm_statistics(group, model);
    if (hooks.after_step) hooks.after_step();
    epoch_offset += global_batch;
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    images += batch->images.size(0) * world;
    progress.advance(1, fmt::format("loss {:.5f} lr {:.2e} {:.2f} img/s", bl.value, lr,
                                    images / std::max(train_seconds, 1e-9)));

    const int64_t done = it + 1;
    bool rank0_work = false;
    if (done % eval_every == 0 || done == total) {
      if (root) evaluate_model(done);
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

nlohmann::json loop_report(const LoopResult& r, const TrainingRun& run, int world_size) {
  return {{"iterations", r.iterations},
          {"best_iteration", r.best_iteration},
          {"best_val", to_json(r.best_metrics)},
          {"train_seconds_this_run", r.train_seconds},
          {"train_images_per_s", r.images_per_s},
          {"resumed", r.resumed},
          {"batch_size", run.batch_size},
          {"processes", world_size},
          {"global_batch_size", run.batch_size * world_size}};
}

}  // namespace segslim

// `segslim compress --nproc N` and workers joined through the environment, run as a user runs
// them, on the bundled sample (4 train images, cropped small so that the tests stay short).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "dist/rank_threads.h"
#include "graph/model.h"
#include "graph/tensor_proto.h"
#include "passes/fold_batchnorm.h"
#include "support/cli_runner.h"
#include "support/test_support.h"
#include "train/checkpoint.h"

namespace segslim::testing {
namespace {

namespace fs = std::filesystem;

const std::string kModel = source_dir() + "/sample/models/espnet_camvid.onnx";

// The sample's 8 images (train and val) to train on, cropped to 240x176 (ESPNet needs sides
// divisible by 8: a quarter of the full 480x360), and its 4 val images resized to that size.
std::string data_config() {
  const std::string root = source_dir() + "/sample/camvid";
  const std::string train_list =
      write_temp_file("dist_train8.txt", read_file(root + "/train.txt", "list") +
                                             read_file(root + "/val.txt", "list"));
  const std::string normalize = R"(    - type: Normalize
      mean: [0.43267080269607844, 0.42513290106081497, 0.41189497405407477]
      std: [72.12568664550781, 72.69076538085938, 69.90434265136719]
)";
  return write_temp_file("dist_data.yml",
                         "train_dataset:\n  type: Dataset\n  dataset_root: " + root + R"(
  train_path: )" + train_list +
                             R"(
  num_classes: 11
  ignore_index: 11
  mode: train
  to_rgb: false
  transforms:
    - type: ResizeStepScaling
      min_scale_factor: 0.5
      max_scale_factor: 0.75
      scale_step_size: 0.25
    - type: RandomPaddingCrop
      crop_size: [240, 176]
      label_padding_value: 11
    - type: RandomHorizontalFlip
)" + normalize +
                             "val_dataset:\n  type: Dataset\n  dataset_root: " + root + R"(
  val_path: val.txt
  num_classes: 11
  ignore_index: 11
  mode: val
  to_rgb: false
  transforms:
    - type: Resize
      target_size: [240, 176]
)" + normalize);
}

// QAT with distillation and some label cross entropy (whose mean over non-ignored pixels needs
// the per-rank weighting), plain SGD so that a gradient of the wrong scale would show in the
// weights (Adam would normalise it away), with a rate small enough for this network to stay
// stable. 4 iterations of 4 images = 2 epochs of the 8 images: the second reshuffles.
std::string qat_config(const std::string& name, const std::string& out, int batch_per_process) {
  return write_temp_file("dist_configs/" + name + ".yml", "Global:\n  model: " + kModel +
                                                              "\n  data: " + data_config() +
                                                              "\n  output_dir: " + out +
                                                              "\n  seed: 7\n" + R"(Distillation:
  node: [logits]
  ce_weight: 0.5
QuantAware:
  quantize_op_types: [conv2d, conv2d_transpose]
QuantPost:
  algo: abs_max
  batch_size: 2
  batch_nums: 1
TrainConfig:
  train_iter: 4
  eval_iter: 2
  checkpoint_every: 1
  num_workers: 1
  learning_rate: 0.000001
  optimizer_builder:
    optimizer:
      type: SGD
  batch_size: )" + std::to_string(batch_per_process) + "\n");
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

Checkpoint final_checkpoint(const std::string& out) {
  auto ckpt = load_checkpoint(out + "/checkpoint");
  if (!ckpt) throw std::runtime_error("no checkpoint in " + out);
  return *ckpt;
}

std::vector<std::string> temporary_files(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      found.push_back(e.path().string());
  return found;
}

// Two runs trained alike: same iteration, weights (and scales, observer states) within float
// tolerance, and, the sharper test, the same update. Training moves the weights by about 1e-4
// here, so the update is compared relative to its own size: a run with its batch split across
// processes sums the same per-sample gradients in another order, which leaves about 2e-5 of it
// different; a rank that trains on the wrong images, or cross entropy averaged per rank instead
// of over the global batch, leaves 5e-2.
void expect_same_training(const std::string& a, const std::string& b) {
  const Checkpoint ca = final_checkpoint(a), cb = final_checkpoint(b);
  EXPECT_EQ(ca.iteration, cb.iteration);
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (const auto& [name, t] : ca.tensors) {
    ASSERT_TRUE(cb.tensors.count(name)) << name;
    if (at::isFloatingType(t.scalar_type()))
      EXPECT_TRUE(all_close(cb.tensors.at(name), t, 1e-5, 1e-7)) << name;
    else
      EXPECT_TRUE(cb.tensors.at(name).equal(t)) << name;
  }
  ASSERT_EQ(ca.observer_states.size(), cb.observer_states.size());
  for (const auto& [name, state] : ca.observer_states) {
    const auto& other = cb.observer_states.at(name);
    ASSERT_EQ(state.size(), other.size()) << name;
    for (size_t i = 0; i < state.size(); ++i)
      EXPECT_NEAR(other[i], state[i], 1e-5 * std::abs(state[i])) << name << "[" << i << "]";
  }
  const onnx::ModelProto start = passes::fold_batchnorm(load_model(kModel));
  double update = 0, difference = 0;
  for (const auto& init : start.graph().initializer()) {
    if (!ca.tensors.count(init.name()) || init.data_type() != onnx::TensorProto::FLOAT) continue;
    const at::Tensor before = tensor_from_proto(init).to(at::kDouble);
    const at::Tensor da = ca.tensors.at(init.name()).to(at::kDouble) - before;
    const at::Tensor db = cb.tensors.at(init.name()).to(at::kDouble) - before;
    update += da.pow(2).sum().item<double>();
    difference += (db - da).pow(2).sum().item<double>();
  }
  ASSERT_GT(update, 0) << "training did not move the weights";
  EXPECT_LT(std::sqrt(difference / update), 1e-3)
      << "|update difference| " << std::sqrt(difference) << " of |update| " << std::sqrt(update);
}

void expect_identical(const std::string& a, const std::string& b) {
  const Checkpoint ca = final_checkpoint(a), cb = final_checkpoint(b);
  EXPECT_EQ(ca.iteration, cb.iteration);
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (const auto& [name, t] : ca.tensors) EXPECT_TRUE(cb.tensors.at(name).equal(t)) << name;
  EXPECT_EQ(ca.observer_states, cb.observer_states);
  EXPECT_EQ(read_file(a + "/model.onnx", "model"), read_file(b + "/model.onnx", "model"));
}

// The uninterrupted 2-process run (2 images per process), shared by the tests that need it.
// (Not 1 image: LibTorch's CPU convolution takes another code path for a batch of one, whose
// last-bit differences the fake quantization then turns into different rounding decisions.)
const std::string& two_process_run() {
  static const std::string out = [] {
    const std::string dir = temp_dir() + "/dist_two";
    const auto r = run_cli("compress --config " + qat_config("two", dir, 2) +
                           " --nproc 2 --threads 1 --dist-timeout 60");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return dir;
  }();
  return out;
}

TEST(DistCompress, TwoProcessesTrainLikeOneWithTheGlobalBatch) {
  const std::string one = temp_dir() + "/dist_one";
  const auto r = run_cli("compress --config " + qat_config("one", one, 4) + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string& two = two_process_run();
  ASSERT_TRUE(fs::exists(two + "/compress_report.json"));

  const auto r1 = read_json(one + "/compress_report.json");
  const auto r2 = read_json(two + "/compress_report.json");
  EXPECT_EQ(r2["processes"], 2);
  EXPECT_EQ(r2["qat"]["global_batch_size"], 4);
  EXPECT_EQ(r1["qat"]["global_batch_size"], 4);
  // Rank 0 evaluates FP32 and calibrates exactly as the single process does.
  EXPECT_EQ(r1["fp32"]["miou"], r2["fp32"]["miou"]);
  EXPECT_EQ(r1["ptq"]["miou"], r2["ptq"]["miou"]);
  EXPECT_EQ(r1["qat"]["best_iteration"], r2["qat"]["best_iteration"]);
  // The INT8 evaluation rounds weights and activations: the few that sit on a rounding
  // boundary may fall the other way and move some pixels of the 4 small val images (0.06
  // points here).
  EXPECT_NEAR(r1["int8"]["miou"].get<double>(), r2["int8"]["miou"].get<double>(), 2e-3);
  EXPECT_NEAR(r1["qat"]["best_val"]["miou"].get<double>(),
              r2["qat"]["best_val"]["miou"].get<double>(), 2e-3);

  EXPECT_EQ(final_checkpoint(one).iteration, 4);
  expect_same_training(one, two);
}

TEST(DistCompress, AKilledRankIsNamedAndResumeFinishesWithAnyProcessCount) {
  const std::string& full = two_process_run();
  const std::string killed = temp_dir() + "/dist_killed";
  const std::string cfg = qat_config("killed", killed, 2);
  const auto k = run_cli("compress --config " + cfg + " --nproc 2 --threads 1 --dist-timeout 20",
                         "SEGSLIM_TEST_KILL_AFTER_ITER=2 SEGSLIM_TEST_KILL_RANK=1");
  ASSERT_NE(k.exit_code, 0) << k.output;
  // The surviving rank names the dead one, and so does the launcher.
  EXPECT_NE(k.output.find("segslim: error: [rank 0] stopped: rank 1 (pid "), std::string::npos)
      << k.output;
  EXPECT_NE(k.output.find("was killed by signal 9 (SIGKILL); the job stopped"), std::string::npos)
      << k.output;
  EXPECT_FALSE(fs::exists(killed + "/compress_report.json")) << "no report before the end";
  EXPECT_EQ(temporary_files(killed), std::vector<std::string>{});
  EXPECT_EQ(final_checkpoint(killed).iteration, 2);

  // Resumed with 2 processes: exactly the uninterrupted run.
  const std::string killed_copy = temp_dir() + "/dist_killed_copy";
  fs::remove_all(killed_copy);
  fs::copy(killed, killed_copy, fs::copy_options::recursive);
  const auto a = run_cli("compress --config " + cfg + " --nproc 2 --threads 1 --resume");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_NE(a.output.find("resuming from"), std::string::npos) << a.output;
  EXPECT_EQ(read_json(killed + "/compress_report.json")["qat"]["resumed"], true);
  expect_identical(full, killed);

  // Resumed with 1 process and the same global batch (4 images): the same training.
  const auto b = run_cli("compress --config " + qat_config("killed_copy", killed_copy, 4) +
                         " --threads 1 --resume");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("resuming from"), std::string::npos) << b.output;
  const auto report = read_json(killed_copy + "/compress_report.json");
  EXPECT_EQ(report["processes"], 1);
  EXPECT_EQ(final_checkpoint(killed_copy).iteration, 4);
  expect_same_training(full, killed_copy);
}

// Starts `command` through the shell with its output in `log`; returns the pid.
pid_t start(const std::string& command, const std::string& log);
int wait_exit_code(pid_t pid);

// Two machines, simulated by two launchers on this one: the same command on both, each with
// its --node-rank. The job has the same ranks as `--nproc 2`, so it trains identically.
TEST(DistCompress, LaunchersOnTwoMachinesFormOneJob) {
  const std::string& local = two_process_run();
  const std::string out = temp_dir() + "/dist_nodes";
  const std::string command = std::string(SEGSLIM_CLI) + " compress --config " +
                              qat_config("nodes", out, 2) +
                              " --threads 1 --nproc 1 --nnodes 2 --master-addr 127.0.0.1"
                              " --master-port " +
                              std::to_string(free_port()) + " --node-rank ";
  const std::string log0 = temp_dir() + "/dist_node0.log", log1 = temp_dir() + "/dist_node1.log";
  const pid_t node1 = start(command + "1", log1);
  const pid_t node0 = start(command + "0", log0);
  EXPECT_EQ(wait_exit_code(node0), 0) << read_file(log0, "log");
  EXPECT_EQ(wait_exit_code(node1), 0) << read_file(log1, "log");
  EXPECT_EQ(read_json(out + "/compress_report.json")["processes"], 2);
  expect_identical(local, out);
}

// Starts `command` through the shell with its output in `log`; returns the pid.
pid_t start(const std::string& command, const std::string& log) {
  const std::string line = command + " > " + log + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Without a launcher (machines started separately, or by torchrun): rank 0 serves the store,
// and a rank that dies is named from its missing heartbeat.
TEST(DistCompress, WorkersJoinedThroughTheEnvironmentNameADeadPeer) {
  const std::string out = temp_dir() + "/dist_env";
  const std::string cfg = qat_config("env", out, 2);
  const std::string job =
      "env WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) +
      " SEGSLIM_TEST_KILL_AFTER_ITER=1 SEGSLIM_TEST_KILL_RANK=1";
  const std::string args = std::string(" ") + SEGSLIM_CLI + " compress --config " + cfg +
                           " --threads 1 --dist-timeout 6";
  const std::string log0 = temp_dir() + "/dist_env_rank0.log";
  const std::string log1 = temp_dir() + "/dist_env_rank1.log";
  const pid_t rank1 = start(job + " RANK=1 LOCAL_RANK=1" + args, log1);
  const pid_t rank0 = start(job + " RANK=0 LOCAL_RANK=0" + args, log0);
  const int code0 = wait_exit_code(rank0);
  const int code1 = wait_exit_code(rank1);
  const std::string out0 = read_file(log0, "log"), out1 = read_file(log1, "log");
  EXPECT_EQ(code1, 128 + SIGKILL) << out1;
  EXPECT_EQ(code0, 1) << out0;
  EXPECT_NE(out0.find("segslim: error: [rank 0] stopped: rank 1 stopped responding"),
            std::string::npos)
      << out0;
  EXPECT_FALSE(fs::exists(out + "/compress_report.json"));
  EXPECT_EQ(temporary_files(out), std::vector<std::string>{});
}

void expect_user_error(const std::string& args, const std::string& env,
                       const std::string& message) {
  const auto r = run_cli(args, env);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("segslim: error: " + message), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[launcher] starting"), std::string::npos) << r.output;
}

TEST(DistCompress, UserErrorsNameTheValue) {
  const std::string cfg = qat_config("errors", temp_dir() + "/dist_errors", 1);
  const std::string compress = "compress --config " + cfg + " --threads 1";
  expect_user_error(compress + " --nproc 0", "", "--nproc 0: must be at least 1");
  expect_user_error(compress + " --nproc 2 --nnodes 2 --node-rank 2", "",
                    "--node-rank 2 is not in [0, 2)");
  expect_user_error(compress, "RANK=abc WORLD_SIZE=2",
                    "environment variable RANK='abc' is not a non-negative integer");
  expect_user_error(compress, "RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500",
                    "environment variable RANK=2 is not below WORLD_SIZE=2");
  expect_user_error(compress, "RANK=0 WORLD_SIZE=2", "environment variable MASTER_ADDR is not set");
  expect_user_error(compress + " --nproc 2", "RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1",
                    "--nproc 2 inside a job");

  // A port that is taken.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  expect_user_error(
      compress + " --nproc 2 --master-port " + port, "",
      "cannot host the rendezvous store on port " + port + " (--master-port): the port is in use");
  expect_user_error(compress + " --nproc 2", "MASTER_PORT=" + port,
                    "cannot host the rendezvous store on port " + port + " (MASTER_PORT)");
  ::close(fd);
  EXPECT_FALSE(fs::exists(temp_dir() + "/dist_errors/model.onnx"));
}

}  // namespace
}  // namespace segslim::testing

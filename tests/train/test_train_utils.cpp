// LR schedules, optimizers and checkpoints against expectations computed by hand (plain doubles,
// independent of torch::optim).
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "support/test_support.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"

namespace segslim {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- LrSchedule

TEST(LrSchedule, Constant) {
  LearningRateConfig c;
  c.learning_rate = 0.1;
  LrSchedule s(c, 1000);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(999), 0.1);
}

TEST(LrSchedule, CosineDefaultTMaxIsTotal) {
  LearningRateConfig c;
  c.type = "CosineAnnealingDecay";
  c.learning_rate = 0.1;
  LrSchedule s(c, 1000);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_NEAR(s.at(500), 0.05, 1e-15);  // cos(pi/2) = 0: half of the base
  // (1 + cos(pi/4)) / 2 = (1 + 0.70710678...) / 2
  EXPECT_NEAR(s.at(250), 0.1 * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_NEAR(s.at(1000), 0.0, 1e-15);
  EXPECT_NEAR(s.at(1500), 0.0, 1e-15);  // held at the floor after T_max
}

TEST(LrSchedule, CosineExplicitTMaxAndEtaMin) {
  LearningRateConfig c;
  c.type = "CosineAnnealingDecay";
  c.learning_rate = 0.1;
  c.T_max = 100;
  c.eta_min = 0.01;
  LrSchedule s(c, 1000);
  EXPECT_NEAR(s.at(50), 0.01 + (0.1 - 0.01) / 2, 1e-15);
  EXPECT_NEAR(s.at(100), 0.01, 1e-15);
}

TEST(LrSchedule, PiecewiseBoundaries) {
  LearningRateConfig c;
  c.type = "PiecewiseDecay";
  c.boundaries = {10, 20};
  c.values = {0.1, 0.01, 0.001};
  LrSchedule s(c, 100);
  EXPECT_EQ(s.at(0), 0.1);
  EXPECT_EQ(s.at(9), 0.1);
  EXPECT_EQ(s.at(10), 0.01);  // a boundary belongs to the next piece
  EXPECT_EQ(s.at(19), 0.01);
  EXPECT_EQ(s.at(20), 0.001);
  EXPECT_EQ(s.at(99), 0.001);
}

TEST(LrSchedule, LinearWarmup) {
  LearningRateConfig c;
  c.learning_rate = 0.1;
  c.warmup_steps = 100;
  c.warmup_start_lr = 0.02;
  LrSchedule constant(c, 1000);
  EXPECT_DOUBLE_EQ(constant.at(0), 0.02);
  EXPECT_DOUBLE_EQ(constant.at(50), (0.02 + 0.1) / 2);  // midpoint
  EXPECT_DOUBLE_EQ(constant.at(25), 0.02 + (0.1 - 0.02) * 0.25);
  EXPECT_DOUBLE_EQ(constant.at(100), 0.1);

  // Warm-up towards the cosine's value at the end of warm-up, s(100).
  c.type = "CosineAnnealingDecay";
  c.warmup_start_lr = 0;
  LrSchedule cosine(c, 1000);
  const double s100 = 0.1 * (1 + std::cos(M_PI * 100 / 1000)) / 2;
  EXPECT_NEAR(cosine.at(50), s100 / 2, 1e-15);
  EXPECT_NEAR(cosine.at(100), s100, 1e-15);
  EXPECT_NEAR(cosine.at(500), 0.05, 1e-15);
}

// ---------------------------------------------------------------- Optimizer
// f(p) = sum(0.5 * a * p^2), so df/dp = a * p. p0 = [1, -2], a = [1, 3].

const std::vector<double> kP0 = {1.0, -2.0};
const std::vector<double> kA = {1.0, 3.0};

at::Tensor make_param(const std::vector<double>& v = kP0) {
  return at::tensor(v, at::kDouble).set_requires_grad(true);
}

void backward(const at::Tensor& p) {
  const at::Tensor a = at::tensor(kA, at::kDouble);
  (0.5 * a * p * p).sum().backward();
}

std::vector<double> values(const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void expect_near(const std::vector<double>& actual, const std::vector<double>& expected,
                 double tol = 1e-12) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_NEAR(actual[i], expected[i], tol) << "element " << i;
}

// Runs `steps` optimizer steps at `lr` and returns the parameter.
std::vector<double> run(const OptimizerConfig& c, int steps, double lr) {
  at::Tensor p = make_param();
  Optimizer opt(c, {p});
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    backward(p);
    opt.step(lr);
  }
  return values(p);
}

TEST(Optimizer, SgdWithCoupledWeightDecay) {
  OptimizerConfig c;
  c.type = "SGD";
  c.weight_decay = 0.01;
  // g = a p + wd p = [1.01, -6.02]; p1 = p0 - 0.1 g
  expect_near(run(c, 1, 0.1), {1 - 0.101, -2 + 0.602});
}

TEST(Optimizer, MomentumTwoSteps) {
  OptimizerConfig c;
  c.type = "Momentum";
  c.momentum = 0.9;
  c.weight_decay = 0.01;
  std::vector<double> p = kP0, v = {0, 0};
  for (int s = 0; s < 2; ++s)
    for (size_t i = 0; i < 2; ++i) {
      const double g = kA[i] * p[i] + 0.01 * p[i];
      v[i] = 0.9 * v[i] + g;
      p[i] -= 0.1 * v[i];
    }
  expect_near(run(c, 2, 0.1), p);
  // Without decay the numbers are round: p1 = [0.9, -1.4], v2 = [1.8, -9.6], p2 = [0.72, -0.44].
  c.weight_decay = 0;
  expect_near(run(c, 2, 0.1), {0.72, -0.44});
}

// Adam / AdamW by hand: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
std::vector<double> adam_by_hand(bool decoupled, double wd, int steps, double lr) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<double> p = kP0, m = {0, 0}, v = {0, 0};
  for (int t = 1; t <= steps; ++t)
    for (size_t i = 0; i < 2; ++i) {
      double g = kA[i] * p[i];
      if (decoupled)
        p[i] *= 1 - lr * wd;
      else
        g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  return p;
}

TEST(Optimizer, AdamCoupledWeightDecay) {
  OptimizerConfig c;
  c.type = "Adam";
  c.weight_decay = 0.05;
  // First step: mhat / sqrt(vhat) = sign(g): p1 = p0 - lr * sign(g) (up to eps).
  expect_near(run(c, 1, 0.1), {0.9, -1.9}, 1e-7);
  expect_near(run(c, 3, 0.1), adam_by_hand(false, 0.05, 3, 0.1));
}

TEST(Optimizer, AdamWDecoupledWeightDecay) {
  OptimizerConfig c;
  c.type = "AdamW";
  c.weight_decay = 0.05;
  // First step: p1 = p0 (1 - lr wd) - lr sign(g) = [0.995 - 0.1, -1.99 + 0.1].
  expect_near(run(c, 1, 0.1), {0.895, -1.89}, 1e-7);
  expect_near(run(c, 3, 0.1), adam_by_hand(true, 0.05, 3, 0.1));
  // Coupled and decoupled decay differ once the moments are non-trivial.
  EXPECT_NE(adam_by_hand(true, 0.05, 3, 0.1), adam_by_hand(false, 0.05, 3, 0.1));
}

TEST(Optimizer, GradClipByGlobalNorm) {
  OptimizerConfig c;
  c.type = "SGD";
  c.grad_clip = 1.0;
  // g = [1, -6], |g| = sqrt(37) > 1: g -> g / sqrt(37); lr = 1.
  const double n = std::sqrt(37.0);
  expect_near(run(c, 1, 1.0), {1 - 1 / n, -2 + 6 / n});
  c.grad_clip = 10.0;  // |g| < 10: untouched
  expect_near(run(c, 1, 1.0), {0.0, 4.0});
}

TEST(Optimizer, StepSetsLearningRateEachCall) {
  OptimizerConfig c;
  at::Tensor p = make_param();
  Optimizer opt(c, {p});
  opt.zero_grad();
  backward(p);
  opt.step(0.1);  // p1 = [0.9, -1.4]
  opt.zero_grad();
  backward(p);
  opt.step(0.5);  // g1 = [0.9, -4.2]; p2 = p1 - 0.5 g1 = [0.45, 0.7]
  expect_near(values(p), {0.45, 0.7});
}

TEST(Optimizer, SaveLoadContinuesIdentically) {
  for (const char* type : {"Momentum", "Adam", "AdamW"}) {
    SCOPED_TRACE(type);
    OptimizerConfig c;
    c.type = type;
    c.weight_decay = 0.01;
    const std::string path =
        (fs::path(testing::temp_dir()) / "optim" / (std::string(type) + ".pt")).string();

    at::Tensor a = make_param();
    Optimizer opt_a(c, {a});
    auto step = [](Optimizer& o, at::Tensor& p, double lr) {
      o.zero_grad();
      backward(p);
      o.step(lr);
    };
    for (int i = 0; i < 3; ++i) step(opt_a, a, 0.05);
    opt_a.save(path);
    EXPECT_TRUE(fs::is_regular_file(path));

    at::Tensor b = make_param(values(a));
    Optimizer opt_b(c, {b});
    opt_b.load(path);
    at::Tensor fresh = make_param(values(a));  // same weights, no state: must diverge
    Optimizer opt_fresh(c, {fresh});
    for (int i = 0; i < 3; ++i) {
      step(opt_a, a, 0.05);
      step(opt_b, b, 0.05);
      step(opt_fresh, fresh, 0.05);
    }
    EXPECT_EQ(values(a), values(b));
    EXPECT_NE(values(a), values(fresh));
  }
}

TEST(Optimizer, LoadCorruptOrMissingNamesFile) {
  OptimizerConfig c;
  c.type = "Adam";
  at::Tensor p = make_param();
  Optimizer opt(c, {p});
  const std::string bad = testing::write_temp_file("optim_bad.pt", "not a zip archive");
  try {
    opt.load(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_THROW(opt.load(bad + ".missing"), Error);
}

// ---------------------------------------------------------------- Checkpoint

Checkpoint sample_checkpoint() {
  Checkpoint ck;
  ck.iteration = 1234;
  ck.epoch = 7;
  ck.best_miou = 0.7125;
  ck.tensors["conv1.weight"] =
      at::arange(24, at::kFloat).reshape({2, 3, 2, 2}).set_requires_grad(true);
  ck.tensors["/backbone/Conv_0/input_scale"] = at::scalar_tensor(0.0125, at::kFloat);
  ck.tensors["x_zero_point"] = at::tensor(std::vector<int64_t>{-3, 0, 5}).to(at::kChar);
  ck.tensors["bn:running_var"] = at::rand({5}, at::kDouble);
  ck.observer_states["conv1_input"] = {0.9, -1.5, 2.25};
  ck.observer_states["empty"] = {};
  ck.extra_json = R"({"model": "m.onnx", "note": "ü"})";
  return ck;
}

TEST(Checkpoint, RoundTrip) {
  const std::string dir = (fs::path(testing::temp_dir()) / "ckpt_roundtrip").string();
  fs::remove_all(dir);
  EXPECT_FALSE(load_checkpoint(dir));  // nothing there yet
  const Checkpoint ck = sample_checkpoint();
  save_checkpoint(dir, ck);
  const auto loaded = load_checkpoint(dir);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->iteration, 1234);
  EXPECT_EQ(loaded->epoch, 7);
  EXPECT_EQ(loaded->best_miou, 0.7125);
  ASSERT_EQ(loaded->tensors.size(), ck.tensors.size());
  for (const auto& [name, t] : ck.tensors) {
    ASSERT_TRUE(loaded->tensors.count(name)) << name;
    const at::Tensor& l = loaded->tensors.at(name);
    EXPECT_EQ(l.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(l.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(l, t.detach())) << name;
  }
  EXPECT_EQ(loaded->observer_states, ck.observer_states);
  EXPECT_EQ(loaded->extra_json, ck.extra_json);

  // The human-readable side file, and no temporaries left behind.
  std::ifstream js(fs::path(dir) / "checkpoint.json");
  const std::string json((std::istreambuf_iterator<char>(js)), {});
  EXPECT_NE(json.find("\"iteration\": 1234"), std::string::npos) << json;
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();

  // Overwriting replaces the pair.
  Checkpoint next = ck;
  next.iteration = 2000;
  next.tensors.erase("bn:running_var");
  save_checkpoint(dir, next);
  const auto again = load_checkpoint(dir);
  EXPECT_EQ(again->iteration, 2000);
  EXPECT_EQ(again->tensors.size(), ck.tensors.size() - 1);
}

TEST(Checkpoint, TruncatedIsAnErrorNamingTheFile) {
  const std::string dir = (fs::path(testing::temp_dir()) / "ckpt_truncated").string();
  fs::remove_all(dir);
  save_checkpoint(dir, sample_checkpoint());
  const fs::path pt = fs::path(dir) / "checkpoint.pt";
  std::string bytes;
  {
    std::ifstream in(pt, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 100u);
  std::ofstream(pt, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  try {
    load_checkpoint(dir);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(pt.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace segslim

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "quant/observer.h"
#include "support/test_support.h"

namespace segslim {
namespace {

at::Tensor d(std::initializer_list<double> v) { return at::tensor(std::vector<double>(v)); }

// The abs-max a symmetric int8 observer settled on.
double threshold_of(const Observer& o) { return o.params().scale * o.params().qmax; }

// Mean squared error of fake quantization with the given parameters, in double.
double fq_mse(const at::Tensor& x, const QuantParams& p) {
  return (fake_quantize(x, p) - x).pow(2).mean().item<double>();
}

// 100000 exponential samples (deterministic inverse CDF, alternating signs, max ~12.2) plus
// one outlier at 30: a long-tailed activation where clipping the outlier pays off.
at::Tensor long_tailed() {
  const int64_t n = 100000;
  at::Tensor u = (at::arange(n, at::kDouble) + 0.5) / n;
  at::Tensor sign = 1 - 2 * (at::arange(n, at::kLong) % 2).to(at::kDouble);
  at::Tensor x = -at::log1p(-u) * sign;
  return at::cat({x, d({30.0})});
}

TEST(Observer, NamesAndErrors) {
  EXPECT_EQ(observer_algos().size(), 7u);
  for (const std::string& a : observer_algos()) EXPECT_EQ(make_observer(a)->name(), a);
  EXPECT_EQ(make_observer("kl")->name(), "KL");
  EXPECT_EQ(make_observer("ABS_MAX")->name(), "abs_max");
  EXPECT_EQ(make_observer("Moving_Average_Abs_Max")->name(), "moving_average_abs_max");
  try {
    make_observer("percentile");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("percentile"), std::string::npos) << m;
    EXPECT_NE(m.find("moving_average_abs_max"), std::string::npos) << m;
    EXPECT_NE(m.find("KL"), std::string::npos) << m;
  }
  ObserverOptions asym;
  asym.symmetric = false;
  EXPECT_THROW(make_observer("hist", asym), Error);
  EXPECT_NO_THROW(make_observer("min_max", asym));
  ObserverOptions few_bins;
  few_bins.bins = 64;
  EXPECT_THROW(make_observer("KL", few_bins), Error);  // fewer bins than 128 levels
  ObserverOptions bad_rate;
  bad_rate.moving_rate = 1.0;
  EXPECT_THROW(make_observer("moving_average_abs_max", bad_rate), Error);
}

TEST(Observer, NotReadyBeforeDataAndRejectsNaN) {
  for (const std::string& a : observer_algos()) {
    auto o = make_observer(a);
    EXPECT_FALSE(o->ready()) << a;
    o->observe(at::empty({0}));
    EXPECT_FALSE(o->ready()) << a;
    EXPECT_EQ(o->params().scale, kMinScale) << a;
    EXPECT_THROW(o->observe(d({1.0, std::nan("")})), Error) << a;
  }
}

TEST(Observer, AbsMax) {
  auto o = make_observer("abs_max");
  o->observe(d({1, -3}));
  o->observe(d({2, 0.5}));
  o->observe(d({-2.5}));
  EXPECT_TRUE(o->ready());
  EXPECT_DOUBLE_EQ(o->params().scale, 3.0 / 127);
  EXPECT_EQ(o->params().zero_point, 0);
}

TEST(Observer, MinMaxSymmetricAndAsymmetric) {
  ObserverOptions asym;
  asym.symmetric = false;
  auto s = make_observer("min_max");
  auto a = make_observer("min_max", asym);
  for (auto* o : {s.get(), a.get()}) {
    o->observe(d({-1, 2}));
    o->observe(d({0.5, -4}));
  }
  EXPECT_DOUBLE_EQ(s->params().scale, 4.0 / 127);
  // [-4, 2]: scale 6/255, zero point round(4 / (6/255)) = round(170) = 170.
  EXPECT_DOUBLE_EQ(a->params().scale, 6.0 / 255);
  EXPECT_EQ(a->params().zero_point, 170);
  EXPECT_EQ(a->params().qmin, 0);
  EXPECT_EQ(a->params().qmax, 255);
}

TEST(Observer, MovingAverageAbsMaxIsPaddleFormula) {
  auto o = make_observer("moving_average_abs_max");  // rate 0.9
  o->observe(d({2, -1}));
  EXPECT_DOUBLE_EQ(threshold_of(*o), 2.0);  // the first batch initialises
  o->observe(d({-4}));
  o->observe(d({1, 0.5}));
  // accum: 2 -> 0.9*2 + 4 = 5.8 -> 0.9*5.8 + 1 = 6.22; state: 1 -> 1.9 -> 2.71.
  EXPECT_NEAR(threshold_of(*o), 6.22 / 2.71, 1e-12);
  std::vector<double> st = o->state();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_NEAR(st[0], 6.22, 1e-12);
  EXPECT_NEAR(st[1], 2.71, 1e-12);
}

TEST(Observer, AvgOfBatchAbsMax) {
  auto o = make_observer("avg");
  o->observe(d({2, -1}));
  o->observe(d({-4}));
  o->observe(d({1, 0.5}));
  EXPECT_NEAR(threshold_of(*o), 7.0 / 3, 1e-12);
}

// |x| of 1..10000 (negative values, shuffled, split unevenly so the range grows and the
// histogram is re-binned twice): the 90 % threshold is 9000 within a bin or two.
TEST(Observer, HistPercentileOnKnownDistribution) {
  ObserverOptions opt;
  opt.hist_percent = 0.9;
  const double w = 10000.0 / opt.bins;
  at::Tensor x = -(at::arange(1, 10001, at::kDouble));
  {
    auto o = make_observer("hist", opt);
    o->observe(x);
    EXPECT_NEAR(threshold_of(*o), 9000, w);
  }
  {
    auto o = make_observer("hist", opt);
    o->observe(x.slice(0, 0, 3000));
    o->observe(x.slice(0, 3000, 7001).flip(0));
    o->observe(x.slice(0, 7001).to(at::kFloat));
    EXPECT_NEAR(threshold_of(*o), 9000, 2 * w);
    // Re-binning conserves mass: the counts still sum to the number of values.
    std::vector<double> st = o->state();
    ASSERT_EQ(st.size(), 2u + opt.bins);
    double total = 0;
    for (size_t i = 2; i < st.size(); ++i) total += st[i];
    EXPECT_NEAR(total, 10000, 1e-6);
    EXPECT_DOUBLE_EQ(st[1], 10000);  // range = largest |x|
  }
}

// Naive TensorRT entropy calibration, written from the slides ("8-bit Inference with
// TensorRT"), independently of the observer: its own histogram, group edges from
// linspace(0, i, 129) like numpy.digitize, KL via explicit normalisation.
double naive_kl_threshold(const at::Tensor& x, int bins) {
  std::vector<double> v(x.numel());
  at::Tensor a = x.abs().contiguous();
  std::copy(a.data_ptr<double>(), a.data_ptr<double>() + a.numel(), v.begin());
  double range = 0;
  for (double e : v) range = std::max(range, e);
  std::vector<double> hist(bins, 0.0);
  for (double e : v) {
    int b = static_cast<int>(std::floor(e * (bins / range)));
    hist[std::min(b, bins - 1)] += 1;
  }
  const int levels = 128;
  double best = std::numeric_limits<double>::infinity();
  int best_i = bins;
  for (int i = levels; i <= bins; ++i) {
    std::vector<double> p(hist.begin(), hist.begin() + i);
    for (int j = i; j < bins; ++j) p[i - 1] += hist[j];
    // group of bin j: the number of edges k * i / 128 (k = 0..128) that are <= j, minus 1
    std::vector<int> group(i);
    for (int j = 0; j < i; ++j) {
      int n = 0;
      for (int k = 0; k <= levels; ++k) n += (static_cast<double>(k) * i / levels <= j);
      group[j] = n - 1;
    }
    std::vector<double> gsum(levels, 0.0), gnz(levels, 0.0);
    for (int j = 0; j < i; ++j)
      if (hist[j] != 0) gsum[group[j]] += hist[j], gnz[group[j]] += 1;
    std::vector<double> q(i, 0.0);
    for (int j = 0; j < i; ++j)
      if (hist[j] != 0) q[j] = gsum[group[j]] / gnz[group[j]];
    double ps = 0, qs = 0;
    for (int j = 0; j < i; ++j) ps += p[j], qs += q[j];
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      if (p[j] == 0) continue;
      if (q[j] == 0) {
        kl = std::numeric_limits<double>::infinity();
        break;
      }
      kl += p[j] / ps * std::log((p[j] / ps) / (q[j] / qs));
    }
    if (kl < best) best = kl, best_i = i;
  }
  return best_i * range / bins;
}

TEST(Observer, KLMatchesNaiveTensorRTAndClipsOutlier) {
  at::Tensor x = long_tailed();
  auto o = make_observer("KL");
  o->observe(x.slice(0, 0, 50000));
  o->observe(x.slice(0, 50000));  // contains the outlier: the range grows, re-binning
  auto single = make_observer("KL");
  single->observe(x);
  const double t = threshold_of(*single);
  EXPECT_NEAR(t, naive_kl_threshold(x, 2048), 1e-9);
  EXPECT_LT(t, 30.0);
  EXPECT_GT(t, 3.0);
  EXPECT_LT(threshold_of(*o), 30.0);
  EXPECT_LT(fq_mse(x, single->params()), fq_mse(x, symmetric_params(30.0)));
}

TEST(Observer, MseBeatsAbsMaxAndIsNearBestOnData) {
  at::Tensor x = long_tailed();
  auto o = make_observer("mse");
  o->observe(x);
  const double t = threshold_of(*o);
  EXPECT_LT(t, 30.0);
  const double chosen = fq_mse(x, o->params());
  EXPECT_LE(chosen, fq_mse(x, symmetric_params(30.0)));
  // Brute force over thresholds on the actual data: the histogram model's pick is close to
  // the true optimum.
  double best = std::numeric_limits<double>::infinity();
  for (int k = 1; k <= 300; ++k) best = std::min(best, fq_mse(x, symmetric_params(k * 0.1)));
  EXPECT_LE(chosen, 1.05 * best) << "threshold " << t;
}

TEST(Observer, StateRoundTrip) {
  at::Tensor x = long_tailed();
  ObserverOptions asym;
  asym.symmetric = false;
  for (const std::string& a : observer_algos()) {
    for (bool sym : {true, false}) {
      if (!sym && a != "min_max") continue;
      ObserverOptions opt;
      opt.symmetric = sym;
      auto o1 = make_observer(a, opt);
      o1->observe(x.slice(0, 0, 30000));
      o1->observe(x.slice(0, 30000, 60000) * 0.5);
      auto o2 = make_observer(a, opt);
      o2->load_state(o1->state());
      EXPECT_TRUE(o2->ready()) << a;
      EXPECT_EQ(o2->state(), o1->state()) << a;
      EXPECT_EQ(o2->params().scale, o1->params().scale) << a;
      EXPECT_EQ(o2->params().zero_point, o1->params().zero_point) << a;
      o1->observe(x.slice(0, 60000));
      o2->observe(x.slice(0, 60000));
      EXPECT_EQ(o2->params().scale, o1->params().scale) << a;
      o2->reset();
      EXPECT_FALSE(o2->ready()) << a;
      EXPECT_THROW(o2->load_state({1.0, 2.0, 3.0, 4.0}), Error) << a;
    }
  }
}

TEST(Observer, DeviceGivesSameParams) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::Tensor x = long_tailed().to(at::kFloat);
  for (const std::string& a : observer_algos()) {
    auto cpu = make_observer(a), gpu = make_observer(a);
    cpu->observe(x);
    gpu->observe(x.to(at::kCUDA));
    EXPECT_DOUBLE_EQ(gpu->params().scale, cpu->params().scale) << a;
  }
}

}  // namespace
}  // namespace segslim

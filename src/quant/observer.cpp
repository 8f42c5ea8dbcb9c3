#include "quant/observer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace segslim {
namespace {

// |x| as a floating tensor without autograd history (half / bfloat16 widened to float so the
// histogram arithmetic below is exact enough; double stays double).
at::Tensor abs_of(const at::Tensor& x) {
  at::Tensor a = x.detach().abs();
  if (a.scalar_type() != at::kDouble) a = a.to(at::kFloat);
  return a;
}

double checked(double v, const std::string& who) {
  SEGSLIM_CHECK(std::isfinite(v), "observer '", who, "' got a non-finite value (", v,
                ") in an activation: training has diverged or the input is corrupt");
  return v;
}

// The summary of an empty tensor: the identity of max.
constexpr double kNoData = -std::numeric_limits<double>::infinity();

double abs_max_summary(const at::Tensor& x, const std::string& who) {
  if (x.numel() == 0) return kNoData;
  return checked(abs_of(x).max().item<double>(), who);
}

void check_summary_size(const std::vector<double>& s, size_t expected, const std::string& who) {
  SEGSLIM_CHECK(s.size() == expected, "observer '", who, "': a batch summary has ", s.size(),
                " values, expected ", expected);
}

void check_state_size(const std::vector<double>& s, size_t expected, const std::string& who) {
  SEGSLIM_CHECK(s.size() == expected, "observer '", who, "': checkpoint state has ", s.size(),
                " values, expected ", expected, " (saved by another algorithm or bin count?)");
}

// Observers whose batch statistic is a summary (Observer::batch_summary): observe() is
// exactly observe_summary(batch_summary(x)).
class SummaryObserver : public Observer {
 public:
  void observe(const at::Tensor& x) final { observe_summary(batch_summary(x)); }
};

// Observers of the per-batch max |x|: each batch adds one number (add_batch_abs_max).
class AbsMaxSummaryObserver : public SummaryObserver {
 public:
  std::vector<double> batch_summary(const at::Tensor& x) const final {
    return {abs_max_summary(x, name())};
  }
  void observe_summary(const std::vector<double>& s) final {
    check_summary_size(s, 1, name());
    if (s[0] != kNoData) add_batch_abs_max(s[0]);
  }

 protected:
  virtual void add_batch_abs_max(double m) = 0;
};

// ---- abs_max: max |x| over everything seen ----
class AbsMaxObserver : public AbsMaxSummaryObserver {
 public:
  explicit AbsMaxObserver(const ObserverOptions& o) : bits_(o.bits) {}
  QuantParams params() const override { return symmetric_params(seen_ ? abs_max_ : 0, bits_); }
  bool ready() const override { return seen_; }
  void reset() override { seen_ = false, abs_max_ = 0; }
  std::string name() const override { return "abs_max"; }
  std::vector<double> state() const override { return {seen_ ? 1.0 : 0.0, abs_max_}; }
  void load_state(const std::vector<double>& s) override {
    check_state_size(s, 2, name());
    seen_ = s[0] != 0, abs_max_ = s[1];
  }

 private:
  void add_batch_abs_max(double m) override {
    abs_max_ = seen_ ? std::max(abs_max_, m) : m;
    seen_ = true;
  }
  int bits_;
  bool seen_ = false;
  double abs_max_ = 0;
};

// ---- min_max: running min and max ----
class MinMaxObserver : public SummaryObserver {
 public:
  explicit MinMaxObserver(const ObserverOptions& o) : bits_(o.bits), symmetric_(o.symmetric) {}
  // {-min, max}: min(parts) = -max(-part minima), so both merge with max.
  std::vector<double> batch_summary(const at::Tensor& x) const override {
    if (x.numel() == 0) return {kNoData, kNoData};
    at::Tensor d = x.detach();
    const double lo = checked(d.min().item<double>(), name());
    const double hi = checked(d.max().item<double>(), name());
    return {-lo, hi};
  }
  void observe_summary(const std::vector<double>& s) override {
    check_summary_size(s, 2, name());
    if (s[0] == kNoData) return;
    const double lo = -s[0], hi = s[1];
    min_ = seen_ ? std::min(min_, lo) : lo;
    max_ = seen_ ? std::max(max_, hi) : hi;
    seen_ = true;
  }
  QuantParams params() const override {
    if (!seen_) return symmetric_ ? symmetric_params(0, bits_) : asymmetric_params(0, 0, bits_);
    if (symmetric_) return symmetric_params(std::max(std::abs(min_), std::abs(max_)), bits_);
    return asymmetric_params(min_, max_, bits_);
  }
  bool ready() const override { return seen_; }
  void reset() override { seen_ = false, min_ = max_ = 0; }
  std::string name() const override { return "min_max"; }
  std::vector<double> state() const override { return {seen_ ? 1.0 : 0.0, min_, max_}; }
  void load_state(const std::vector<double>& s) override {
    check_state_size(s, 3, name());
    seen_ = s[0] != 0, min_ = s[1], max_ = s[2];
  }

 private:
  int bits_;
  bool symmetric_;
  bool seen_ = false;
  double min_ = 0, max_ = 0;
};

// ---- moving_average_abs_max: PaddleSlim's accum / state pair ----
// Paddle's kernel (FindMovingAverageAbsMaxFunctor):
//   state = rate * state + 1;  accum = rate * accum + absmax;  scale = accum / state.
// With accum = state = 0 initially, accum / state = sum_k rate^(n-k) a_k / sum_k rate^(n-k):
// an exponentially weighted mean whose weights sum to 1 from the first batch on (bias-corrected,
// like Adam's 1 - beta^t). Paddle initialises both to 1 instead, i.e. a prior absmax of 1.
class MovingAverageAbsMaxObserver : public AbsMaxSummaryObserver {
 public:
  explicit MovingAverageAbsMaxObserver(const ObserverOptions& o)
      : bits_(o.bits), rate_(o.moving_rate) {}
  QuantParams params() const override {
    return symmetric_params(state_ > 0 ? accum_ / state_ : 0, bits_);
  }
  bool ready() const override { return state_ > 0; }
  void reset() override { accum_ = state_ = 0; }
  std::string name() const override { return "moving_average_abs_max"; }
  std::vector<double> state() const override { return {accum_, state_}; }
  void load_state(const std::vector<double>& s) override {
    check_state_size(s, 2, name());
    accum_ = s[0], state_ = s[1];
  }

 private:
  void add_batch_abs_max(double m) override {
    state_ = rate_ * state_ + 1;
    accum_ = rate_ * accum_ + m;
  }
  int bits_;
  double rate_;
  double accum_ = 0, state_ = 0;
};

// ---- avg: mean of the per-batch abs-max ----
class AvgObserver : public AbsMaxSummaryObserver {
 public:
  explicit AvgObserver(const ObserverOptions& o) : bits_(o.bits) {}
  QuantParams params() const override {
    return symmetric_params(count_ > 0 ? sum_ / count_ : 0, bits_);
  }
  bool ready() const override { return count_ > 0; }
  void reset() override { sum_ = count_ = 0; }
  std::string name() const override { return "avg"; }
  std::vector<double> state() const override { return {count_, sum_}; }
  void load_state(const std::vector<double>& s) override {
    check_state_size(s, 2, name());
    count_ = s[0], sum_ = s[1];
  }

 private:
  void add_batch_abs_max(double m) override {
    sum_ += m;
    count_ += 1;
  }
  int bits_;
  double count_ = 0, sum_ = 0;
};

// ---- histogram of |x| shared by hist / KL / mse ----
// Bin i covers [i w, (i + 1) w) with w = range / bins; range is the largest |x| seen (which
// therefore always lands in the last bin). When a batch exceeds the range, the old counts are
// re-binned into the wider bins assuming a uniform density inside each old bin (each old bin
// overlaps at most two new ones), so counts become fractional: they are doubles.
class HistogramObserverBase : public Observer {
 public:
  explicit HistogramObserverBase(const ObserverOptions& o)
      : bits_(o.bits), counts_(static_cast<size_t>(o.bins), 0.0) {}

  void observe(const at::Tensor& x) override {
    if (x.numel() == 0) return;
    at::Tensor a = abs_of(x);
    const double m = checked(a.max().item<double>(), name());
    if (!seen_) {
      range_ = m;
    } else if (m > range_) {
      rebin(m);
    }
    seen_ = true;
    const int64_t bins = static_cast<int64_t>(counts_.size());
    if (range_ == 0) {  // everything so far is exactly 0
      counts_[0] += static_cast<double>(a.numel());
      return;
    }
    // Bin index floor(|x| / w), computed on x's device; |x| == range goes to the last bin.
    at::Tensor idx = (a.flatten() * (static_cast<double>(bins) / range_))
                         .floor_()
                         .clamp_(0, static_cast<double>(bins - 1))
                         .to(at::kLong);
    at::Tensor c = at::bincount(idx, {}, bins).to(at::kCPU).contiguous();
    const int64_t* cp = c.data_ptr<int64_t>();
    for (int64_t i = 0; i < bins; ++i) counts_[i] += static_cast<double>(cp[i]);
  }

  QuantParams params() const override {
    if (!seen_ || range_ == 0) return symmetric_params(0, bits_);
    return symmetric_params(threshold(counts_, range_ / static_cast<double>(counts_.size())),
                            bits_);
  }
  bool ready() const override { return seen_; }
  void reset() override {
    seen_ = false, range_ = 0;
    std::fill(counts_.begin(), counts_.end(), 0.0);
  }
  // A histogram over [0, max|x|] is not a max of the parts' histograms (the parts' ranges
  // differ, and counts add up).
  std::vector<double> batch_summary(const at::Tensor&) const override { refuse_split(); }
  void observe_summary(const std::vector<double>&) override { refuse_split(); }
  // [seen, range, counts...]
  std::vector<double> state() const override {
    std::vector<double> s = {seen_ ? 1.0 : 0.0, range_};
    s.insert(s.end(), counts_.begin(), counts_.end());
    return s;
  }
  void load_state(const std::vector<double>& s) override {
    check_state_size(s, counts_.size() + 2, name());
    seen_ = s[0] != 0, range_ = s[1];
    std::copy(s.begin() + 2, s.end(), counts_.begin());
  }

 protected:
  [[noreturn]] void refuse_split() const {
    throw Error(str_cat("observer '", name(), "' cannot be split across processes (its ",
                        "histogram needs one range for the whole batch); data-parallel ",
                        "training observes with abs_max, min_max or moving_average_abs_max"));
  }
  // The clipping threshold chosen from the histogram (counts, bin width w); range_ > 0.
  virtual double threshold(const std::vector<double>& counts, double w) const = 0;
  int bits_;

 private:
  void rebin(double new_range) {
    const size_t bins = counts_.size();
    std::vector<double> out(bins, 0.0);
    if (range_ == 0) {
      // All earlier mass sits at exactly 0.
      for (double c : counts_) out[0] += c;
    } else {
      const double w_old = range_ / static_cast<double>(bins);
      const double w_new = new_range / static_cast<double>(bins);
      for (size_t i = 0; i < bins; ++i) {
        if (counts_[i] == 0) continue;
        const double lo = static_cast<double>(i) * w_old, hi = lo + w_old;
        size_t j = std::min(static_cast<size_t>(lo / w_new), bins - 1);
        double from = lo;
        while (from < hi) {
          const double edge =
              (j + 1 == bins) ? hi : std::min(hi, static_cast<double>(j + 1) * w_new);
          out[j] += counts_[i] * (edge - from) / w_old;
          from = edge;
          if (j + 1 == bins) break;
          ++j;
        }
      }
    }
    counts_ = std::move(out);
    range_ = new_range;
  }

  bool seen_ = false;
  double range_ = 0;
  std::vector<double> counts_;
};

// hist: PaddleSlim's _get_hist_scaling_factor: the first bin i whose cumulative mass reaches
// hist_percent of the total; threshold = its centre (i + 0.5) w.
class HistPercentObserver : public HistogramObserverBase {
 public:
  explicit HistPercentObserver(const ObserverOptions& o)
      : HistogramObserverBase(o), percent_(o.hist_percent) {}
  std::string name() const override { return "hist"; }
  double threshold(const std::vector<double>& counts, double w) const override {
    double total = 0;
    for (double c : counts) total += c;
    const double target = percent_ * total;
    double cum = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      cum += counts[i];  // same summation order as total: reaches it exactly at the end
      if (cum >= target) return (static_cast<double>(i) + 0.5) * w;
    }
    return (static_cast<double>(counts.size()) - 0.5) * w;
  }

 private:
  double percent_;
};

// KL: TensorRT's entropy calibration ("8-bit Inference with TensorRT", Migacz 2017).
// For every window of i >= L bins (L = 2^(bits-1) = 128 levels for int8):
//   P = hist[0, i) with the mass beyond the window (the clipped outliers) added to P[i-1];
//   Q = hist[0, i) merged into L groups (bin j -> group floor(j L / i), like numpy's
//       digitize over linspace(0, i, L + 1)), each group's mass spread evenly over its
//       non-empty bins (empty bins stay empty: Q must not invent mass where P had none);
//   KL(P || Q) = sum_{P_j > 0} p_j log(p_j / q_j) after normalising each to sum 1.
// Windows whose last bin is empty are skipped (P > 0 where Q = 0: infinite divergence).
// The smallest divergence wins (first on ties); the threshold is the window's upper edge i w.
class KLObserver : public HistogramObserverBase {
 public:
  explicit KLObserver(const ObserverOptions& o) : HistogramObserverBase(o) {}
  std::string name() const override { return "KL"; }
  double threshold(const std::vector<double>& hist, double w) const override {
    const int64_t bins = static_cast<int64_t>(hist.size());
    const int64_t levels = int64_t{1} << (bits_ - 1);
    std::vector<double> suffix(bins + 1, 0.0);
    for (int64_t j = bins - 1; j >= 0; --j) suffix[j] = suffix[j + 1] + hist[j];
    const double total = suffix[0];
    double best_kl = std::numeric_limits<double>::infinity();
    int64_t best_i = bins;
    std::vector<double> q(bins);
    for (int64_t i = levels; i <= bins; ++i) {
      if (hist[i - 1] == 0) continue;
      const double q_total = total - suffix[i];  // mass inside the window
      // Q: expand each group's mass over its non-empty bins.
      int64_t start = 0;
      for (int64_t g = 0; g < levels; ++g) {
        int64_t end = start;
        while (end < i && (end * levels) / i == g) ++end;
        double mass = 0;
        int64_t nonzero = 0;
        for (int64_t j = start; j < end; ++j) {
          mass += hist[j];
          nonzero += hist[j] != 0;
        }
        for (int64_t j = start; j < end; ++j)
          q[j] = hist[j] != 0 ? mass / static_cast<double>(nonzero) : 0.0;
        start = end;
      }
      double kl = 0;
      for (int64_t j = 0; j < i; ++j) {
        const double pj = (j == i - 1 ? hist[j] + suffix[i] : hist[j]) / total;
        if (pj == 0) continue;
        kl += pj * std::log(pj / (q[j] / q_total));
      }
      if (kl < best_kl) best_kl = kl, best_i = i;
    }
    return static_cast<double>(best_i) * w;
  }
};

// mse: for each candidate threshold t = k w (k = 1..bins, the bin edges, so no bin straddles
// t), scale s = t / qmax, the expected squared error of fake quantization with the values
// uniform inside each bin is
//   (mass below t) * s^2 / 12                      rounding noise, uniform on [-s/2, s/2]
//   + sum_{bins above t} c_j E[(x - t)^2]          clipped to qmax s = t exactly
// with E[(x - t)^2] over [a, b] = ((a-t)^2 + (a-t)(b-t) + (b-t)^2) / 3. Smallest wins (first
// on ties).
class MseObserver : public HistogramObserverBase {
 public:
  explicit MseObserver(const ObserverOptions& o) : HistogramObserverBase(o) {}
  std::string name() const override { return "mse"; }
  double threshold(const std::vector<double>& hist, double w) const override {
    const int64_t bins = static_cast<int64_t>(hist.size());
    const double qmax = static_cast<double>((int64_t{1} << (bits_ - 1)) - 1);
    double best_err = std::numeric_limits<double>::infinity();
    int64_t best_k = bins;
    double below = 0;
    for (int64_t k = 1; k <= bins; ++k) {
      below += hist[k - 1];
      const double t = static_cast<double>(k) * w, s = t / qmax;
      double err = below * s * s / 12.0;
      for (int64_t j = k; j < bins && err < best_err; ++j) {
        if (hist[j] == 0) continue;
        const double a = static_cast<double>(j) * w - t, b = a + w;
        err += hist[j] * (a * a + a * b + b * b) / 3.0;
      }
      if (err < best_err) best_err = err, best_k = k;
    }
    return static_cast<double>(best_k) * w;
  }
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const std::vector<std::string>& observer_algos() {
  static const std::vector<std::string> algos = {
      "abs_max", "min_max", "moving_average_abs_max", "avg", "hist", "KL", "mse"};
  return algos;
}

std::unique_ptr<Observer> make_observer(const std::string& algo, const ObserverOptions& o) {
  std::string canonical;
  for (const std::string& a : observer_algos())
    if (lower(a) == lower(algo)) canonical = a;
  if (canonical.empty()) {
    std::string valid;
    for (const std::string& a : observer_algos()) valid += (valid.empty() ? "" : ", ") + a;
    throw Error(str_cat("unknown activation observer algo '", algo, "' (valid: ", valid, ")"));
  }
  symmetric_params(0, o.bits);  // validates bits
  SEGSLIM_CHECK(o.symmetric || canonical == "min_max", "observer '", canonical,
                "' is symmetric (|x|-based); asymmetric quantization needs 'min_max'");
  if (canonical == "abs_max") return std::make_unique<AbsMaxObserver>(o);
  if (canonical == "min_max") return std::make_unique<MinMaxObserver>(o);
  if (canonical == "moving_average_abs_max") {
    SEGSLIM_CHECK(o.moving_rate >= 0 && o.moving_rate < 1, "moving_rate must be in [0, 1), got ",
                  o.moving_rate);
    return std::make_unique<MovingAverageAbsMaxObserver>(o);
  }
  if (canonical == "avg") return std::make_unique<AvgObserver>(o);
  SEGSLIM_CHECK(o.bins >= 1, "observer '", canonical, "': bins must be >= 1, got ", o.bins);
  if (canonical == "hist") {
    SEGSLIM_CHECK(o.hist_percent > 0 && o.hist_percent <= 1, "hist_percent must be in (0, 1], got ",
                  o.hist_percent);
    return std::make_unique<HistPercentObserver>(o);
  }
  if (canonical == "KL") {
    const int levels = 1 << (o.bits - 1);
    SEGSLIM_CHECK(o.bins >= levels, "observer 'KL' needs bins >= ", levels,
                  " (the quantization levels at ", o.bits, " bits), got ", o.bins);
    return std::make_unique<KLObserver>(o);
  }
  return std::make_unique<MseObserver>(o);
}

}  // namespace segslim

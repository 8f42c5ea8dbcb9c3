#include "metrics/confusion_matrix.h"

#include "common/error.h"

namespace segslim {

ConfusionMatrix::ConfusionMatrix(int64_t num_classes, int64_t ignore_index)
    : num_classes_(num_classes),
      ignore_index_(ignore_index),
      counts_(static_cast<size_t>(num_classes * (num_classes + 1)), 0) {
  SEGSLIM_CHECK(num_classes > 0, "num_classes must be positive, got ", num_classes);
}

void ConfusionMatrix::update(const at::Tensor& pred, const at::Tensor& label) {
  SEGSLIM_CHECK(pred.sizes() == label.sizes(), "prediction shape ", pred.sizes(),
                " differs from label shape ", label.sizes());
  at::NoGradGuard no_grad;
  at::Tensor t = label.reshape({-1}).to(at::kLong);
  at::Tensor p = pred.reshape({-1}).to(at::kLong).to(t.device());
  at::Tensor valid = t != ignore_index_;
  t = t.masked_select(valid);
  p = p.masked_select(valid);
  if (t.numel() == 0) return;
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  SEGSLIM_CHECK(lo >= 0 && hi < num_classes_, "label value ", (lo < 0 ? lo : hi),
                " is neither a class id in [0, ", num_classes_, ") nor the ignore index ",
                ignore_index_);
  // Every prediction outside the class range goes to the extra column.
  p = at::where((p < 0) | (p >= num_classes_), at::full_like(p, num_classes_), p);
  // One bincount over flat (true, pred) indices builds the whole matrix in a single pass.
  at::Tensor bins =
      at::bincount(t * (num_classes_ + 1) + p, {}, static_cast<int64_t>(counts_.size()))
          .to(at::kCPU)
          .to(at::kLong);
  const int64_t* b = bins.data_ptr<int64_t>();
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += b[i];
}

void ConfusionMatrix::merge(const ConfusionMatrix& other) {
  SEGSLIM_CHECK(other.num_classes_ == num_classes_, "cannot merge confusion matrices of ",
                other.num_classes_, " and ", num_classes_, " classes");
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
}

SegMetrics ConfusionMatrix::compute() const {
  const int64_t k = num_classes_, cols = k + 1;
  SegMetrics m;
  std::vector<double> label_area(k, 0), pred_area(k, 0), tp(k, 0);
  double total = 0;
  for (int64_t t = 0; t < k; ++t) {
    for (int64_t p = 0; p < cols; ++p) {
      const double c = static_cast<double>(counts_[t * cols + p]);
      label_area[t] += c;
      if (p < k) pred_area[p] += c;
      total += c;
    }
    tp[t] = static_cast<double>(counts_[t * cols + t]);
  }
  m.num_pixels = static_cast<int64_t>(total);
  double correct = 0, expected_agreement = 0;
  for (int64_t c = 0; c < k; ++c) {
    const double uni = label_area[c] + pred_area[c] - tp[c];
    m.class_iou.push_back(uni > 0 ? tp[c] / uni : 0.0);
    m.class_acc.push_back(label_area[c] > 0 ? tp[c] / label_area[c] : 0.0);
    const double dice_den = label_area[c] + pred_area[c];
    m.class_dice.push_back(dice_den > 0 ? 2 * tp[c] / dice_den : 0.0);
    correct += tp[c];
    expected_agreement += label_area[c] * pred_area[c];
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
  };
  m.miou = mean(m.class_iou);
  m.macc = mean(m.class_acc);
  m.dice = mean(m.class_dice);
  m.acc = total > 0 ? correct / total : 0.0;
  // Cohen's kappa: observed agreement po against chance agreement pe from the marginals.
  const double pe = total > 0 ? expected_agreement / (total * total) : 0.0;
  m.kappa = pe < 1 ? (m.acc - pe) / (1 - pe) : 0.0;
  return m;
}

}  // namespace segslim

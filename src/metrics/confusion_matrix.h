#pragma once
// Segmentation metrics from a confusion matrix, with the conventions of PaddleSeg's
// metrics (the original system) and of the reference protocol in ../shared/models/*.json:
//  - pixels whose label is ignore_index are skipped;
//  - a predicted id >= num_classes (e.g. ESPNet's 12th "Unlabelled" channel) is a miss for
//    the pixel's true class: it lands in an extra "outside" column;
//  - IoU_c = TP / (TP + FP + FN), 0 when the class appears in neither labels nor predictions
//    (PaddleSeg's choice); mIoU is the mean over all num_classes classes.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace segslim {

struct SegMetrics {
  double miou = 0, acc = 0, macc = 0, kappa = 0, dice = 0;
  std::vector<double> class_iou, class_acc, class_dice;
  int64_t num_pixels = 0;  // labelled (non-ignored) pixels counted
};

class ConfusionMatrix {
 public:
  ConfusionMatrix(int64_t num_classes, int64_t ignore_index);

  // pred: integer class ids, label: integer ids, same shape (any device). Label values other
  // than [0, num_classes) and ignore_index are an error naming the value.
  void update(const at::Tensor& pred, const at::Tensor& label);
  // Adds another matrix's counts (e.g. from another rank or thread).
  void merge(const ConfusionMatrix& other);

  // counts[t * (num_classes + 1) + p]: pixels of true class t predicted as p; p = num_classes
  // stands for every prediction outside [0, num_classes).
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t num_classes() const { return num_classes_; }
  SegMetrics compute() const;

 private:
  int64_t num_classes_, ignore_index_;
  std::vector<int64_t> counts_;
};

}  // namespace segslim

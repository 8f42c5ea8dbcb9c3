#include "train/distill_loss.h"

#include <cmath>

#include "common/error.h"

namespace segslim {
namespace {

void check_same_shape(const at::Tensor& s, const at::Tensor& t, const char* loss) {
  SEGSLIM_CHECK(s.sizes() == t.sizes(), loss, " distillation loss: student shape ", s.sizes(),
                " differs from teacher shape ", t.sizes());
}

}  // namespace

at::Tensor l2_distill_loss(const at::Tensor& student, const at::Tensor& teacher) {
  check_same_shape(student, teacher, "l2");
  at::Tensor t = teacher.detach().to(student.device(), student.scalar_type());
  return (student - t).pow(2).mean();
}

at::Tensor soft_label_distill_loss(const at::Tensor& student_logits,
                                   const at::Tensor& teacher_logits, double temperature) {
  check_same_shape(student_logits, teacher_logits, "soft_label");
  SEGSLIM_CHECK(student_logits.dim() >= 2,
                "soft_label distillation loss needs [N, C, ...] logits, got shape ",
                student_logits.sizes());
  SEGSLIM_CHECK(std::isfinite(temperature) && temperature > 0,
                "soft_label distillation temperature must be > 0, got ", temperature);
  at::Tensor t = teacher_logits.detach().to(student_logits.device(), student_logits.scalar_type());
  // log-softmax on both sides: p_t log p_t - p_t log p_s without forming log(0).
  at::Tensor log_pt = at::log_softmax(t / temperature, 1);
  at::Tensor log_ps = at::log_softmax(student_logits / temperature, 1);
  at::Tensor kl = (log_pt.exp() * (log_pt - log_ps)).sum(1);  // per position
  return kl.mean() * (temperature * temperature);
}

at::Tensor segmentation_ce_loss(const at::Tensor& logits, const at::Tensor& labels,
                                int64_t ignore_index, const at::Tensor& class_weights) {
  SEGSLIM_CHECK(logits.dim() == 4, "segmentation loss needs [N, C, h, w] logits, got shape ",
                logits.sizes());
  at::Tensor y = labels.dim() == 4 && labels.size(1) == 1 ? labels.squeeze(1) : labels;
  SEGSLIM_CHECK(y.dim() == 3 && y.size(0) == logits.size(0), "segmentation loss: labels of shape ",
                labels.sizes(), " do not match logits of shape ", logits.sizes(),
                " (expected [N, H, W])");
  SEGSLIM_CHECK(!at::isFloatingType(y.scalar_type()),
                "segmentation loss: labels must be integer class ids, got ", y.scalar_type());
  y = y.to(logits.device(), at::kLong);
  const int64_t num_classes = logits.size(1);

  // One host sync for validation: a wrong label would otherwise be an opaque device assert.
  at::Tensor valid = y != ignore_index;
  at::Tensor bad = valid & ((y < 0) | (y >= num_classes));
  if (bad.any().item<bool>()) {
    const int64_t v = y.masked_select(bad)[0].item<int64_t>();
    throw Error(str_cat("segmentation loss: label ", v, " is neither a class id in [0, ",
                        num_classes, ") nor the ignore index ", ignore_index));
  }

  at::Tensor x = logits;
  if (x.size(2) != y.size(1) || x.size(3) != y.size(2))
    x = at::upsample_bilinear2d(x, {y.size(1), y.size(2)}, /*align_corners=*/false);

  at::Tensor w;
  if (class_weights.defined()) {
    SEGSLIM_CHECK(class_weights.dim() == 1 && class_weights.size(0) == num_classes,
                  "segmentation loss: class weights must have shape [", num_classes, "], got ",
                  class_weights.sizes());
    w = class_weights.detach().to(x.device(), x.scalar_type());
  }
  if (!valid.any().item<bool>()) return x.sum() * 0;  // torch would give 0 / 0 = NaN
  // nll_loss2d with Mean reduction is exactly sum_i w_{y_i} nll_i / sum_i w_{y_i} over the
  // non-ignored pixels (w = 1 without weights).
  return at::nll_loss2d(at::log_softmax(x, 1), y, w, at::Reduction::Mean, ignore_index);
}

}  // namespace segslim

#pragma once
// Losses for QAT with distillation (PaddleSlim ACT's `Distillation.loss`), in ATen: they are
// differentiable, work on any device and dtype, and never send gradients into the teacher
// (its tensors are detached inside).
#include <ATen/ATen.h>

#include <cstdint>

namespace segslim {

// PaddleSlim `l2`: mean over all elements of (student - teacher)^2. Shapes must match.
at::Tensor l2_distill_loss(const at::Tensor& student, const at::Tensor& teacher);

// Hinton's soft-label distillation over the channel dim 1 of [N, C, ...] logits:
//   T^2 * mean_{n, spatial} sum_c p_t log(p_t / p_s),  p = softmax(logits / T, dim 1).
// The T^2 keeps the gradient magnitude independent of T. T > 0; shapes must match.
at::Tensor soft_label_distill_loss(const at::Tensor& student_logits,
                                   const at::Tensor& teacher_logits, double temperature);

// Pixel-wise cross entropy for segmentation (PaddleSeg's CrossEntropyLoss):
// logits [N, C, h, w], labels [N, H, W] (or [N, 1, H, W]) of class ids. Logits are resized
// bilinearly (align_corners = false) to H x W when they differ. Pixels equal to ignore_index
// are skipped; the result is the mean over the others, weighted by class_weights[label] when
// given ([C]): sum w_y * nll / sum w_y. 0 (still attached to the graph) when every pixel is
// ignored. A label outside [0, C) that is not ignore_index throws segslim::Error naming it.
at::Tensor segmentation_ce_loss(const at::Tensor& logits, const at::Tensor& labels,
                                int64_t ignore_index, const at::Tensor& class_weights = {});

}  // namespace segslim

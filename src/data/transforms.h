#pragma once
// PaddleSeg's segmentation transforms on cv::Mat, with PaddleSeg's semantics (sizes are
// [width, height], labels are always resized with nearest neighbour, padding is at the bottom /
// right, Normalize is (pixel / 255 - mean) / std).
//
// image: HxWx3, CV_8U or CV_32F (converted to CV_32F first, as PaddleSeg's Compose reads images
// as float32). label: HxW single channel (any integer depth; CV_32S recommended) or empty when
// there is none. All randomness comes from the caller's generator, so a sample's augmentation is
// a pure function of its seed.
#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <random>
#include <vector>

#include "data/dataset_config.h"

namespace segslim {

// Uniform in [0, 1) from one draw (independent of the standard library's distributions, so
// results are the same with every toolchain).
double uniform01(std::mt19937& rng);
double uniform(std::mt19937& rng, double lo, double hi);
// Uniform integer in [0, n).
int rand_below(std::mt19937& rng, int n);

// The scale factors ResizeStepScaling chooses from: min, min + step, ..., max
// (PaddleSeg: linspace(min, max, int((max - min) / step + 1))); {min} when min == max; empty when
// step == 0 (then the factor is drawn uniformly from [min, max]).
std::vector<double> step_scale_factors(double min_scale, double max_scale, double step);

// Size PaddleSeg's Resize(keep_ratio=True) produces for an image of `w` x `h`: scaled by
// min(max(target) / max(w, h), min(target) / min(w, h)), rounded. Returns {w, h}.
std::array<int, 2> keep_ratio_size(int w, int h, const std::array<int, 2>& target);

// Applies one transform in place.
void apply_transform(const TransformSpec& t, cv::Mat& image, cv::Mat& label, std::mt19937& rng);

// Converts the image to CV_32FC3 and applies the list in order.
void apply_transforms(const std::vector<TransformSpec>& transforms, cv::Mat& image, cv::Mat& label,
                      std::mt19937& rng);

}  // namespace segslim

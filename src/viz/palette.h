#pragma once
// Pictures of class maps: pseudo-colour rendering and blending over the input image.
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace segslim {

using Rgb = std::array<uint8_t, 3>;

// PaddleSeg's default colour map (the PASCAL VOC bit-interleaving scheme): class 0 black,
// 1 dark red, 2 dark green, ... Used when the dataset config gives no `palette`.
std::vector<Rgb> default_palette(int num_colors);

// ids: integer [H, W] (any device). Ids outside the palette are drawn black. Returns BGR
// 8-bit (OpenCV's order) ready for cv::imwrite.
cv::Mat colorize(const at::Tensor& ids, const std::vector<Rgb>& palette);

// Encodes `picture` as PNG and writes it atomically (temporary name, then rename).
void write_png(const std::string& path, const cv::Mat& picture);

// alpha * colour + (1 - alpha) * image; both BGR 8-bit of the same size.
cv::Mat overlay(const cv::Mat& image_bgr, const cv::Mat& color_bgr, double alpha = 0.5);

}  // namespace segslim

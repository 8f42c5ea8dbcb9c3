#pragma once
// A segmentation dataset: (image, label) file pairs from a PaddleSeg list file (or the standard
// Cityscapes / ADE20K layout), loaded and transformed like PaddleSeg's Dataset.__getitem__.
#include <ATen/ATen.h>

#include <opencv2/core.hpp>
#include <random>
#include <string>
#include <vector>

#include "data/dataset_config.h"

namespace segslim {

struct Sample {
  at::Tensor image;  // float32 [3, H, W], channel order RGB (BGR when to_rgb is false)
  at::Tensor label;  // int64 [H, W]; ignore_index marks pixels without a class
  std::string image_path;
  std::string label_path;
};

// Reads an image as PaddleSeg does: 8-bit BGR from OpenCV, converted to RGB unless the dataset
// keeps BGR (`to_rgb: false`). `context` (e.g. "val.txt line 3") goes into the error message.
cv::Mat read_image(const std::string& path, bool to_rgb, const std::string& context);

// An HxWx3 float32 image -> a contiguous float32 [3, H, W] tensor that owns its memory.
at::Tensor image_to_chw_tensor(const cv::Mat& image);

class SegDataset {
 public:
  // Reads the list (or scans the layout). Throws naming the list file and line for a malformed
  // line, and naming the missing file and the list line for an image or label that is absent.
  explicit SegDataset(DatasetSpec spec);

  size_t size() const { return images_.size(); }
  const DatasetSpec& spec() const { return spec_; }
  const std::string& image_path(size_t index) const { return images_.at(index); }
  const std::string& label_path(size_t index) const { return labels_.at(index); }
  // "list.txt:12" (or the image path when the pairs came from a directory layout).
  const std::string& origin(size_t index) const { return origins_.at(index); }

  // Reads, checks and transforms one sample. Labels must be single-channel 8/16-bit id maps of
  // the image's size with values in [0, num_classes) or ignore_index; anything else throws
  // naming the file. `rng` drives the random transforms.
  Sample load(size_t index, std::mt19937& rng) const;

 private:
  DatasetSpec spec_;
  std::vector<std::string> images_, labels_, origins_;
};

}  // namespace segslim

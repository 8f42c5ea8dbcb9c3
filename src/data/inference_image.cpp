#include "data/inference_image.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "common/error.h"
#include "data/transforms.h"

namespace segslim {

InferenceImage load_inference_image(const DatasetSpec& spec, const std::string& path) {
  InferenceImage out;
  out.original_bgr = cv::imread(path, cv::IMREAD_COLOR);
  SEGSLIM_CHECK(!out.original_bgr.empty(), "cannot read image '", path,
                "' (missing, or not an image format OpenCV decodes)");
  cv::Mat image = out.original_bgr.clone();
  if (spec.to_rgb) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
  // The transforms work on (image, label) pairs; a blank label rides along unused.
  cv::Mat label = cv::Mat::zeros(image.size(), CV_32S);
  std::mt19937 rng(0);
  apply_transforms(spec.transforms, image, label, rng);
  if (image.depth() != CV_32F) image.convertTo(image, CV_32F);
  cv::Mat img = image.isContinuous() ? image : image.clone();
  out.input = at::from_blob(img.data, {img.rows, img.cols, 3}, at::kFloat)
                  .permute({2, 0, 1})
                  .unsqueeze(0)
                  .clone(at::MemoryFormat::Contiguous);
  return out;
}

}  // namespace segslim

#include "viz/palette.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/error.h"
#include "common/files.h"

namespace segslim {

std::vector<Rgb> default_palette(int num_colors) {
  std::vector<Rgb> palette(static_cast<size_t>(num_colors));
  for (int id = 0; id < num_colors; ++id) {
    // Spread the bits of the id over the three channels, most significant first.
    int lab = id;
    Rgb c{0, 0, 0};
    for (int shift = 7; lab; --shift, lab >>= 3)
      for (int ch = 0; ch < 3; ++ch) c[ch] |= static_cast<uint8_t>(((lab >> ch) & 1) << shift);
    palette[id] = c;
  }
  return palette;
}

cv::Mat colorize(const at::Tensor& ids, const std::vector<Rgb>& palette) {
  SEGSLIM_CHECK(ids.dim() == 2, "colorize needs a [H, W] class map, got ", ids.sizes());
  at::Tensor map = ids.to(at::kCPU).to(at::kLong).contiguous();
  const int h = static_cast<int>(map.size(0)), w = static_cast<int>(map.size(1));
  cv::Mat out(h, w, CV_8UC3);
  const int64_t* p = map.data_ptr<int64_t>();
  for (int y = 0; y < h; ++y) {
    auto* row = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < w; ++x) {
      const int64_t id = p[static_cast<int64_t>(y) * w + x];
      Rgb c = id >= 0 && id < static_cast<int64_t>(palette.size()) ? palette[id] : Rgb{0, 0, 0};
      row[x] = cv::Vec3b(c[2], c[1], c[0]);
    }
  }
  return out;
}

void write_png(const std::string& path, const cv::Mat& picture) {
  std::vector<uchar> bytes;
  SEGSLIM_CHECK(cv::imencode(".png", picture, bytes), "cannot encode a PNG for ", path);
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

cv::Mat overlay(const cv::Mat& image_bgr, const cv::Mat& color_bgr, double alpha) {
  SEGSLIM_CHECK(image_bgr.size() == color_bgr.size() && image_bgr.type() == color_bgr.type(),
                "overlay needs an image and a colour map of the same size and type");
  cv::Mat out;
  cv::addWeighted(color_bgr, alpha, image_bgr, 1 - alpha, 0, out);
  return out;
}

}  // namespace segslim

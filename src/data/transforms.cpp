#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "common/error.h"

namespace segslim {

double uniform01(std::mt19937& rng) { return rng() * (1.0 / 4294967296.0); }

double uniform(std::mt19937& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

int rand_below(std::mt19937& rng, int n) {
  if (n <= 1) return 0;
  return std::min(n - 1, static_cast<int>(uniform01(rng) * n));
}

std::vector<double> step_scale_factors(double min_scale, double max_scale, double step) {
  if (min_scale == max_scale) return {min_scale};
  if (step == 0) return {};
  const int n = static_cast<int>((max_scale - min_scale) / step + 1);  // truncates, as int()
  if (n <= 1) return {min_scale};
  std::vector<double> out(n);
  for (int i = 0; i < n; ++i) out[i] = min_scale + (max_scale - min_scale) * i / (n - 1);
  out.back() = max_scale;
  return out;
}

namespace {

// Python's round(): half to even (the default floating-point rounding mode).
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }

int cv_interp(const std::string& name) {
  if (name == "NEAREST") return cv::INTER_NEAREST;
  if (name == "LINEAR") return cv::INTER_LINEAR;
  if (name == "AREA") return cv::INTER_AREA;
  if (name == "CUBIC") return cv::INTER_CUBIC;
  if (name == "LANCZOS4") return cv::INTER_LANCZOS4;
  throw Error(str_cat("unknown interpolation '", name,
                      "'; valid: LINEAR, NEAREST, AREA, CUBIC, LANCZOS4, RANDOM."));
}

void resize_pair(cv::Mat& image, cv::Mat& label, int w, int h, int interp) {
  SEGSLIM_CHECK(w > 0 && h > 0, "resize to an empty size ", w, "x", h, ".");
  if (image.cols == w && image.rows == h) return;
  cv::Mat out;
  cv::resize(image, out, cv::Size(w, h), 0, 0, interp);
  image = out;
  if (!label.empty()) {
    cv::Mat lout;
    cv::resize(label, lout, cv::Size(w, h), 0, 0, cv::INTER_NEAREST);
    label = lout;
  }
}

// PIL-style colour enhancements (PaddleSeg's RandomDistort goes through PIL.ImageEnhance on
// the uint8 image): each blends the image with a "degenerate" image by `delta`.
cv::Mat gray_u8(const cv::Mat& rgb) {
  cv::Mat g;
  cv::cvtColor(rgb, g, cv::COLOR_RGB2GRAY);  // PIL "L": 0.299 R + 0.587 G + 0.114 B
  return g;
}

cv::Mat blend(const cv::Mat& degenerate, const cv::Mat& im, double delta) {
  cv::Mat out;
  cv::addWeighted(im, delta, degenerate, 1.0 - delta, 0.0, out);  // saturates to uint8
  return out;
}

cv::Mat brightness(const cv::Mat& im, double delta) {
  cv::Mat out;
  im.convertTo(out, CV_8U, delta);
  return out;
}

cv::Mat contrast(const cv::Mat& im, double delta) {
  const int mean = static_cast<int>(cv::mean(gray_u8(im))[0] + 0.5);
  cv::Mat degenerate(im.size(), im.type(), cv::Scalar::all(mean));
  return blend(degenerate, im, delta);
}

cv::Mat saturation(const cv::Mat& im, double delta) {
  cv::Mat g = gray_u8(im), degenerate;
  cv::cvtColor(g, degenerate, cv::COLOR_GRAY2RGB);
  return blend(degenerate, im, delta);
}

cv::Mat hue(const cv::Mat& im, double delta) {
  cv::Mat hsv;
  cv::cvtColor(im, hsv, cv::COLOR_RGB2HSV_FULL);  // H in 0..255 like PIL's HSV
  for (int y = 0; y < hsv.rows; ++y) {
    auto* p = hsv.ptr<cv::Vec3b>(y);
    for (int x = 0; x < hsv.cols; ++x) {
      const int h = static_cast<int>(std::floor(p[x][0] + delta));
      p[x][0] = static_cast<uchar>(((h % 256) + 256) % 256);  // uint8 wrap-around
    }
  }
  cv::Mat out;
  cv::cvtColor(hsv, out, cv::COLOR_HSV2RGB_FULL);
  return out;
}

cv::Mat sharpness(const cv::Mat& im, double delta) {
  // PIL's SMOOTH kernel; PIL leaves the one-pixel border unfiltered.
  const cv::Mat kernel = (cv::Mat_<float>(3, 3) << 1, 1, 1, 1, 5, 1, 1, 1, 1) / 13.0f;
  cv::Mat degenerate = im.clone();
  if (im.rows > 2 && im.cols > 2) {
    cv::Mat smooth;
    cv::filter2D(im, smooth, -1, kernel);
    const cv::Rect inner(1, 1, im.cols - 2, im.rows - 2);
    smooth(inner).copyTo(degenerate(inner));
  }
  return blend(degenerate, im, delta);
}

void random_distort(const TransformSpec& t, cv::Mat& image, std::mt19937& rng) {
  // astype('uint8') truncates toward zero.
  cv::Mat im(image.size(), CV_8UC3);
  for (int y = 0; y < image.rows; ++y) {
    const auto* s = image.ptr<cv::Vec3f>(y);
    auto* d = im.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x)
      for (int c = 0; c < 3; ++c)
        d[x][c] = static_cast<uchar>(static_cast<int>(std::clamp(s[x][c], 0.0f, 255.0f)));
  }
  int order[5] = {0, 1, 2, 3, 4};
  for (int i = 4; i > 0; --i) std::swap(order[i], order[rand_below(rng, i + 1)]);
  for (int op : order) {
    switch (op) {
      case 0:
        if (uniform01(rng) < t.brightness_prob)
          im = brightness(im, uniform(rng, 1 - t.brightness_range, 1 + t.brightness_range));
        break;
      case 1:
        if (uniform01(rng) < t.contrast_prob)
          im = contrast(im, uniform(rng, 1 - t.contrast_range, 1 + t.contrast_range));
        break;
      case 2:
        if (uniform01(rng) < t.saturation_prob)
          im = saturation(im, uniform(rng, 1 - t.saturation_range, 1 + t.saturation_range));
        break;
      case 3:
        if (uniform01(rng) < t.hue_prob) im = hue(im, uniform(rng, -t.hue_range, t.hue_range));
        break;
      case 4:
        if (uniform01(rng) < t.sharpness_prob)
          im = sharpness(im, uniform(rng, 1 - t.sharpness_range, 1 + t.sharpness_range));
        break;
    }
  }
  im.convertTo(image, CV_32F);
}

void normalize(const TransformSpec& t, cv::Mat& image) {
  // Mirrors numpy: float32 image / 255, then float64 mean / std applied and stored as float32.
  for (int y = 0; y < image.rows; ++y) {
    auto* p = image.ptr<cv::Vec3f>(y);
    for (int x = 0; x < image.cols; ++x)
      for (int c = 0; c < 3; ++c) {
        float v = p[x][c] / 255.0f;
        v = static_cast<float>(static_cast<double>(v) - t.mean[c]);
        p[x][c] = static_cast<float>(static_cast<double>(v) / t.stddev[c]);
      }
  }
}

}  // namespace

std::array<int, 2> keep_ratio_size(int w, int h, const std::array<int, 2>& target) {
  const double scale =
      std::min(static_cast<double>(std::max(target[0], target[1])) / std::max(w, h),
               static_cast<double>(std::min(target[0], target[1])) / std::min(w, h));
  return {py_round(w * scale), py_round(h * scale)};
}

void apply_transform(const TransformSpec& t, cv::Mat& image, cv::Mat& label, std::mt19937& rng) {
  SEGSLIM_CHECK(image.type() == CV_32FC3, "transform ", t.type,
                ": expected a float HxWx3 image (apply_transforms converts it).");
  SEGSLIM_CHECK(label.empty() || (label.channels() == 1 && label.size() == image.size()),
                "transform ", t.type, ": label must be single-channel and the image's size.");
  if (t.type == "Resize") {
    int interp;
    if (t.interp == "RANDOM") {
      static const char* kChoices[] = {"NEAREST", "LINEAR", "CUBIC", "AREA", "LANCZOS4"};
      interp = cv_interp(kChoices[rand_below(rng, 5)]);
    } else {
      interp = cv_interp(t.interp);
    }
    std::array<int, 2> size = t.target_size;
    if (t.keep_ratio) size = keep_ratio_size(image.cols, image.rows, t.target_size);
    resize_pair(image, label, size[0], size[1], interp);
  } else if (t.type == "ResizeStepScaling") {
    double scale;
    const auto factors =
        step_scale_factors(t.min_scale_factor, t.max_scale_factor, t.scale_step_size);
    if (factors.empty())
      scale = uniform(rng, t.min_scale_factor, t.max_scale_factor);
    else
      scale = factors[rand_below(rng, static_cast<int>(factors.size()))];
    resize_pair(image, label, py_round(scale * image.cols), py_round(scale * image.rows),
                cv::INTER_LINEAR);
  } else if (t.type == "RandomPaddingCrop") {
    const int crop_w = t.crop_size[0], crop_h = t.crop_size[1];
    if (image.cols == crop_w && image.rows == crop_h) return;
    const int pad_h = std::max(crop_h - image.rows, 0), pad_w = std::max(crop_w - image.cols, 0);
    if (pad_h > 0 || pad_w > 0) {
      cv::Mat padded;
      const auto& v = t.im_padding_value;
      cv::copyMakeBorder(image, padded, 0, pad_h, 0, pad_w, cv::BORDER_CONSTANT,
                         cv::Scalar(v[0], v[1], v[2]));
      image = padded;
      if (!label.empty()) {
        cv::Mat lpadded;
        cv::copyMakeBorder(label, lpadded, 0, pad_h, 0, pad_w, cv::BORDER_CONSTANT,
                           cv::Scalar::all(t.label_padding_value));
        label = lpadded;
      }
    }
    const int h_off = rand_below(rng, image.rows - crop_h + 1);
    const int w_off = rand_below(rng, image.cols - crop_w + 1);
    const cv::Rect roi(w_off, h_off, crop_w, crop_h);
    image = image(roi).clone();
    if (!label.empty()) label = label(roi).clone();
  } else if (t.type == "RandomHorizontalFlip") {
    if (uniform01(rng) < t.prob) {
      cv::Mat out;
      cv::flip(image, out, 1);
      image = out;
      if (!label.empty()) {
        cv::Mat lout;
        cv::flip(label, lout, 1);
        label = lout;
      }
    }
  } else if (t.type == "RandomDistort") {
    random_distort(t, image, rng);
  } else if (t.type == "Normalize") {
    normalize(t, image);
  } else {
    throw Error(str_cat("unsupported transform type '", t.type, "'."));
  }
}

void apply_transforms(const std::vector<TransformSpec>& transforms, cv::Mat& image, cv::Mat& label,
                      std::mt19937& rng) {
  SEGSLIM_CHECK(!image.empty() && image.channels() == 3, "transforms need an HxWx3 image, got ",
                image.channels(), " channel(s).");
  if (image.depth() != CV_32F) {
    cv::Mat f;
    image.convertTo(f, CV_32F);
    image = f;
  }
  for (const auto& t : transforms) apply_transform(t, image, label, rng);
}

}  // namespace segslim

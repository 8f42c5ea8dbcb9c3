#include <set>

#include "common/error.h"
#include "data/transforms.h"
#include "support/test_support.h"

namespace segslim {
namespace {

TransformSpec make(const std::string& type) {
  TransformSpec t;
  t.type = type;
  return t;
}

// w x h float image whose channel c at (x, y) is 100 * c + 10 * y + x; label = 10 * y + x.
void grid(int w, int h, cv::Mat& image, cv::Mat& label) {
  image.create(h, w, CV_32FC3);
  label.create(h, w, CV_32S);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) image.at<cv::Vec3f>(y, x)[c] = 100.0f * c + 10 * y + x;
      label.at<int>(y, x) = 10 * y + x;
    }
}

TEST(Transforms, NormalizeOnePixelByHand) {
  cv::Mat image(1, 1, CV_8UC3, cv::Scalar(200, 100, 10)), label;
  TransformSpec t = make("Normalize");
  t.mean = {0.1, 0.2, 0.3};
  t.stddev = {0.5, 0.25, 2.0};
  std::mt19937 rng(0);
  apply_transforms({t}, image, label, rng);
  ASSERT_EQ(image.type(), CV_32FC3);
  const cv::Vec3f v = image.at<cv::Vec3f>(0, 0);
  EXPECT_NEAR(v[0], (200 / 255.0 - 0.1) / 0.5, 1e-6);   // 1.368627...
  EXPECT_NEAR(v[1], (100 / 255.0 - 0.2) / 0.25, 1e-6);  // 0.768627...
  EXPECT_NEAR(v[2], (10 / 255.0 - 0.3) / 2.0, 1e-6);    // -0.130392...
  EXPECT_NEAR(v[0], 1.3686275, 1e-6);
  EXPECT_NEAR(v[2], -0.1303922, 1e-6);
}

TEST(Transforms, ResizeNearestAndLabelsAlwaysNearest) {
  for (const char* interp : {"NEAREST", "LINEAR", "CUBIC"}) {
    SCOPED_TRACE(interp);
    cv::Mat image, label;
    grid(4, 2, image, label);
    TransformSpec t = make("Resize");
    t.target_size = {2, 1};
    t.interp = interp;
    std::mt19937 rng(0);
    apply_transform(t, image, label, rng);
    ASSERT_EQ(image.cols, 2);
    ASSERT_EQ(image.rows, 1);
    ASSERT_EQ(label.cols, 2);
    ASSERT_EQ(label.rows, 1);
    // Nearest with scale 2: dst x 0 <- src x 0, dst x 1 <- src x 2 (OpenCV floor mapping).
    EXPECT_EQ(label.at<int>(0, 0), 0);
    EXPECT_EQ(label.at<int>(0, 1), 2);
    if (std::string(interp) == "NEAREST") {
      EXPECT_EQ(image.at<cv::Vec3f>(0, 1)[1], 102.0f);
    }
  }
}

TEST(Transforms, ResizeKeepRatio) {
  // scale = min(max(512,512)/max(480,360), min(512,512)/min(480,360)) = min(1.0667, 1.4222)
  EXPECT_EQ(keep_ratio_size(480, 360, {512, 512}), (std::array<int, 2>{512, 384}));
  // scale = min(40/100, 20/50) = 0.4
  EXPECT_EQ(keep_ratio_size(100, 50, {40, 20}), (std::array<int, 2>{40, 20}));
  cv::Mat image, label;
  grid(10, 5, image, label);
  TransformSpec t = make("Resize");
  t.target_size = {4, 4};
  t.keep_ratio = true;  // scale = min(4/10, 4/5) = 0.4 -> 4 x 2
  std::mt19937 rng(0);
  apply_transform(t, image, label, rng);
  EXPECT_EQ(image.cols, 4);
  EXPECT_EQ(image.rows, 2);
}

TEST(Transforms, HorizontalFlip) {
  cv::Mat image, label;
  grid(3, 2, image, label);
  TransformSpec t = make("RandomHorizontalFlip");
  t.prob = 1.0;
  std::mt19937 rng(0);
  apply_transform(t, image, label, rng);
  EXPECT_EQ(label.at<int>(0, 0), 2);
  EXPECT_EQ(label.at<int>(1, 2), 10);
  EXPECT_EQ(image.at<cv::Vec3f>(1, 0)[2], 212.0f);
  t.prob = 0.0;
  apply_transform(t, image, label, rng);
  EXPECT_EQ(label.at<int>(0, 0), 2);
}

TEST(Transforms, PaddingCropPadsBottomRight) {
  cv::Mat image, label;
  grid(3, 2, image, label);
  TransformSpec t = make("RandomPaddingCrop");
  t.crop_size = {5, 4};
  t.label_padding_value = 255;
  std::mt19937 rng(0);
  apply_transform(t, image, label, rng);
  ASSERT_EQ(image.cols, 5);
  ASSERT_EQ(image.rows, 4);
  EXPECT_EQ(label.at<int>(1, 2), 12);  // original stays top-left
  EXPECT_EQ(label.at<int>(0, 3), 255);
  EXPECT_EQ(label.at<int>(3, 0), 255);
  EXPECT_EQ(image.at<cv::Vec3f>(3, 4)[0], 127.5f);
  EXPECT_EQ(image.at<cv::Vec3f>(1, 2)[1], 112.0f);
}

TEST(Transforms, PaddingCropTakesEveryWindow) {
  std::set<int> corners;
  for (uint32_t seed = 0; seed < 200; ++seed) {
    cv::Mat image, label;
    grid(4, 4, image, label);
    TransformSpec t = make("RandomPaddingCrop");
    t.crop_size = {2, 3};  // w 2, h 3 -> offsets x 0..2, y 0..1
    std::mt19937 rng(seed);
    apply_transform(t, image, label, rng);
    ASSERT_EQ(label.cols, 2);
    ASSERT_EQ(label.rows, 3);
    const int c = label.at<int>(0, 0);
    EXPECT_EQ(label.at<int>(0, 1), c + 1);
    EXPECT_EQ(label.at<int>(2, 0), c + 20);
    EXPECT_EQ(image.at<cv::Vec3f>(0, 0)[0], static_cast<float>(c));
    corners.insert(c);
  }
  EXPECT_EQ(corners, (std::set<int>{0, 1, 2, 10, 11, 12}));
}

TEST(Transforms, ResizeStepScalingFactors) {
  EXPECT_EQ(step_scale_factors(0.75, 1.25, 0.25), (std::vector<double>{0.75, 1.0, 1.25}));
  EXPECT_EQ(step_scale_factors(0.5, 2.0, 0.25),
            (std::vector<double>{0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}));
  EXPECT_EQ(step_scale_factors(1.0, 1.0, 0.25), (std::vector<double>{1.0}));
  EXPECT_TRUE(step_scale_factors(0.5, 2.0, 0.0).empty());

  std::set<std::pair<int, int>> sizes;
  for (uint32_t seed = 0; seed < 100; ++seed) {
    cv::Mat image, label;
    grid(40, 20, image, label);
    std::mt19937 rng(seed);
    apply_transform(make("ResizeStepScaling"), image, label, rng);
    EXPECT_EQ(label.size(), image.size());
    sizes.insert({image.cols, image.rows});
  }
  // 0.75, 1.0, 1.25 of 40x20
  EXPECT_EQ(sizes, (std::set<std::pair<int, int>>{{30, 15}, {40, 20}, {50, 25}}));
}

TEST(Transforms, RandomDistortKeepsGeometryAndIsIdentityWhenOff) {
  cv::Mat image, label;
  grid(6, 5, image, label);
  TransformSpec off = make("RandomDistort");
  off.brightness_prob = off.contrast_prob = off.saturation_prob = off.hue_prob = 0;
  cv::Mat before = image.clone();
  std::mt19937 rng(1);
  apply_transform(off, image, label, rng);
  EXPECT_EQ(cv::norm(image, before, cv::NORM_INF), 0.0);

  TransformSpec on = make("RandomDistort");
  on.brightness_prob = on.contrast_prob = on.saturation_prob = on.hue_prob = 1;
  on.sharpness_prob = 1;
  apply_transform(on, image, label, rng);
  EXPECT_EQ(image.size(), cv::Size(6, 5));
  EXPECT_EQ(image.type(), CV_32FC3);
  double lo, hi;
  cv::minMaxLoc(image.reshape(1), &lo, &hi);
  EXPECT_GE(lo, 0);
  EXPECT_LE(hi, 255);
  // brightness with range 0 -> factor 1: unchanged
  TransformSpec b = off;
  b.brightness_prob = 1;
  b.brightness_range = 0;
  before = image.clone();
  apply_transform(b, image, label, rng);
  EXPECT_EQ(cv::norm(image, before, cv::NORM_INF), 0.0);
}

TEST(Transforms, SameSeedSameResult) {
  TransformSpec crop = make("RandomPaddingCrop");
  crop.crop_size = {5, 5};
  const std::vector<TransformSpec> ts = {make("ResizeStepScaling"), crop,
                                         make("RandomHorizontalFlip"), make("RandomDistort"),
                                         make("Normalize")};
  cv::Mat a, la, b, lb;
  grid(8, 6, a, la);
  grid(8, 6, b, lb);
  std::mt19937 r1(42), r2(42);
  apply_transforms(ts, a, la, r1);
  apply_transforms(ts, b, lb, r2);
  EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0.0);
  EXPECT_EQ(cv::norm(la, lb, cv::NORM_INF), 0.0);
}

}  // namespace
}  // namespace segslim

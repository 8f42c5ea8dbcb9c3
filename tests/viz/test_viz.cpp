#include <gtest/gtest.h>

#include "viz/iou_chart.h"
#include "viz/palette.h"

namespace segslim {
namespace {

TEST(Palette, DefaultMatchesTheVocBitInterleavingScheme) {
  auto p = default_palette(8);
  // id 1 -> bit 0 into red's MSB; id 2 -> green; id 4 -> blue; id 7 -> all three
  EXPECT_EQ(p[0], (Rgb{0, 0, 0}));
  EXPECT_EQ(p[1], (Rgb{128, 0, 0}));
  EXPECT_EQ(p[2], (Rgb{0, 128, 0}));
  EXPECT_EQ(p[4], (Rgb{0, 0, 128}));
  EXPECT_EQ(p[7], (Rgb{128, 128, 128}));
  // id 8 spills into the next bit: (8 >> 3) & 1 -> red bit 6
  EXPECT_EQ(default_palette(9)[8], (Rgb{64, 0, 0}));
}

TEST(Palette, ColorizeWritesBgrAndBlackOutsideThePalette) {
  at::Tensor ids = at::tensor({0, 1, 5}, at::kLong).reshape({1, 3});
  cv::Mat c = colorize(ids, {{10, 20, 30}, {40, 50, 60}});
  EXPECT_EQ(c.at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));
  EXPECT_EQ(c.at<cv::Vec3b>(0, 1), cv::Vec3b(60, 50, 40));
  EXPECT_EQ(c.at<cv::Vec3b>(0, 2), cv::Vec3b(0, 0, 0));
  cv::Mat img(1, 3, CV_8UC3, cv::Scalar(100, 100, 100));
  EXPECT_EQ(overlay(img, c, 0.5).at<cv::Vec3b>(0, 0), cv::Vec3b(65, 60, 55));
}

// Bar lengths are proportional to the values: count the bar colour's pixels along each row.
TEST(IouChart, BarLengthsAreProportional) {
  BarChartLayout layout;
  const std::vector<Rgb> colors = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  cv::Mat img = iou_bar_chart({"a", "b", "c"}, {1.0, 0.5, 0.0}, colors, "IoU", layout);
  auto bar_pixels = [&](int row, const Rgb& c) {
    const int y = layout.margin + (row + 1) * layout.row_height + layout.row_height / 2;
    int n = 0;
    for (int x = 0; x < img.cols; ++x) n += img.at<cv::Vec3b>(y, x) == cv::Vec3b(c[2], c[1], c[0]);
    return n;
  };
  EXPECT_EQ(bar_pixels(0, colors[0]), layout.bar_width);
  EXPECT_EQ(bar_pixels(1, colors[1]), layout.bar_width / 2);
  EXPECT_EQ(bar_pixels(2, colors[2]), 0);
}

}  // namespace
}  // namespace segslim

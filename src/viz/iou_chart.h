#pragma once
// Per-class IoU as a horizontal bar chart (a picture a person reads faster than a table).
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "viz/palette.h"

namespace segslim {

struct BarChartLayout {
  int label_width = 150, bar_width = 400, row_height = 24, margin = 12;
};

// One bar per class, length proportional to its value in [0, 1], drawn in the class colour,
// with the value printed beside it; a title line on top. Returns BGR 8-bit.
cv::Mat iou_bar_chart(const std::vector<std::string>& names, const std::vector<double>& values,
                      const std::vector<Rgb>& colors, const std::string& title,
                      const BarChartLayout& layout = {});

}  // namespace segslim

#include "viz/iou_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "common/error.h"

namespace segslim {

cv::Mat iou_bar_chart(const std::vector<std::string>& names, const std::vector<double>& values,
                      const std::vector<Rgb>& colors, const std::string& title,
                      const BarChartLayout& l) {
  SEGSLIM_CHECK(names.size() == values.size(), "chart needs one name per value");
  const int rows = static_cast<int>(values.size());
  const int width = l.margin * 2 + l.label_width + l.bar_width + 70;
  const int height = l.margin * 2 + (rows + 1) * l.row_height;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  cv::putText(img, title, {l.margin, l.margin + l.row_height - 8}, font, 0.5, {0, 0, 0}, 1,
              cv::LINE_AA);
  const int x0 = l.margin + l.label_width;
  for (int i = 0; i < rows; ++i) {
    const int y = l.margin + (i + 1) * l.row_height;
    const double v = std::clamp(values[i], 0.0, 1.0);
    const Rgb c = i < static_cast<int>(colors.size()) ? colors[i] : Rgb{70, 130, 180};
    cv::putText(img, names[i], {l.margin, y + l.row_height - 8}, font, 0.45, {0, 0, 0}, 1,
                cv::LINE_AA);
    // frame first, so the bar drawn over it keeps its full length
    cv::rectangle(img, {x0, y + 3}, {x0 + l.bar_width - 1, y + l.row_height - 4}, {160, 160, 160},
                  1);
    const int len = static_cast<int>(std::lround(v * l.bar_width));
    if (len > 0)
      cv::rectangle(img, {x0, y + 3}, {x0 + len - 1, y + l.row_height - 4},
                    cv::Scalar(c[2], c[1], c[0]), cv::FILLED);
    cv::putText(img, fmt::format("{:.3f}", values[i]), {x0 + l.bar_width + 8, y + l.row_height - 8},
                font, 0.45, {0, 0, 0}, 1, cv::LINE_AA);
  }
  return img;
}

}  // namespace segslim

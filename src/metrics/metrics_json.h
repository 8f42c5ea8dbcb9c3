#pragma once
#include <nlohmann/json.hpp>

#include "metrics/confusion_matrix.h"

namespace segslim {

// {miou, acc, macc, kappa, dice, class_iou, class_acc, class_dice, num_pixels}: the keys
// `segslim eval --json` and compress_report.json share.
nlohmann::json to_json(const SegMetrics& m);
SegMetrics metrics_from_json(const nlohmann::json& j);

}  // namespace segslim

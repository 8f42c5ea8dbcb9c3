#include "metrics/metrics_json.h"

namespace segslim {

nlohmann::json to_json(const SegMetrics& m) {
  return {{"miou", m.miou},
          {"acc", m.acc},
          {"macc", m.macc},
          {"kappa", m.kappa},
          {"dice", m.dice},
          {"class_iou", m.class_iou},
          {"class_acc", m.class_acc},
          {"class_dice", m.class_dice},
          {"num_pixels", m.num_pixels}};
}

SegMetrics metrics_from_json(const nlohmann::json& j) {
  SegMetrics m;
  m.miou = j.at("miou");
  m.acc = j.at("acc");
  m.macc = j.at("macc");
  m.kappa = j.at("kappa");
  m.dice = j.at("dice");
  m.class_iou = j.at("class_iou").get<std::vector<double>>();
  m.class_acc = j.at("class_acc").get<std::vector<double>>();
  m.class_dice = j.at("class_dice").get<std::vector<double>>();
  m.num_pixels = j.at("num_pixels");
  return m;
}

}  // namespace segslim

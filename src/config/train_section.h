#pragma once
// The compression config's TrainConfig reader, for other configs that embed the same section
// (`segslim train`'s, config/fit_config.h). Included by parser .cpp files only (yaml-cpp).
#include "config/compress_config.h"
#include "config/yaml_reader.h"

namespace segslim {

// `node` is the TrainConfig map; errors name `TrainConfig.<key>` and the file:line.
TrainConfig parse_train_section(const yaml::Source& src, const YAML::Node& node);

}  // namespace segslim

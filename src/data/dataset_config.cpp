#include "data/dataset_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "common/error.h"
#include "common/files.h"
#include "common/strings.h"
#include "config/yaml_reader.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kDatasetTypes = {"Dataset", "Cityscapes", "ADE20K", "CamVid"};
const std::vector<std::string> kDatasetKeys = {
    "type", "dataset_root", "train_path", "val_path",    "num_classes", "ignore_index",
    "mode", "to_rgb",       "transforms", "class_names", "palette",     "separator"};

const std::map<std::string, std::vector<std::string>>& transform_key_table() {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"Resize", {"target_size", "keep_ratio", "interp"}},
      {"ResizeStepScaling", {"min_scale_factor", "max_scale_factor", "scale_step_size"}},
      {"RandomPaddingCrop", {"crop_size", "im_padding_value", "label_padding_value"}},
      {"RandomHorizontalFlip", {"prob"}},
      {"RandomDistort",
       {"brightness_range", "brightness_prob", "contrast_range", "contrast_prob",
        "saturation_range", "saturation_prob", "hue_range", "hue_prob", "sharpness_range",
        "sharpness_prob"}},
      {"Normalize", {"mean", "std"}},
  };
  return table;
}

using Ctx = yaml::Source;
using yaml::check_keys;
using yaml::get;
using yaml::suggestion;

template <size_t N, typename T>
std::array<T, N> get_array(const Ctx& ctx, const YAML::Node& node, const std::string& path,
                           const char* what, bool allow_scalar) {
  std::array<T, N> out{};
  if (allow_scalar && node.IsScalar()) {
    out.fill(get<T>(ctx, node, path, what));
    return out;
  }
  SEGSLIM_CHECK(node.IsSequence() && node.size() == N, ctx.where(node), ": '", path,
                "' must be a list of ", N, " ", what, allow_scalar ? " (or one number)" : "", ".");
  for (size_t i = 0; i < N; ++i) out[i] = get<T>(ctx, node[i], str_cat(path, "[", i, "]"), what);
  return out;
}

TransformSpec parse_transform(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  SEGSLIM_CHECK(node.IsMap(), ctx.where(node), ": '", path,
                "' must be a map with a 'type' key, e.g. {type: Normalize}.");
  SEGSLIM_CHECK(node["type"], ctx.where(node), ": '", path,
                "' has no 'type'. Supported types: ", join(transform_types()), ".");
  TransformSpec t;
  t.type = get<std::string>(ctx, node["type"], path + ".type", "a string");
  const auto& table = transform_key_table();
  if (!table.count(t.type))
    throw Error(str_cat(ctx.where(node["type"]), ": unsupported transform type '", t.type, "' at '",
                        path, ".type'.", suggestion(t.type, transform_types()),
                        " Supported types: ", join(transform_types()), "."));
  std::vector<std::string> valid = {"type"};
  for (const auto& k : table.at(t.type)) valid.push_back(k);
  check_keys(ctx, node, path, valid);

  auto num = [&](const char* key, double& field) {
    if (node[key]) field = get<double>(ctx, node[key], path + "." + key, "a number");
  };
  auto prob = [&](const char* key, double& field) {
    num(key, field);
    SEGSLIM_CHECK(field >= 0 && field <= 1, ctx.where(node[key]), ": '", path, ".", key,
                  "' must be a probability in [0, 1], got ", field, ".");
  };
  auto size2 = [&](const char* key, std::array<int, 2>& field) {
    if (!node[key]) return;
    field = get_array<2, int>(ctx, node[key], path + "." + key, "integers [width, height]", false);
    SEGSLIM_CHECK(field[0] > 0 && field[1] > 0, ctx.where(node[key]), ": '", path, ".", key,
                  "' must be positive [width, height].");
  };

  if (t.type == "Resize") {
    size2("target_size", t.target_size);
    if (node["keep_ratio"])
      t.keep_ratio = get<bool>(ctx, node["keep_ratio"], path + ".keep_ratio", "true or false");
    if (node["interp"]) {
      t.interp = get<std::string>(ctx, node["interp"], path + ".interp", "a string");
      const std::vector<std::string> interps = {"LINEAR", "NEAREST",  "AREA",
                                                "CUBIC",  "LANCZOS4", "RANDOM"};
      SEGSLIM_CHECK(std::count(interps.begin(), interps.end(), t.interp), ctx.where(node["interp"]),
                    ": '", path, ".interp' is '", t.interp, "'; valid: ", join(interps), ".");
    }
  } else if (t.type == "ResizeStepScaling") {
    num("min_scale_factor", t.min_scale_factor);
    num("max_scale_factor", t.max_scale_factor);
    num("scale_step_size", t.scale_step_size);
    SEGSLIM_CHECK(t.min_scale_factor > 0 && t.min_scale_factor <= t.max_scale_factor &&
                      t.scale_step_size >= 0,
                  ctx.where(node), ": '", path,
                  "' needs 0 < min_scale_factor <= max_scale_factor and scale_step_size >= 0, "
                  "got ",
                  t.min_scale_factor, ", ", t.max_scale_factor, ", ", t.scale_step_size, ".");
  } else if (t.type == "RandomPaddingCrop") {
    size2("crop_size", t.crop_size);
    if (node["im_padding_value"])
      t.im_padding_value = get_array<3, double>(ctx, node["im_padding_value"],
                                                path + ".im_padding_value", "numbers", true);
    if (node["label_padding_value"])
      t.label_padding_value =
          get<int>(ctx, node["label_padding_value"], path + ".label_padding_value", "an integer");
  } else if (t.type == "RandomHorizontalFlip") {
    prob("prob", t.prob);
  } else if (t.type == "RandomDistort") {
    num("brightness_range", t.brightness_range);
    prob("brightness_prob", t.brightness_prob);
    num("contrast_range", t.contrast_range);
    prob("contrast_prob", t.contrast_prob);
    num("saturation_range", t.saturation_range);
    prob("saturation_prob", t.saturation_prob);
    if (node["hue_range"])
      t.hue_range = get<int>(ctx, node["hue_range"], path + ".hue_range", "an integer");
    prob("hue_prob", t.hue_prob);
    num("sharpness_range", t.sharpness_range);
    prob("sharpness_prob", t.sharpness_prob);
  } else if (t.type == "Normalize") {
    if (node["mean"])
      t.mean = get_array<3, double>(ctx, node["mean"], path + ".mean", "numbers", false);
    if (node["std"])
      t.stddev = get_array<3, double>(ctx, node["std"], path + ".std", "numbers", false);
    for (double s : t.stddev)
      SEGSLIM_CHECK(s != 0, ctx.where(node), ": '", path, ".std' must not contain 0.");
  }
  return t;
}

bool starts_with_dotdot(const std::string& p) {
  return p.rfind("../", 0) == 0 || p.rfind("..\\", 0) == 0 || p == "..";
}

// See load_data_config: YAML dir first (always for "../"), then dataset_root.
std::string resolve_list(const std::string& list, const std::string& base_dir,
                         const std::string& root) {
  fs::path p(list);
  if (p.is_absolute()) return p.lexically_normal().string();
  fs::path from_yaml = (fs::path(base_dir) / p).lexically_normal();
  if (starts_with_dotdot(list) || fs::is_regular_file(from_yaml)) return from_yaml.string();
  return (fs::path(root) / p).lexically_normal().string();
}

std::string absolute_from(const std::string& p, const std::string& base) {
  fs::path path(p);
  if (path.is_absolute()) return path.lexically_normal().string();
  return (fs::absolute(fs::path(base)) / path).lexically_normal().string();
}

DatasetSpec parse_dataset(const Ctx& ctx, const YAML::Node& node, const std::string& section,
                          const std::string& base_dir) {
  SEGSLIM_CHECK(node.IsMap(), ctx.where(node), ": '", section, "' must be a map.");
  check_keys(ctx, node, section, kDatasetKeys);
  DatasetSpec s;
  s.section = section;
  s.config_path = ctx.origin;
  s.mode = section == "train_dataset" ? "train" : "val";
  auto key = [&](const char* k) { return section + "." + k; };

  if (node["type"]) {
    s.type = get<std::string>(ctx, node["type"], key("type"), "a string");
    if (!std::count(kDatasetTypes.begin(), kDatasetTypes.end(), s.type))
      throw Error(str_cat(ctx.where(node["type"]), ": unsupported dataset type '", s.type, "' at '",
                          key("type"), "'.", suggestion(s.type, kDatasetTypes),
                          " Supported: ", join(kDatasetTypes), "."));
  }
  // Type defaults (PaddleSeg's classes; CamVid follows SegNet: 11 classes, void = 11).
  if (s.type == "Cityscapes") s.num_classes = 19;
  if (s.type == "ADE20K") {
    s.num_classes = 150;
    s.reduce_zero_label = true;
  }
  if (s.type == "CamVid") {
    s.num_classes = 11;
    s.ignore_index = 11;
  }

  SEGSLIM_CHECK(node["dataset_root"], ctx.where(node), ": '", section,
                "' has no 'dataset_root' (the folder the list file's paths are relative to).");
  s.dataset_root = absolute_from(
      get<std::string>(ctx, node["dataset_root"], key("dataset_root"), "a path"), base_dir);
  if (node["train_path"])
    s.train_path = get<std::string>(ctx, node["train_path"], key("train_path"), "a path");
  if (node["val_path"])
    s.val_path = get<std::string>(ctx, node["val_path"], key("val_path"), "a path");
  if (node["num_classes"])
    s.num_classes = get<int>(ctx, node["num_classes"], key("num_classes"), "an integer");
  if (node["ignore_index"])
    s.ignore_index = get<int>(ctx, node["ignore_index"], key("ignore_index"), "an integer");
  if (node["mode"]) {
    s.mode = get<std::string>(ctx, node["mode"], key("mode"), "a string");
    SEGSLIM_CHECK(s.mode == "train" || s.mode == "val", ctx.where(node["mode"]), ": '", key("mode"),
                  "' is '", s.mode, "'; valid: train, val.");
  }
  if (node["to_rgb"]) s.to_rgb = get<bool>(ctx, node["to_rgb"], key("to_rgb"), "true or false");
  if (node["separator"]) {
    // PaddleSeg's separator between image and label on a list line; whitespace is the default.
    const auto sep = get<std::string>(ctx, node["separator"], key("separator"), "a string");
    SEGSLIM_CHECK(sep.empty() || sep == " " || sep == "\t", ctx.where(node["separator"]), ": '",
                  key("separator"), "' other than whitespace is not supported.");
  }
  if (node["transforms"]) {
    const YAML::Node& list = node["transforms"];
    SEGSLIM_CHECK(list.IsSequence() || list.IsNull(), ctx.where(list), ": '", key("transforms"),
                  "' must be a list of {type: ...} maps.");
    for (size_t i = 0; i < list.size(); ++i)
      s.transforms.push_back(
          parse_transform(ctx, list[i], str_cat(section, ".transforms[", i, "]")));
  }
  if (node["class_names"]) {
    const YAML::Node& names = node["class_names"];
    SEGSLIM_CHECK(names.IsSequence(), ctx.where(names), ": '", key("class_names"),
                  "' must be a list of strings.");
    for (size_t i = 0; i < names.size(); ++i)
      s.class_names.push_back(
          get<std::string>(ctx, names[i], str_cat(key("class_names"), "[", i, "]"), "a string"));
  }
  if (node["palette"]) {
    const YAML::Node& pal = node["palette"];
    SEGSLIM_CHECK(pal.IsSequence(), ctx.where(pal), ": '", key("palette"),
                  "' must be a list of [r, g, b].");
    for (size_t i = 0; i < pal.size(); ++i) {
      const std::string p = str_cat(key("palette"), "[", i, "]");
      auto rgb = get_array<3, int>(ctx, pal[i], p, "integers [r, g, b]", false);
      std::array<uint8_t, 3> c{};
      for (int j = 0; j < 3; ++j) {
        SEGSLIM_CHECK(rgb[j] >= 0 && rgb[j] <= 255, ctx.where(pal[i]), ": '", p,
                      "' has a value outside 0..255.");
        c[j] = static_cast<uint8_t>(rgb[j]);
      }
      s.palette.push_back(c);
    }
  }

  SEGSLIM_CHECK(s.num_classes > 0, ctx.where(node), ": '", section,
                "' needs a positive 'num_classes' (type ", s.type, ").");
  SEGSLIM_CHECK(s.ignore_index < 0 || s.ignore_index >= s.num_classes, ctx.where(node), ": '",
                key("ignore_index"), "' = ", s.ignore_index, " is a valid class id (num_classes ",
                s.num_classes, "); the ignore index must lie outside [0, ", s.num_classes, ").");
  SEGSLIM_CHECK(s.class_names.empty() || static_cast<int>(s.class_names.size()) == s.num_classes,
                ctx.where(node["class_names"]), ": '", key("class_names"), "' has ",
                s.class_names.size(), " names but num_classes is ", s.num_classes, ".");
  SEGSLIM_CHECK(s.palette.empty() || static_cast<int>(s.palette.size()) == s.num_classes,
                ctx.where(node["palette"]), ": '", key("palette"), "' has ", s.palette.size(),
                " colours but num_classes is ", s.num_classes, ".");

  const std::string& list = s.mode == "train" ? s.train_path : s.val_path;
  if (!list.empty()) {
    s.list_path = resolve_list(list, base_dir, s.dataset_root);
  } else {
    SEGSLIM_CHECK(s.type == "Cityscapes" || s.type == "ADE20K", ctx.where(node), ": '", section,
                  "' (mode ", s.mode, ") needs '", s.mode == "train" ? "train_path" : "val_path",
                  "': a list file of 'image label' lines relative to dataset_root.");
  }
  return s;
}

}  // namespace

const std::vector<std::string>& transform_types() {
  static const std::vector<std::string> types = [] {
    std::vector<std::string> out;
    for (const auto& kv : transform_key_table()) out.push_back(kv.first);
    return out;
  }();
  return types;
}

const std::vector<std::string>& transform_keys(const std::string& type) {
  const auto& table = transform_key_table();
  auto it = table.find(type);
  SEGSLIM_CHECK(it != table.end(), "unsupported transform type '", type,
                "'. Supported: ", join(transform_types()), ".");
  return it->second;
}

DataConfig parse_data_config(const std::string& yaml_text, const std::string& origin,
                             const std::string& base_dir) {
  Ctx ctx{origin, ""};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(str_cat(origin, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  SEGSLIM_CHECK(root.IsMap(), origin,
                ": expected a PaddleSeg config (a map with train_dataset / val_dataset).");
  DataConfig cfg;
  cfg.path = origin;
  if (root["batch_size"]) {
    cfg.batch_size = get<int>(ctx, root["batch_size"], "batch_size", "an integer");
    SEGSLIM_CHECK(*cfg.batch_size > 0, ctx.where(root["batch_size"]),
                  ": 'batch_size' must be positive.");
  }
  if (root["train_dataset"])
    cfg.train = parse_dataset(ctx, root["train_dataset"], "train_dataset", base_dir);
  if (root["val_dataset"])
    cfg.val = parse_dataset(ctx, root["val_dataset"], "val_dataset", base_dir);
  SEGSLIM_CHECK(cfg.train || cfg.val, origin, ": has neither 'train_dataset' nor 'val_dataset'.");
  return cfg;
}

DataConfig load_data_config(const std::string& path) {
  const std::string text = read_file(path, "dataset config");
  fs::path dir = fs::absolute(fs::path(path)).parent_path();
  return parse_data_config(text, path, dir.string());
}

void override_source(DatasetSpec& spec, const std::string& root, const std::string& list) {
  const std::string cwd = fs::current_path().string();
  if (!root.empty()) {
    const std::string old_root = spec.dataset_root;
    spec.dataset_root = absolute_from(root, cwd);
    // A list that lived under the old root follows the root; one found beside the YAML stays.
    const std::string& written = spec.mode == "train" ? spec.train_path : spec.val_path;
    if (list.empty() && !written.empty() && !fs::path(written).is_absolute()) {
      const fs::path under_old = (fs::path(old_root) / written).lexically_normal();
      if (spec.list_path == under_old.string())
        spec.list_path = (fs::path(spec.dataset_root) / written).lexically_normal().string();
    }
  }
  if (!list.empty()) {
    fs::path p(list);
    if (p.is_absolute() || fs::is_regular_file(p))
      spec.list_path = absolute_from(list, cwd);
    else
      spec.list_path = (fs::path(spec.dataset_root) / p).lexically_normal().string();
    (spec.mode == "train" ? spec.train_path : spec.val_path) = list;
  }
}

const DatasetSpec& eval_dataset(const DataConfig& config) {
  if (config.val) return *config.val;
  SEGSLIM_CHECK(config.train, config.path, ": has no 'val_dataset' (or 'train_dataset').");
  return *config.train;
}

}  // namespace segslim

#pragma once
// PaddleSeg-style dataset YAML. Users bring the `train_dataset` / `val_dataset` sections of their
// PaddleSeg configs; the other top-level sections (model, optimizer, loss, ...) are ignored so a
// full PaddleSeg config can be passed as is. Inside a dataset section or a transform every key is
// checked: a typo is an Error naming the file, the key path and the valid keys, because a
// silently ignored `meen:` would train and evaluate with the wrong normalisation.
//
// The parsed form is plain structs (no yaml-cpp in this header).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace segslim {

// One entry of `transforms`. Only the fields of `type` are meaningful; the others keep their
// PaddleSeg defaults.
struct TransformSpec {
  std::string type;  // Resize, ResizeStepScaling, RandomPaddingCrop, RandomHorizontalFlip,
                     // RandomDistort, Normalize

  // Resize
  std::array<int, 2> target_size{512, 512};  // [w, h]
  bool keep_ratio = false;
  std::string interp = "LINEAR";  // LINEAR NEAREST AREA CUBIC LANCZOS4 RANDOM

  // ResizeStepScaling
  double min_scale_factor = 0.75;
  double max_scale_factor = 1.25;
  double scale_step_size = 0.25;

  // RandomPaddingCrop
  std::array<int, 2> crop_size{512, 512};  // [w, h]
  std::array<double, 3> im_padding_value{127.5, 127.5, 127.5};
  int label_padding_value = 255;

  // RandomHorizontalFlip
  double prob = 0.5;

  // RandomDistort (PaddleSeg defaults; sharpness is off unless sharpness_prob is set)
  double brightness_range = 0.5, brightness_prob = 0.5;
  double contrast_range = 0.5, contrast_prob = 0.5;
  double saturation_range = 0.5, saturation_prob = 0.5;
  int hue_range = 18;
  double hue_prob = 0.5;
  double sharpness_range = 0.5, sharpness_prob = 0.0;

  // Normalize: (pixel / 255 - mean) / std, per channel in the image's channel order
  std::array<double, 3> mean{0.5, 0.5, 0.5};
  std::array<double, 3> stddev{0.5, 0.5, 0.5};  // YAML key `std`
};

// The transform types segslim implements, and the keys each accepts (besides `type`).
const std::vector<std::string>& transform_types();
const std::vector<std::string>& transform_keys(const std::string& type);

struct DatasetSpec {
  std::string section = "dataset";  // "train_dataset" / "val_dataset" (for messages)
  std::string config_path;          // the YAML it came from ("" when built in code)
  std::string type = "Dataset";     // Dataset, Cityscapes, ADE20K, CamVid
  std::string dataset_root;         // absolute
  std::string train_path;           // as written in the YAML
  std::string val_path;             // as written in the YAML
  // The list file of `mode`, resolved. Empty for Cityscapes / ADE20K without a list: their
  // standard directory layout under dataset_root is scanned instead.
  std::string list_path;
  int num_classes = 0;
  int ignore_index = 255;
  std::string mode = "train";  // train | val
  bool to_rgb = true;          // false keeps OpenCV's BGR channel order
  // ADE20K stores 0 = "other" and classes as 1..150; PaddleSeg maps 0 -> ignore and id -> id-1.
  bool reduce_zero_label = false;
  std::vector<TransformSpec> transforms;
  std::vector<std::string> class_names;         // segslim extension
  std::vector<std::array<uint8_t, 3>> palette;  // segslim extension, [r, g, b] per class
};

struct DataConfig {
  std::string path;                  // the YAML file
  std::optional<int> batch_size;     // top-level batch_size, when present
  std::optional<DatasetSpec> train;  // train_dataset
  std::optional<DatasetSpec> val;    // val_dataset
};

// Parses a PaddleSeg-style YAML. Relative dataset_root (and any path starting with "../") is
// resolved against the YAML's directory; a relative list path is tried against the YAML's
// directory first and then against dataset_root. Throws segslim::Error naming the file.
DataConfig load_data_config(const std::string& path);

// Same, from YAML text; `origin` stands in for the file name and `base_dir` for its directory.
DataConfig parse_data_config(const std::string& yaml_text, const std::string& origin,
                             const std::string& base_dir);

// CLI overrides (--data-root DIR, --list FILE); an empty string leaves that part alone.
// `root` is taken relative to the working directory. `list` is taken relative to the working
// directory when it exists there, else relative to the (new) root. Changing only the root keeps
// the list's name as written in the YAML and re-resolves it under the new root.
void override_source(DatasetSpec& spec, const std::string& root, const std::string& list);

// Picks the section a command evaluates on: val_dataset, else train_dataset. Throws naming the
// file when neither is present.
const DatasetSpec& eval_dataset(const DataConfig& config);

}  // namespace segslim

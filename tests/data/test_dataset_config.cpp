#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/dataset_config.h"
#include "support/test_support.h"

namespace segslim {
namespace {

namespace fs = std::filesystem;

// Writes `text` as `<dir>/config.yml` under a fresh folder and returns the path.
std::string write_config(const std::string& dir_name, const std::string& text) {
  fs::path dir = fs::path(testing::temp_dir()) / dir_name;
  fs::create_directories(dir);
  fs::path p = dir / "config.yml";
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::string& path) {
  try {
    load_data_config(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kFull = R"(
batch_size: 4
iters: 1000
model:
  type: PPLiteSeg
  backbone: {type: STDC1}
optimizer: {type: sgd}
train_dataset:
  type: Dataset
  dataset_root: data/voc
  train_path: data/voc/train.txt
  num_classes: 3
  mode: train
  transforms:
    - type: ResizeStepScaling
      min_scale_factor: 0.5
      max_scale_factor: 2.0
      scale_step_size: 0.25
    - type: RandomPaddingCrop
      crop_size: [64, 32]
      label_padding_value: 7
    - type: RandomHorizontalFlip
    - type: RandomDistort
      brightness_range: 0.4
    - type: Normalize
val_dataset:
  type: Dataset
  dataset_root: /abs/root
  val_path: val.txt
  num_classes: 3
  ignore_index: 9
  to_rgb: false
  class_names: [a, b, c]
  palette: [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
  transforms:
    - type: Resize
      target_size: [20, 10]
      keep_ratio: true
      interp: NEAREST
    - type: Normalize
      mean: [0.1, 0.2, 0.3]
      std: [1, 2, 4]
)";

TEST(DataConfig, ParsesPaddleSegConfigAndIgnoresOtherSections) {
  const std::string path = write_config("cfg_full", kFull);
  const fs::path dir = fs::path(path).parent_path();
  DataConfig c = load_data_config(path);
  ASSERT_TRUE(c.batch_size.has_value());
  EXPECT_EQ(*c.batch_size, 4);
  ASSERT_TRUE(c.train && c.val);

  const DatasetSpec& t = *c.train;
  EXPECT_EQ(t.section, "train_dataset");
  EXPECT_EQ(t.mode, "train");
  EXPECT_EQ(t.dataset_root, (dir / "data/voc").string());
  // train.txt does not exist beside the YAML, so it is resolved under dataset_root.
  EXPECT_EQ(t.list_path, (dir / "data/voc/data/voc/train.txt").string());
  EXPECT_EQ(t.num_classes, 3);
  EXPECT_EQ(t.ignore_index, 255);
  EXPECT_TRUE(t.to_rgb);
  ASSERT_EQ(t.transforms.size(), 5u);
  EXPECT_EQ(t.transforms[0].type, "ResizeStepScaling");
  EXPECT_DOUBLE_EQ(t.transforms[0].min_scale_factor, 0.5);
  EXPECT_DOUBLE_EQ(t.transforms[0].max_scale_factor, 2.0);
  EXPECT_EQ(t.transforms[1].crop_size, (std::array<int, 2>{64, 32}));
  EXPECT_EQ(t.transforms[1].label_padding_value, 7);
  EXPECT_DOUBLE_EQ(t.transforms[1].im_padding_value[2], 127.5);
  EXPECT_DOUBLE_EQ(t.transforms[2].prob, 0.5);
  EXPECT_DOUBLE_EQ(t.transforms[3].brightness_range, 0.4);
  EXPECT_DOUBLE_EQ(t.transforms[3].contrast_range, 0.5);
  EXPECT_EQ(t.transforms[3].hue_range, 18);
  EXPECT_EQ(t.transforms[4].mean, (std::array<double, 3>{0.5, 0.5, 0.5}));
  EXPECT_EQ(t.transforms[4].stddev, (std::array<double, 3>{0.5, 0.5, 0.5}));

  const DatasetSpec& v = *c.val;
  EXPECT_EQ(v.mode, "val");
  EXPECT_EQ(v.dataset_root, "/abs/root");
  EXPECT_EQ(v.list_path, "/abs/root/val.txt");
  EXPECT_EQ(v.ignore_index, 9);
  EXPECT_FALSE(v.to_rgb);
  EXPECT_EQ(v.class_names, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_EQ(v.palette.size(), 3u);
  EXPECT_EQ(v.palette[1], (std::array<uint8_t, 3>{4, 5, 6}));
  ASSERT_EQ(v.transforms.size(), 2u);
  EXPECT_EQ(v.transforms[0].target_size, (std::array<int, 2>{20, 10}));
  EXPECT_TRUE(v.transforms[0].keep_ratio);
  EXPECT_EQ(v.transforms[0].interp, "NEAREST");
  EXPECT_EQ(v.transforms[1].mean, (std::array<double, 3>{0.1, 0.2, 0.3}));
  EXPECT_EQ(v.transforms[1].stddev, (std::array<double, 3>{1, 2, 4}));
}

TEST(DataConfig, ListBesideYamlWinsAndDotDotIsYamlRelative) {
  const std::string path = write_config("cfg_lists", R"(
train_dataset:
  dataset_root: ../somewhere/root
  train_path: mylist.txt
  num_classes: 2
val_dataset:
  dataset_root: root
  val_path: ../lists/val.txt
  num_classes: 2
)");
  const fs::path dir = fs::path(path).parent_path();
  std::ofstream(dir / "mylist.txt") << "a.png b.png\n";
  DataConfig c = load_data_config(path);
  EXPECT_EQ(c.train->dataset_root, (dir.parent_path() / "somewhere/root").string());
  EXPECT_EQ(c.train->list_path, (dir / "mylist.txt").string());
  EXPECT_EQ(c.val->list_path, (dir.parent_path() / "lists/val.txt").string());
}

TEST(DataConfig, UnknownTransformKeyNamesFileKeyPathAndSuggestion) {
  const std::string path = write_config("cfg_typo", R"(
val_dataset:
  dataset_root: .
  val_path: val.txt
  num_classes: 2
  transforms:
    - type: Resize
    - type: Normalize
      meen: [0.5, 0.5, 0.5]
)");
  const std::string msg = error_of(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("val_dataset.transforms[1].meen"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Did you mean 'mean'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Valid keys (closest first): mean, std, type"), std::string::npos) << msg;
  EXPECT_NE(msg.find(":9:"), std::string::npos) << msg;  // the line of `meen`
}

TEST(DataConfig, UnknownDatasetKeyAndTypeErrors) {
  std::string msg = error_of(write_config("cfg_badkey", R"(
train_dataset:
  dataset_root: .
  train_path: t.txt
  num_classes: 2
  ignore_idx: 4
)"));
  EXPECT_NE(msg.find("train_dataset.ignore_idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Did you mean 'ignore_index'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.yml"), std::string::npos) << msg;

  msg = error_of(write_config("cfg_badtype", R"(
val_dataset:
  dataset_root: .
  val_path: v.txt
  num_classes: 2
  transforms:
    - type: RandomHorizontalFlop
)"));
  EXPECT_NE(msg.find("RandomHorizontalFlop"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Did you mean 'RandomHorizontalFlip'"), std::string::npos) << msg;

  msg = error_of(write_config("cfg_badvalue", R"(
val_dataset:
  dataset_root: .
  val_path: v.txt
  num_classes: 2
  transforms:
    - type: Normalize
      mean: [0.5, 0.5]
)"));
  EXPECT_NE(msg.find("val_dataset.transforms[0].mean"), std::string::npos) << msg;

  msg = error_of(write_config("cfg_nolist", R"(
val_dataset:
  dataset_root: .
  num_classes: 2
)"));
  EXPECT_NE(msg.find("val_path"), std::string::npos) << msg;

  msg = error_of(write_config("cfg_palette", R"(
val_dataset:
  dataset_root: .
  val_path: v.txt
  num_classes: 2
  palette: [[0, 0, 0]]
)"));
  EXPECT_NE(msg.find("val_dataset.palette"), std::string::npos) << msg;
}

TEST(DataConfig, TypeDefaults) {
  DataConfig c = load_data_config(write_config("cfg_types", R"(
train_dataset: {type: Cityscapes, dataset_root: city, mode: train}
val_dataset: {type: CamVid, dataset_root: camvid, val_path: val.txt}
)"));
  EXPECT_EQ(c.train->num_classes, 19);
  EXPECT_EQ(c.train->ignore_index, 255);
  EXPECT_TRUE(c.train->list_path.empty());  // standard layout
  EXPECT_EQ(c.val->num_classes, 11);
  EXPECT_EQ(c.val->ignore_index, 11);
}

TEST(DataConfig, OverrideSource) {
  const std::string path = write_config("cfg_override", R"(
val_dataset:
  dataset_root: root
  val_path: val.txt
  num_classes: 2
)");
  DatasetSpec s = *load_data_config(path).val;
  override_source(s, "/new/root", "");
  EXPECT_EQ(s.dataset_root, "/new/root");
  EXPECT_EQ(s.list_path, "/new/root/val.txt");
  override_source(s, "", "other.txt");
  EXPECT_EQ(s.list_path, "/new/root/other.txt");
  override_source(s, "", "/lists/x.txt");
  EXPECT_EQ(s.list_path, "/lists/x.txt");
}

TEST(DataConfig, BundledConfigsParse) {
  for (const char* name : {"camvid_espnet.yml", "sample_camvid.yml", "cityscapes.yml"}) {
    SCOPED_TRACE(name);
    DataConfig c = load_data_config(testing::source_dir() + "/configs/" + name);
    ASSERT_TRUE(c.train && c.val);
    EXPECT_EQ(c.val->class_names.size(), static_cast<size_t>(c.val->num_classes));
    EXPECT_EQ(c.val->palette.size(), static_cast<size_t>(c.val->num_classes));
  }
  DataConfig camvid = load_data_config(testing::source_dir() + "/configs/camvid_espnet.yml");
  EXPECT_EQ(camvid.val->num_classes, 11);
  EXPECT_EQ(camvid.val->ignore_index, 11);
  EXPECT_FALSE(camvid.val->to_rgb);
  ASSERT_EQ(camvid.val->transforms.size(), 1u);
  EXPECT_DOUBLE_EQ(camvid.val->transforms[0].stddev[0], 72.12568664550781);
  EXPECT_EQ(camvid.val->palette[4], (std::array<uint8_t, 3>{60, 40, 222}));  // Pavement
  EXPECT_EQ(fs::path(camvid.val->list_path).filename(), "val.txt");
}

}  // namespace
}  // namespace segslim

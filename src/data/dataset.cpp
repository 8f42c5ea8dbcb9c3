#include "data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "common/error.h"
#include "data/transforms.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

std::string where_from(const DatasetSpec& spec) {
  if (spec.config_path.empty()) return "";
  return str_cat(" (", spec.section, " of ", spec.config_path, ")");
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// PNG colour type 3 = indexed. OpenCV expands a palette PNG to colours, so the class ids such a
// file stores are lost; say so instead of only "3 channels".
bool is_palette_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[26] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  static const unsigned char kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return in && std::equal(kSig, kSig + 8, head) && head[25] == 3;
}

std::string size_str(const cv::Mat& m) { return str_cat(m.cols, "x", m.rows); }

}  // namespace

SegDataset::SegDataset(DatasetSpec spec) : spec_(std::move(spec)) {
  SEGSLIM_CHECK(spec_.num_classes > 0, "dataset", where_from(spec_), " needs num_classes > 0.");
  const fs::path root(spec_.dataset_root);
  if (!spec_.list_path.empty()) {
    const std::string& list = spec_.list_path;
    SEGSLIM_CHECK(fs::is_regular_file(list), "list file '", list, "'", where_from(spec_),
                  " does not exist.");
    std::ifstream in(list);
    SEGSLIM_CHECK(in, "cannot read list file '", list, "'.");
    std::string line;
    for (int lineno = 1; std::getline(in, line); ++lineno) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::istringstream fields(line);
      std::vector<std::string> parts;
      for (std::string f; fields >> f;) parts.push_back(f);
      if (parts.empty()) continue;
      const std::string at = str_cat(list, ":", lineno);
      SEGSLIM_CHECK(parts.size() == 2, at, ": expected 'image_path label_path' (2 fields), got ",
                    parts.size(), ": '", line, "'.");
      const std::string image = (root / parts[0]).lexically_normal().string();
      const std::string label = (root / parts[1]).lexically_normal().string();
      SEGSLIM_CHECK(fs::is_regular_file(image), at, ": image '", image,
                    "' does not exist (paths are relative to dataset_root '", spec_.dataset_root,
                    "').");
      SEGSLIM_CHECK(fs::is_regular_file(label), at, ": label '", label,
                    "' does not exist (paths are relative to dataset_root '", spec_.dataset_root,
                    "').");
      images_.push_back(image);
      labels_.push_back(label);
      origins_.push_back(at);
    }
    SEGSLIM_CHECK(!images_.empty(), "list file '", list, "'", where_from(spec_),
                  " has no 'image label' lines.");
    return;
  }

  // No list: the type's standard layout, as PaddleSeg's Cityscapes / ADE20K classes glob it.
  fs::path image_dir, label_dir;
  std::string image_suffix, label_suffix;
  if (spec_.type == "Cityscapes") {
    image_dir = root / "leftImg8bit" / spec_.mode;
    label_dir = root / "gtFine" / spec_.mode;
    image_suffix = "_leftImg8bit.png";
    label_suffix = "_gtFine_labelTrainIds.png";
  } else if (spec_.type == "ADE20K") {
    const char* split = spec_.mode == "train" ? "training" : "validation";
    image_dir = root / "images" / split;
    label_dir = root / "annotations" / split;
    image_suffix = ".jpg";
    label_suffix = ".png";
  } else {
    throw Error(str_cat("dataset", where_from(spec_), " of type ", spec_.type,
                        " needs a list file (train_path / val_path)."));
  }
  SEGSLIM_CHECK(fs::is_directory(image_dir), "dataset", where_from(spec_), " of type ", spec_.type,
                " has no list file and '", image_dir.string(), "' does not exist; set ",
                spec_.mode == "train" ? "train_path" : "val_path",
                " or point dataset_root at the standard layout.");
  std::vector<fs::path> found;
  for (const auto& e : fs::recursive_directory_iterator(image_dir))
    if (e.is_regular_file() && ends_with(e.path().filename().string(), image_suffix))
      found.push_back(e.path());
  std::sort(found.begin(), found.end());
  for (const auto& p : found) {
    const std::string name = p.filename().string();
    const std::string stem = name.substr(0, name.size() - image_suffix.size());
    const fs::path label =
        label_dir / fs::relative(p.parent_path(), image_dir) / (stem + label_suffix);
    SEGSLIM_CHECK(fs::is_regular_file(label), "image '", p.string(), "' has no label '",
                  label.string(), "'.");
    images_.push_back(p.lexically_normal().string());
    labels_.push_back(label.lexically_normal().string());
    origins_.push_back(p.string());
  }
  SEGSLIM_CHECK(!images_.empty(), "no '*", image_suffix, "' images under '", image_dir.string(),
                "'", where_from(spec_), ".");
}

cv::Mat read_image(const std::string& path, bool to_rgb, const std::string& context) {
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);  // BGR, as PaddleSeg's cv2.imread
  SEGSLIM_CHECK(!image.empty(), "cannot read image '", path, "' (", context,
                "): missing, or not an image format OpenCV decodes.");
  if (to_rgb) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
  return image;
}

at::Tensor image_to_chw_tensor(const cv::Mat& image) {
  SEGSLIM_CHECK(image.type() == CV_32FC3, "expected an HxWx3 float32 image");
  cv::Mat img = image.isContinuous() ? image : image.clone();
  return at::from_blob(img.data, {img.rows, img.cols, 3}, at::kFloat)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);  // always copies out of the cv::Mat
}

Sample SegDataset::load(size_t index, std::mt19937& rng) const {
  SEGSLIM_CHECK(index < images_.size(), "sample index ", index, " out of range (dataset has ",
                images_.size(), ").");
  const std::string& image_path = images_[index];
  const std::string& label_path = labels_[index];
  const std::string& at = origins_[index];

  cv::Mat image = read_image(image_path, spec_.to_rgb, at);

  cv::Mat raw = cv::imread(label_path, cv::IMREAD_UNCHANGED);
  SEGSLIM_CHECK(!raw.empty(), "cannot decode label '", label_path, "' (", at, ").");
  if (raw.channels() != 1) {
    throw Error(str_cat(
        "label '", label_path, "' (", at, ") has ", raw.channels(), " channels",
        is_palette_png(label_path) ? " (a palette PNG, which OpenCV expands to colours)" : "",
        "; it must be a single-channel 8/16-bit id map (pixel value = class id, ignore_index = "
        "unlabelled), not a colour rendering. Convert it to a grayscale PNG of class ids."));
  }
  SEGSLIM_CHECK(raw.depth() == CV_8U || raw.depth() == CV_16U, "label '", label_path, "' (", at,
                ") must be an 8- or 16-bit unsigned id map.");
  SEGSLIM_CHECK(raw.size() == image.size(), "label '", label_path, "' is ", size_str(raw), " (WxH)",
                " but image '", image_path, "' is ", size_str(image), " (", at,
                "); they must be the same size.");

  cv::Mat label;
  raw.convertTo(label, CV_32S);
  const int n = spec_.num_classes, ignore = spec_.ignore_index;
  for (int y = 0; y < label.rows; ++y) {
    int* p = label.ptr<int>(y);
    for (int x = 0; x < label.cols; ++x) {
      int v = p[x];
      // ADE20K: uint8 (label - 1), so "other" (0) becomes 255 = ignore.
      if (spec_.reduce_zero_label) p[x] = v = (v == 0 ? 255 : v - 1);
      if ((v >= 0 && v < n) || v == ignore) continue;
      throw Error(str_cat("label '", label_path, "' (", at, ") has value ", v, " at (x ", x, ", y ",
                          y, "); valid are class ids 0..", n - 1, " and ignore_index ", ignore,
                          where_from(spec_), "."));
    }
  }

  apply_transforms(spec_.transforms, image, label, rng);

  // The only out-of-range ids left come from RandomPaddingCrop's label_padding_value (PaddleSeg
  // default 255); with another ignore_index (CamVid: 11) they would reach the loss as bogus class
  // ids, so padding always means "ignore".
  for (int y = 0; y < label.rows; ++y) {
    int* p = label.ptr<int>(y);
    for (int x = 0; x < label.cols; ++x)
      if ((p[x] < 0 || p[x] >= n) && p[x] != ignore) p[x] = ignore;
  }

  Sample s;
  s.image = image_to_chw_tensor(image);
  cv::Mat lab = label.isContinuous() ? label : label.clone();
  s.label = at::from_blob(lab.data, {lab.rows, lab.cols}, at::kInt).to(at::kLong);
  s.image_path = image_path;
  s.label_path = label_path;
  return s;
}

}  // namespace segslim

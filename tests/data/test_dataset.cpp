#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "common/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "support/test_support.h"

namespace segslim {
namespace {

namespace fs = std::filesystem;

// A fresh folder with n synthetic w x h pairs (img_i.png / lab_i.png, ids 0..2) and list.txt.
struct Synthetic {
  std::string root;
  std::string list;
};

Synthetic make_synthetic(const std::string& name, int n, int w = 8, int h = 6) {
  fs::path root = fs::path(testing::temp_dir()) / name;
  fs::remove_all(root);
  fs::create_directories(root);
  std::ofstream list(root / "list.txt");
  for (int i = 0; i < n; ++i) {
    cv::Mat image(h, w, CV_8UC3), label(h, w, CV_8U);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        image.at<cv::Vec3b>(y, x) = cv::Vec3b(10 * i + x, 20 + 5 * y, 200 - i);
        label.at<uint8_t>(y, x) = (x + y + i) % 3;
      }
    cv::imwrite((root / str_cat("img_", i, ".png")).string(), image);
    cv::imwrite((root / str_cat("lab_", i, ".png")).string(), label);
    list << "img_" << i << ".png lab_" << i << ".png\n";
  }
  return {root.string(), (root / "list.txt").string()};
}

DatasetSpec spec_for(const Synthetic& s, std::vector<TransformSpec> transforms = {}) {
  DatasetSpec spec;
  spec.dataset_root = s.root;
  spec.list_path = s.list;
  spec.num_classes = 3;
  spec.transforms = std::move(transforms);
  return spec;
}

void write_list(const Synthetic& s, const std::string& text) { std::ofstream(s.list) << text; }

std::string load_error(const DatasetSpec& spec, size_t index = 0) {
  try {
    SegDataset ds(spec);
    std::mt19937 rng(0);
    ds.load(index, rng);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Dataset, LoadsImageAsChwAndLabelAsInt64) {
  Synthetic s = make_synthetic("ds_basic", 2);
  SegDataset ds(spec_for(s));
  ASSERT_EQ(ds.size(), 2u);
  std::mt19937 rng(0);
  Sample smp = ds.load(1, rng);
  EXPECT_EQ(smp.image.sizes(), (at::IntArrayRef{3, 6, 8}));
  EXPECT_EQ(smp.image.scalar_type(), at::kFloat);
  EXPECT_EQ(smp.label.sizes(), (at::IntArrayRef{6, 8}));
  EXPECT_EQ(smp.label.scalar_type(), at::kLong);
  // pixel (x 3, y 2) of image 1 was written BGR = (13, 30, 199); to_rgb gives R first.
  EXPECT_EQ(smp.image[0][2][3].item<float>(), 199.0f);
  EXPECT_EQ(smp.image[1][2][3].item<float>(), 30.0f);
  EXPECT_EQ(smp.image[2][2][3].item<float>(), 13.0f);
  EXPECT_EQ(smp.label[2][3].item<int64_t>(), (3 + 2 + 1) % 3);
}

TEST(Dataset, NormalizeByHandInRgbAndBgrOrder) {
  Synthetic s = make_synthetic("ds_norm", 1);
  TransformSpec norm;
  norm.type = "Normalize";
  norm.mean = {0.1, 0.2, 0.3};
  norm.stddev = {0.5, 0.25, 2.0};
  // pixel (x 3, y 2) of image 0: B 3, G 30, R 200
  for (bool to_rgb : {true, false}) {
    SCOPED_TRACE(to_rgb);
    DatasetSpec spec = spec_for(s, {norm});
    spec.to_rgb = to_rgb;
    SegDataset ds(spec);
    std::mt19937 rng(0);
    at::Tensor im = ds.load(0, rng).image;
    const double first = to_rgb ? 200 : 3, last = to_rgb ? 3 : 200;
    EXPECT_NEAR(im[0][2][3].item<float>(), (first / 255 - 0.1) / 0.5, 1e-6);
    EXPECT_NEAR(im[1][2][3].item<float>(), (30 / 255.0 - 0.2) / 0.25, 1e-6);
    EXPECT_NEAR(im[2][2][3].item<float>(), (last / 255 - 0.3) / 2.0, 1e-6);
  }
  // The same numbers written out: RGB c0 = (200/255 - 0.1)/0.5, BGR c0 = (3/255 - 0.1)/0.5.
  EXPECT_NEAR((200 / 255.0 - 0.1) / 0.5, 1.3686275, 1e-7);
  EXPECT_NEAR((3 / 255.0 - 0.1) / 0.5, -0.1764706, 1e-7);
}

TEST(Dataset, MissingImageNamesListLineAndPath) {
  Synthetic s = make_synthetic("ds_missing", 1);
  write_list(s, "img_0.png lab_0.png\nnope.png lab_0.png\n");
  const std::string msg = load_error(spec_for(s));
  EXPECT_NE(msg.find(s.list + ":2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nope.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(Dataset, MalformedLineNamesListAndLine) {
  Synthetic s = make_synthetic("ds_malformed", 1);
  write_list(s, "img_0.png lab_0.png\n\nimg_0.png\n");
  const std::string msg = load_error(spec_for(s));
  EXPECT_NE(msg.find(s.list + ":3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 fields"), std::string::npos) << msg;
}

TEST(Dataset, MissingListFile) {
  Synthetic s = make_synthetic("ds_nolist", 1);
  DatasetSpec spec = spec_for(s);
  spec.list_path = s.root + "/absent.txt";
  const std::string msg = load_error(spec);
  EXPECT_NE(msg.find("absent.txt"), std::string::npos) << msg;
}

TEST(Dataset, OutOfRangeLabelNamesFileValueAndRange) {
  Synthetic s = make_synthetic("ds_range", 1);
  cv::Mat label(6, 8, CV_8U, cv::Scalar(1));
  label.at<uint8_t>(4, 5) = 7;
  cv::imwrite(s.root + "/lab_0.png", label);
  const std::string msg = load_error(spec_for(s));
  EXPECT_NE(msg.find(s.root + "/lab_0.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("value 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0..2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ignore_index 255"), std::string::npos) << msg;

  // 255 is the ignore index: fine.
  label.at<uint8_t>(4, 5) = 255;
  cv::imwrite(s.root + "/lab_0.png", label);
  EXPECT_EQ(load_error(spec_for(s)), "");
}

TEST(Dataset, LabelSizeMismatchNamesBothFilesAndSizes) {
  Synthetic s = make_synthetic("ds_size", 1);
  cv::imwrite(s.root + "/lab_0.png", cv::Mat(5, 7, CV_8U, cv::Scalar(0)));
  const std::string msg = load_error(spec_for(s));
  EXPECT_NE(msg.find(s.root + "/lab_0.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find(s.root + "/img_0.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("7x5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("8x6"), std::string::npos) << msg;
}

TEST(Dataset, ColourLabelIsRejected) {
  Synthetic s = make_synthetic("ds_colour", 1);
  cv::imwrite(s.root + "/lab_0.png", cv::Mat(6, 8, CV_8UC3, cv::Scalar(0, 0, 1)));
  const std::string msg = load_error(spec_for(s));
  EXPECT_NE(msg.find(s.root + "/lab_0.png"), std::string::npos) << msg;
  EXPECT_NE(msg.find("single-channel"), std::string::npos) << msg;
}

TEST(Dataset, PaddingBecomesIgnoreIndex) {
  Synthetic s = make_synthetic("ds_pad", 1, 4, 4);
  TransformSpec crop;
  crop.type = "RandomPaddingCrop";
  crop.crop_size = {6, 5};
  crop.label_padding_value = 255;
  DatasetSpec spec = spec_for(s, {crop});
  spec.ignore_index = 11;
  spec.num_classes = 11;
  SegDataset ds(spec);
  std::mt19937 rng(0);
  Sample smp = ds.load(0, rng);
  EXPECT_EQ(smp.label[4][5].item<int64_t>(), 11);
  EXPECT_EQ(smp.label[0][0].item<int64_t>(), 0);
}

std::vector<TransformSpec> random_transforms() {
  TransformSpec crop, flip, distort;
  crop.type = "RandomPaddingCrop";
  crop.crop_size = {5, 4};
  flip.type = "RandomHorizontalFlip";
  distort.type = "RandomDistort";
  return {distort, crop, flip};
}

std::vector<Batch> all_batches(DataLoader& loader) {
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

TEST(Loader, DeterministicAcrossWorkerCounts) {
  Synthetic s = make_synthetic("ld_det", 7);
  SegDataset ds(spec_for(s, random_transforms()));
  std::vector<std::vector<Batch>> runs;
  for (int workers : {0, 1, 2, 3}) {
    DataLoader loader(ds, {/*batch_size=*/2, /*shuffle=*/true, /*drop_last=*/false, workers, 5});
    loader.set_epoch(3);
    runs.push_back(all_batches(loader));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    ASSERT_EQ(runs[r].size(), 4u);
    for (size_t b = 0; b < runs[0].size(); ++b) {
      EXPECT_EQ(runs[r][b].image_paths, runs[0][b].image_paths);
      EXPECT_TRUE(runs[r][b].images.equal(runs[0][b].images)) << "run " << r << " batch " << b;
      EXPECT_TRUE(runs[r][b].labels.equal(runs[0][b].labels));
    }
  }
  EXPECT_EQ(runs[0].back().images.size(0), 1);  // 7 = 2 + 2 + 2 + 1
  EXPECT_EQ(runs[0][0].images.sizes(), (at::IntArrayRef{2, 3, 4, 5}));
  EXPECT_EQ(runs[0][0].labels.sizes(), (at::IntArrayRef{2, 4, 5}));
  EXPECT_EQ(runs[0][0].labels.scalar_type(), at::kLong);
}

TEST(Loader, ShufflingPerEpoch) {
  Synthetic s = make_synthetic("ld_shuffle", 10, 4, 4);
  SegDataset ds(spec_for(s));
  DataLoader a(ds, {3, true, true, 2, 11});
  EXPECT_EQ(a.num_batches(), 3u);  // drop_last: 10 / 3
  const auto e0 = a.epoch_order(0), e1 = a.epoch_order(1);
  EXPECT_NE(e0, e1);
  std::set<size_t> seen(e0.begin(), e0.end());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(*seen.rbegin(), 9u);

  a.set_epoch(1);
  std::vector<size_t> got;
  for (const auto& b : all_batches(a)) got.insert(got.end(), b.indices.begin(), b.indices.end());
  EXPECT_EQ(got, std::vector<size_t>(e1.begin(), e1.begin() + 9));
  EXPECT_FALSE(a.next().has_value());

  DataLoader b(ds, {3, true, true, 1, 11});  // same seed -> same order
  EXPECT_EQ(b.epoch_order(1), e1);
  DataLoader c(ds, {3, true, true, 1, 12});
  EXPECT_NE(c.epoch_order(1), e1);
  DataLoader plain(ds, {4, false, false, 2, 11});
  EXPECT_EQ(plain.num_batches(), 3u);
  EXPECT_EQ(plain.epoch_order(7), (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(plain.next()->image_paths.front(), ds.image_path(0));
}

TEST(Loader, MixedSizesSuggestBatchOne) {
  Synthetic s = make_synthetic("ld_mixed", 2);
  cv::Mat big(10, 12, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite(s.root + "/img_1.png", big);
  cv::imwrite(s.root + "/lab_1.png", cv::Mat(10, 12, CV_8U, cv::Scalar(0)));
  SegDataset ds(spec_for(s));
  DataLoader loader(ds, {2, false, false, 2, 0});
  try {
    loader.next();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--batch 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Resize"), std::string::npos) << msg;
    EXPECT_NE(msg.find("img_1.png"), std::string::npos) << msg;
  }
}

TEST(Loader, WorkerErrorIsRethrownInCaller) {
  Synthetic s = make_synthetic("ld_error", 4);
  cv::imwrite(s.root + "/lab_2.png", cv::Mat(6, 8, CV_8U, cv::Scalar(9)));
  SegDataset ds(spec_for(s));
  DataLoader loader(ds, {1, false, false, 3, 0});
  EXPECT_TRUE(loader.next().has_value());
  EXPECT_TRUE(loader.next().has_value());
  try {
    loader.next();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lab_2.png"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(loader.next().has_value());  // the loader stays usable
  EXPECT_FALSE(loader.next().has_value());
}

TEST(Dataset, SampleConfigMatchesHandFormula) {
  DataConfig cfg = load_data_config(testing::source_dir() + "/configs/sample_camvid.yml");
  SegDataset ds(*cfg.val);
  ASSERT_EQ(ds.size(), 4u);
  std::mt19937 rng(0);
  Sample smp = ds.load(0, rng);
  EXPECT_EQ(smp.image.sizes(), (at::IntArrayRef{3, 360, 480}));
  EXPECT_NE(smp.image_path.find("0016E5_07959.png"), std::string::npos);

  // to_rgb: false -> channel c is the file's BGR channel c; x = (p / 255 - mean[c]) / std[c].
  const double mean[3] = {0.43267080269607844, 0.42513290106081497, 0.41189497405407477};
  const double std_[3] = {72.12568664550781, 72.69076538085938, 69.90434265136719};
  cv::Mat raw = cv::imread(smp.image_path, cv::IMREAD_COLOR);
  cv::Mat raw_label = cv::imread(smp.label_path, cv::IMREAD_UNCHANGED);
  for (auto [y, x] : {std::pair{100, 200}, std::pair{359, 0}}) {
    const cv::Vec3b p = raw.at<cv::Vec3b>(y, x);
    for (int c = 0; c < 3; ++c)
      EXPECT_NEAR(smp.image[c][y][x].item<float>(), (p[c] / 255.0 - mean[c]) / std_[c], 1e-7)
          << "c " << c << " y " << y << " x " << x;
    EXPECT_EQ(smp.label[y][x].item<int64_t>(), raw_label.at<uint8_t>(y, x));
  }
  // Train split with its random transforms keeps the 480x360 crop.
  SegDataset train(*cfg.train);
  std::mt19937 rng2(3);
  Sample t = train.load(2, rng2);
  EXPECT_EQ(t.image.sizes(), (at::IntArrayRef{3, 360, 480}));
  EXPECT_LE(t.label.max().item<int64_t>(), 11);
}

TEST(Dataset, SharedDatasetsLoad) {
  if (testing::shared_dir().empty()) GTEST_SKIP() << "../shared not present";
  DataConfig camvid = load_data_config(testing::source_dir() + "/configs/camvid_espnet.yml");
  SegDataset cv_val(*camvid.val);
  EXPECT_EQ(cv_val.size(), 101u);
  std::mt19937 rng(0);
  EXPECT_EQ(cv_val.load(100, rng).label.sizes(), (at::IntArrayRef{360, 480}));

  DataConfig city = load_data_config(testing::source_dir() + "/configs/cityscapes.yml");
  SegDataset city_val(*city.val);
  ASSERT_EQ(city_val.size(), 2u);
  Sample smp = city_val.load(0, rng);
  EXPECT_EQ(smp.image.sizes(), (at::IntArrayRef{3, 1024, 2048}));
  // Without the list, type Cityscapes scans the standard layout and finds the same pairs.
  DatasetSpec layout = *city.val;
  layout.list_path.clear();
  SegDataset scanned(layout);
  ASSERT_EQ(scanned.size(), 2u);
  EXPECT_EQ(scanned.image_path(1), city_val.image_path(1));
  EXPECT_EQ(scanned.label_path(1), city_val.label_path(1));
}

}  // namespace
}  // namespace segslim

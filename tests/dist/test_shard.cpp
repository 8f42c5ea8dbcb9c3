// Data-parallel sharding: the ranks' batches together are exactly the batch one process with
// the global batch size loads (same samples, same augmentation), and positions in images let a
// run resume with another number of processes.
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "common/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/shard.h"
#include "support/test_support.h"

namespace segslim {
namespace {

namespace fs = std::filesystem;

// n synthetic 8x6 image/label pairs, each image distinct, with random transforms so that the
// augmentation seed of every sample shows in its pixels.
DatasetSpec synthetic_spec(const std::string& name, int n) {
  fs::path root = fs::path(testing::temp_dir()) / name;
  fs::remove_all(root);
  fs::create_directories(root);
  std::ofstream list(root / "list.txt");
  for (int i = 0; i < n; ++i) {
    cv::Mat image(6, 8, CV_8UC3), label(6, 8, CV_8U);
    for (int y = 0; y < 6; ++y)
      for (int x = 0; x < 8; ++x) {
        image.at<cv::Vec3b>(y, x) = cv::Vec3b(7 * i + x, 30 + 9 * y, 250 - 3 * i);
        label.at<uint8_t>(y, x) = (x + 2 * y + i) % 3;
      }
    cv::imwrite((root / str_cat("img_", i, ".png")).string(), image);
    cv::imwrite((root / str_cat("lab_", i, ".png")).string(), label);
    list << "img_" << i << ".png lab_" << i << ".png\n";
  }
  DatasetSpec spec;
  spec.dataset_root = root.string();
  spec.list_path = (root / "list.txt").string();
  spec.num_classes = 3;
  TransformSpec crop, flip, distort;
  crop.type = "RandomPaddingCrop";
  crop.crop_size = {5, 4};
  flip.type = "RandomHorizontalFlip";
  distort.type = "RandomDistort";
  spec.transforms = {distort, crop, flip};
  return spec;
}

LoaderOptions options(int batch_size, dist::Shard shard, int workers = 2) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = true;
  o.drop_last = true;
  o.num_workers = workers;
  o.seed = 17;
  o.shard = shard;
  return o;
}

std::vector<Batch> epoch_batches(const SegDataset& ds, const LoaderOptions& o, int epoch,
                                 size_t first_sample = 0) {
  DataLoader loader(ds, o);
  loader.set_epoch_at_sample(epoch, first_sample);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

TEST(Shard, PositionsCutEachGlobalBatchIntoRankRuns) {
  // 3 ranks, batch 2: global batch 6 at position 12 -> [12,14) [14,16) [16,18).
  for (int r = 0; r < 3; ++r) {
    const auto p = dist::shard_positions(12, 2, {r, 3}, 100);
    EXPECT_EQ(p.begin, 12u + 2u * r);
    EXPECT_EQ(p.end, 14u + 2u * r);
  }
  // Clipped to the epoch: a short last global batch leaves rank 2 nothing.
  EXPECT_EQ(dist::shard_positions(12, 2, {1, 3}, 15).size(), 1u);
  EXPECT_EQ(dist::shard_positions(12, 2, {2, 3}, 15).size(), 0u);
  EXPECT_EQ(dist::global_batches(0, 2, 3, 20, true), 3u);   // 18 of 20
  EXPECT_EQ(dist::global_batches(0, 2, 3, 20, false), 4u);  // + the partial one
  EXPECT_EQ(dist::global_batches(5, 2, 3, 20, true), 2u);   // 15 left
  EXPECT_EQ(dist::global_batches(20, 2, 3, 20, false), 0u);
  EXPECT_THROW(dist::shard_positions(0, 2, {3, 3}, 10), Error);
  EXPECT_THROW(dist::shard_positions(0, 2, {-1, 3}, 10), Error);
}

TEST(Shard, RanksTogetherLoadTheSingleProcessGlobalBatch) {
  const SegDataset ds(synthetic_spec("shard_union", 11));
  for (int world : {2, 3}) {
    const int per_rank = 2;
    for (int epoch : {0, 3}) {
      // The reference: one process, the global batch, its own loader.
      const auto single = epoch_batches(ds, options(per_rank * world, {0, 1}), epoch);
      ASSERT_EQ(single.size(), 11u / (per_rank * world));
      std::vector<std::vector<Batch>> ranks;
      for (int r = 0; r < world; ++r)
        ranks.push_back(epoch_batches(ds, options(per_rank, {r, world}, r % 3), epoch));
      std::set<size_t> seen;
      for (size_t b = 0; b < single.size(); ++b) {
        std::vector<size_t> indices;
        std::vector<at::Tensor> images, labels;
        for (int r = 0; r < world; ++r) {
          ASSERT_EQ(ranks[r].size(), single.size()) << "world " << world << " rank " << r;
          const Batch& part = ranks[r][b];
          ASSERT_EQ(part.images.size(0), per_rank);
          indices.insert(indices.end(), part.indices.begin(), part.indices.end());
          images.push_back(part.images);
          labels.push_back(part.labels);
        }
        // Same samples in the same order, and the same augmented pixels (seeded per sample).
        EXPECT_EQ(indices, single[b].indices) << "world " << world << " batch " << b;
        EXPECT_TRUE(at::cat(images).equal(single[b].images)) << "world " << world << " b " << b;
        EXPECT_TRUE(at::cat(labels).equal(single[b].labels));
        for (size_t i : indices) EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " twice";
      }
    }
  }
}

TEST(Shard, EpochsReshuffleTheSameWayOnEveryRank) {
  const SegDataset ds(synthetic_spec("shard_epochs", 8));
  const auto e0 = epoch_batches(ds, options(2, {1, 2}), 0);
  const auto e1 = epoch_batches(ds, options(2, {1, 2}), 1);
  DataLoader probe(ds, options(2, {0, 2}));
  EXPECT_NE(probe.epoch_order(0), probe.epoch_order(1));
  // Rank 1's part of global batch 0 is positions [2, 4) of that epoch's order.
  EXPECT_EQ(e0[0].indices, (std::vector<size_t>{probe.epoch_order(0)[2], probe.epoch_order(0)[3]}));
  EXPECT_EQ(e1[0].indices, (std::vector<size_t>{probe.epoch_order(1)[2], probe.epoch_order(1)[3]}));
}

TEST(Shard, ResumingAtASampleContinuesWithAnotherWorldSize) {
  // 2 ranks x 2 trained 2 global batches (8 images) of epoch 1; one process with batch 4
  // carries on with the next images of the same order.
  const SegDataset ds(synthetic_spec("shard_resume", 14));
  const auto order = DataLoader(ds, options(2, {0, 2})).epoch_order(1);
  const auto rest = epoch_batches(ds, options(4, {0, 1}), 1, /*first_sample=*/8);
  ASSERT_EQ(rest.size(), 1u);  // 14 - 8 = 6 left: one whole batch of 4
  EXPECT_EQ(rest[0].indices, (std::vector<size_t>(order.begin() + 8, order.begin() + 12)));
  // ...and 3 ranks x 1 at position 9 take positions 9, 10, 11.
  for (int r = 0; r < 3; ++r) {
    const auto part = epoch_batches(ds, options(1, {r, 3}), 1, 9);
    ASSERT_EQ(part.size(), 1u);  // 5 left: one global batch of 3
    EXPECT_EQ(part[0].indices, (std::vector<size_t>{order[9 + r]}));
  }
}

TEST(Shard, ShardedLoaderNeedsDropLast) {
  const SegDataset ds(synthetic_spec("shard_droplast", 3));
  LoaderOptions o = options(1, {0, 2});
  o.drop_last = false;
  try {
    DataLoader loader(ds, o);
    FAIL() << "a sharded loader without drop_last was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("drop_last"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace segslim

// The data-parallel machinery with the ranks as threads of this process (each with its own
// c10d Gloo process group): collectives, bucketed gradient averaging and observer merging
// against single-process references, and failures named.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "dist/grad_sync.h"
#include "dist/group.h"
#include "dist/observer_sync.h"
#include "dist/rank_threads.h"
#include "quant/observer.h"
#include "support/test_support.h"

namespace segslim::testing {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(Group, CollectivesAgreeWithReferences) {
  const auto errors = run_ranks(3, 30, [](int r, dist::Group& g) {
    EXPECT_EQ(g.rank(), r);
    EXPECT_EQ(g.world_size(), 3);
    EXPECT_EQ(g.all_reduce_sum({double(r), 1.0, 0.25 * r}), (std::vector<double>{3, 3, 0.75}));
    EXPECT_EQ(g.all_reduce_max({double(r), -double(r), 7}), (std::vector<double>{2, 0, 7}));

    // Broadcast from rank 1, several dtypes at once, a weight that requires grad among them.
    at::Tensor f = at::full({2, 3}, 10.0f * r).requires_grad_();
    at::Tensor i8 = at::full({4}, r - 5, at::kChar);
    at::Tensor i64 = at::arange(5, at::kLong) * (r + 1);
    g.broadcast_({f, i8, i64}, /*root=*/1);
    EXPECT_TRUE(f.detach().equal(at::full({2, 3}, 10.0f)));
    EXPECT_TRUE(i8.equal(at::full({4}, -4, at::kChar)));
    EXPECT_TRUE(i64.equal(at::arange(5, at::kLong) * 2));

    EXPECT_EQ(g.broadcast_bytes(r == 2 ? std::string("from 2\0with a zero", 18) : "x", 2),
              std::string("from 2\0with a zero", 18));
    EXPECT_EQ(g.broadcast_bytes(r == 0 ? "" : "ignored", 0), "");

    at::Tensor mean = at::full({3}, double(r * r));  // 0, 1, 4
    at::Tensor mean_f = at::full({2}, float(r));
    g.average_({mean, mean_f});
    EXPECT_TRUE(mean.equal(at::full({3}, 5.0 / 3.0)));
    EXPECT_TRUE(mean_f.equal(at::full({2}, 1.0f)));
    g.barrier();
    g.finish();
  });
  for (int r = 0; r < 3; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(Group, SingleProcessCollectivesReturnTheirInput) {
  dist::Group g;
  EXPECT_EQ(g.world_size(), 1);
  EXPECT_TRUE(g.is_root());
  EXPECT_EQ(g.all_reduce_sum({1.5, -2}), (std::vector<double>{1.5, -2}));
  EXPECT_EQ(g.broadcast_bytes("abc"), "abc");
  at::Tensor t = at::full({2}, 3.0);
  g.average_({t});
  EXPECT_TRUE(t.equal(at::full({2}, 3.0)));
  g.barrier();
  g.finish();
  EXPECT_EQ(g.process_group(), nullptr);
}

// The model: y = tanh(x W1^T + b1) W2^T, loss_r = mean(y^2) over rank r's rows, plus u . mean(x)
// on every rank but 1 (a weight some ranks do not use), and a weight no rank uses. The
// reference is one autograd graph over all shards: d/dp (1/W) sum_r loss_r.
struct Model {
  std::vector<std::pair<std::string, at::Tensor>> params;
  at::Tensor loss(const at::Tensor& x, bool use_u) const {
    at::Tensor h = at::tanh(at::matmul(x, params[0].second.t()) + params[1].second);
    at::Tensor y = at::matmul(h, params[2].second.t());
    at::Tensor l = y.pow(2).mean();
    if (use_u) l = l + (params[3].second * x.mean(0)).sum();
    return l;
  }
};

// Initial values drawn once, on the calling thread (the global generator is not for threads).
std::vector<std::pair<std::string, at::Tensor>> initial_weights() {
  at::manual_seed(3);
  std::vector<std::pair<std::string, at::Tensor>> w;
  for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"w1", {40, 3}}, {"b1", {40}}, {"w2", {2, 40}}, {"u", {3}}, {"unused", {5}}})
    w.emplace_back(name, at::randn(shape, at::kDouble));
  return w;
}

Model make_model(const std::vector<std::pair<std::string, at::Tensor>>& initial) {
  Model m;
  for (const auto& [name, t] : initial) m.params.emplace_back(name, t.clone().requires_grad_());
  return m;
}

TEST(GradientSync, BucketedAverageEqualsTheGlobalBatchGradient) {
  constexpr int kWorld = 3;
  const auto initial = initial_weights();
  at::manual_seed(11);
  std::vector<std::vector<at::Tensor>> shards;  // [step][rank]: 2 rows of 3
  for (int step = 0; step < 2; ++step) {
    shards.emplace_back();
    for (int r = 0; r < kWorld; ++r) shards[step].push_back(at::randn({2, 3}, at::kDouble));
  }
  // Reference, one process: gradients of the mean of the ranks' losses.
  std::vector<std::vector<at::Tensor>> expected(2);
  for (int step = 0; step < 2; ++step) {
    Model m = make_model(initial);
    at::Tensor total = at::zeros({}, at::kDouble);
    for (int r = 0; r < kWorld; ++r) total = total + m.loss(shards[step][r], r != 1);
    (total / kWorld).backward();
    for (auto& [name, p] : m.params) expected[step].push_back(p.grad());
  }
  ASSERT_FALSE(expected[0][4].defined());  // the unused weight

  const auto errors = run_ranks(kWorld, 30, [&](int r, dist::Group& g) {
    Model m = make_model(initial);
    dist::GradSyncOptions o;
    o.first_bucket_mb = 200.0 / (1 << 20);  // 200 bytes: w2 (640) alone, then the rest
    o.bucket_cap_mb = 1000.0 / (1 << 20);
    dist::GradientSync sync(g, m.params, o);
    EXPECT_GE(sync.num_buckets(), 3u);
    for (int step = 0; step < 2; ++step) {
      for (auto& [name, p] : m.params)
        if (p.grad().defined()) p.mutable_grad().zero_();
      sync.backward(m.loss(shards[step][r], r != 1));
      for (size_t i = 0; i < m.params.size(); ++i) {
        const at::Tensor& grad = m.params[i].second.grad();
        if (!expected[step][i].defined()) {
          EXPECT_FALSE(grad.defined()) << m.params[i].first << " got a gradient nobody made";
          continue;
        }
        ASSERT_TRUE(grad.defined()) << m.params[i].first;
        EXPECT_TRUE(all_close(grad, expected[step][i], 1e-12, 1e-14))
            << "rank " << r << " step " << step << " " << m.params[i].first;
      }
    }
    g.finish();
  });
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(GradientSync, RanksWithDifferentWeightsAreRefused) {
  const auto initial = initial_weights();
  const auto errors = run_ranks(2, 30, [&](int r, dist::Group& g) {
    Model m = make_model(initial);
    if (r == 1) m.params.emplace_back("extra", at::zeros({2}, at::kDouble).requires_grad_());
    dist::GradientSync sync(g, m.params);
  });
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(contains(errors[r], "different numbers of weights")) << errors[r];
}

// Each rank observes its shard of every batch; after folding, every rank's observer must hold
// exactly the state of one observer that saw the whole batches.
TEST(ObserverSync, MergedShardsEqualTheWholeBatch) {
  constexpr int kWorld = 3;
  at::manual_seed(5);
  std::vector<at::Tensor> batches;
  for (int step = 0; step < 3; ++step) batches.push_back(at::randn({6, 4, 5}) * (step + 1) + step);
  auto shard = [&](int step, int r) { return batches[step].narrow(0, 2 * r, 2); };
  struct Case {
    std::string algo;
    bool symmetric;
  };
  const std::vector<Case> cases = {{"abs_max", true},
                                   {"min_max", false},
                                   {"min_max", true},
                                   {"moving_average_abs_max", true},
                                   {"avg", true}};
  for (const auto& c : cases) {
    ObserverOptions oo;
    oo.symmetric = c.symmetric;
    oo.moving_rate = 0.9;
    auto reference = make_observer(c.algo, oo);
    for (const auto& b : batches) reference->observe(b);
    const auto errors = run_ranks(kWorld, 30, [&](int r, dist::Group& g) {
      auto obs = make_observer(c.algo, oo);
      auto empty_obs = make_observer(c.algo, oo);  // rank 2 has nothing for it in step 0
      auto empty_ref = make_observer(c.algo, oo);
      dist::ObserverSync sync;
      for (int step = 0; step < 3; ++step) {
        sync.record(*obs, shard(step, r));
        const at::Tensor part = step == 0 && r == 2 ? at::empty({0}) : shard(step, r);
        sync.record(*empty_obs, part);
        sync.fold(g);
        EXPECT_EQ(sync.pending(), 0u);
      }
      EXPECT_EQ(obs->state(), reference->state()) << c.algo << " rank " << r;
      EXPECT_EQ(obs->params().scale, reference->params().scale) << c.algo;
      // With rank 2's part of step 0 empty, step 0 merges ranks 0 and 1 only.
      empty_ref->observe(at::cat({shard(0, 0), shard(0, 1)}));
      for (int step = 1; step < 3; ++step) empty_ref->observe(batches[step]);
      EXPECT_EQ(empty_obs->state(), empty_ref->state()) << c.algo << " rank " << r;
      g.finish();
    });
    for (int r = 0; r < kWorld; ++r) EXPECT_EQ(errors[r], "") << c.algo << " rank " << r;
  }
}

TEST(ObserverSync, HistogramObserversCannotBeSplit) {
  for (const char* algo : {"hist", "KL", "mse"}) {
    auto obs = make_observer(algo);
    try {
      obs->batch_summary(at::ones({3}));
      ADD_FAILURE() << algo << " was split";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "cannot be split across processes")) << e.what();
    }
  }
}

TEST(GroupFailures, ARankThatReportsAFailureIsNamedWithItsReason) {
  const auto errors = run_ranks(3, 10, [](int r, dist::Group& g) {
    if (r == 2) {
      g.report_failure("cannot read image 'x.png'");
      throw std::runtime_error("rank 2's own error");
    }
    g.barrier();
  });
  for (int r : {0, 1}) {
    EXPECT_TRUE(contains(errors[r], "rank 2 failed: cannot read image 'x.png'")) << errors[r];
  }
}

TEST(GroupFailures, ARankThatStopsBeatingIsDeclaredGone) {
  // --dist-timeout 2 s: heartbeats every 100 ms, gone after 1 s of silence.
  const auto errors = run_ranks(2, 2, [](int r, dist::Group& g) {
    if (r == 1) return;  // leaves without Group::finish(): like a process that died
    g.barrier();
  });
  EXPECT_TRUE(contains(errors[0], "rank 1 stopped responding")) << errors[0];
  EXPECT_EQ(errors[1], "");
}

TEST(GroupFailures, ARankThatHangsOutsideACollectiveIsNamed) {
  const auto errors = run_ranks(2, 2, [](int r, dist::Group& g) {
    if (r == 1) {
      // Alive (its monitor keeps beating) but neither progressing nor synchronising.
      std::this_thread::sleep_for(std::chrono::milliseconds(4000));
      return;
    }
    g.barrier();
  });
  EXPECT_TRUE(contains(errors[0], "rank 1 has made no progress")) << errors[0];
}

TEST(GroupFailures, ACollectiveTimeoutNamesTheRankThatDidNotArrive) {
  const auto errors = run_ranks(2, 2, [](int r, dist::Group& g) {
    if (r == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5000));
      return;
    }
    g.all_reduce_sum({1.0});
  });
  EXPECT_TRUE(contains(errors[0], "rank 1 did not reach an all-reduce (sum) within 2 s"))
      << errors[0];
}

// A rank busy outside any synchronisation point (say, rank 0's evaluation) when another
// rank fails: its monitor ends the process a few heartbeats later, naming the failed rank.
TEST(GroupFailuresDeathTest, AProcessBusyElsewhereIsStoppedByItsMonitor) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        run_ranks(
            2, 2,
            [](int r, dist::Group& g) {
              if (r == 0) {
                g.report_failure("out of memory");
                return;
              }
              std::this_thread::sleep_for(std::chrono::seconds(60));
            },
            /*end_process_on_peer_failure=*/true);
        std::exit(0);
      },
      ::testing::ExitedWithCode(1),
      "segslim: error: \\[rank 1\\] rank 0 failed: out of memory; stopping this rank");
}

}  // namespace
}  // namespace segslim::testing

#pragma once
// Latency statistics over repeated runs (what `segslim bench` reports).
#include <nlohmann/json.hpp>
#include <vector>

namespace segslim {

struct LatencyStats {
  double mean_ms = 0, p50_ms = 0, p90_ms = 0, min_ms = 0, max_ms = 0, images_per_s = 0;
  int repeat = 0, batch = 1;
};

// Percentiles by the nearest-rank method on the sorted samples (p50 of 4 samples = the 2nd).
LatencyStats latency_stats(std::vector<double> samples_ms, int batch);
nlohmann::json to_json(const LatencyStats& s);

}  // namespace segslim

#include "metrics/latency.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"

namespace segslim {

LatencyStats latency_stats(std::vector<double> samples_ms, int batch) {
  SEGSLIM_CHECK(!samples_ms.empty(), "latency statistics need at least one sample");
  std::sort(samples_ms.begin(), samples_ms.end());
  const size_t n = samples_ms.size();
  auto rank = [&](double p) {
    const size_t k = static_cast<size_t>(std::ceil(p * static_cast<double>(n)));
    return samples_ms[std::min(n, std::max<size_t>(k, 1)) - 1];
  };
  LatencyStats s;
  s.repeat = static_cast<int>(n);
  s.batch = batch;
  s.mean_ms = std::accumulate(samples_ms.begin(), samples_ms.end(), 0.0) / static_cast<double>(n);
  s.p50_ms = rank(0.5);
  s.p90_ms = rank(0.9);
  s.min_ms = samples_ms.front();
  s.max_ms = samples_ms.back();
  s.images_per_s = s.p50_ms > 0 ? 1000.0 * batch / s.p50_ms : 0;
  return s;
}

nlohmann::json to_json(const LatencyStats& s) {
  return {{"mean_ms", s.mean_ms}, {"p50_ms", s.p50_ms}, {"p90_ms", s.p90_ms},
          {"min_ms", s.min_ms},   {"max_ms", s.max_ms}, {"images_per_s", s.images_per_s},
          {"repeat", s.repeat},   {"batch", s.batch}};
}

}  // namespace segslim

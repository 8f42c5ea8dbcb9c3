#include "dist/observer_sync.h"

#include "common/error.h"

namespace segslim::dist {

void ObserverSync::record(Observer& observer, const at::Tensor& x) {
  records_.emplace_back(&observer, observer.batch_summary(x));
}

void ObserverSync::fold(Group& group) {
  std::vector<double> flat;
  for (const auto& [observer, summary] : records_)
    flat.insert(flat.end(), summary.begin(), summary.end());
  flat = group.all_reduce_max(std::move(flat));
  size_t offset = 0;
  for (const auto& [observer, summary] : records_) {
    SEGSLIM_CHECK(offset + summary.size() <= flat.size(), "observer summaries out of step");
    observer->observe_summary(std::vector<double>(
        flat.begin() + static_cast<long>(offset),
        flat.begin() + static_cast<long>(offset) + static_cast<long>(summary.size())));
    offset += summary.size();
  }
  records_.clear();
}

}  // namespace segslim::dist

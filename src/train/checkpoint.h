#pragma once
// Training checkpoints: everything needed to resume `segslim compress` where it stopped.
//
// On disk, in `dir`:
//   checkpoint.pt    the checkpoint (torch::serialize archive; the only file load reads)
//   checkpoint.json  {"iteration", "epoch", "best_miou", "num_tensors"} for humans and scripts
// Consistency rule: both are first written completely under temporary names, then the .json is
// renamed into place, then the .pt. Each rename is atomic, so checkpoint.pt is always a complete
// checkpoint (the new one, or the previous one if the process died before its rename). A crash
// between the two renames can leave checkpoint.json one save ahead of checkpoint.pt; the .pt is
// authoritative (it carries iteration/epoch/best itself) and the json is never read back.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace segslim {

struct Checkpoint {
  int64_t iteration = 0;
  int epoch = 0;
  double best_miou = -1;
  std::map<std::string, at::Tensor> tensors;  // weights, buffers, scales (any names)
  std::map<std::string, std::vector<double>> observer_states;
  std::string extra_json;  // opaque to this module (e.g. the trainer's settings)
};

void save_checkpoint(const std::string& dir, const Checkpoint& checkpoint);
// std::nullopt when dir/checkpoint.pt does not exist; a corrupt or truncated file is an Error
// naming it. Tensors come back on the CPU, detached.
std::optional<Checkpoint> load_checkpoint(const std::string& dir);

}  // namespace segslim

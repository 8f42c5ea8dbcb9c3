// Writes every image of a dataset's eval split exactly as segslim preprocesses it (float32
// [3, H, W], raw) and its label (uint8 [H, W], raw), so another runtime can be fed the very same
// tensors: bench/ort_crosscheck.sh uses it to evaluate exported models in ONNX Runtime.
//   bench_dump_eval_inputs DATA.yml DATA_ROOT OUT_DIR   ->  OUT_DIR/<i>.x, OUT_DIR/<i>.y
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/error.h"
#include "data/dataset.h"
#include "data/dataset_config.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " DATA.yml DATA_ROOT OUT_DIR\n";
    return 2;
  }
  try {
    auto config = segslim::load_data_config(argv[1]);
    segslim::DatasetSpec spec = segslim::eval_dataset(config);
    segslim::override_source(spec, argv[2], "");
    segslim::SegDataset dataset(spec);
    std::filesystem::create_directories(argv[3]);
    std::mt19937 rng(0);  // eval transforms are deterministic
    for (size_t i = 0; i < dataset.size(); ++i) {
      segslim::Sample s = dataset.load(i, rng);
      const std::string base = std::string(argv[3]) + "/" + std::to_string(i);
      at::Tensor x = s.image.contiguous();
      at::Tensor y = s.label.to(at::kByte).contiguous();
      std::ofstream(base + ".x", std::ios::binary)
          .write(static_cast<const char*>(x.data_ptr()), x.numel() * 4);
      std::ofstream(base + ".y", std::ios::binary)
          .write(static_cast<const char*>(y.data_ptr()), y.numel());
    }
    std::cout << dataset.size() << " images written to " << argv[3] << "\n";
  } catch (const segslim::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// segslim: QAT + distillation for ONNX segmentation models, and the tools to prove the result.
#include <ATen/Parallel.h>

#include <iostream>
#include <sstream>
#include <thread>

#include "commands.h"
#include "common/error.h"

namespace segslim::cli {

void add_threads_option(CLI::App& cmd, int& threads) {
  threads = static_cast<int>(std::thread::hardware_concurrency());
  cmd.add_option("--threads", threads, "intra-op threads (default: all cores)")
      ->check(CLI::PositiveNumber);
}

void add_engine_option(CLI::App& cmd, std::string& engine) {
  // LibTorch by default until the oneDNN engine is faster on the models we ship (README).
  engine = "torch";
  cmd.add_option("--engine", engine,
                 "torch (default), onednn (experimental), auto (oneDNN unless it cannot run "
                 "the model)");
}

void apply_threads(int threads) { at::set_num_threads(threads); }

std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag) {
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, 'x')) {
    size_t used = 0;
    int64_t d = -1;
    try {
      d = std::stoll(part, &used);
    } catch (const std::exception&) {
    }
    SEGSLIM_CHECK(used == part.size() && d > 0, flag, " '", text,
                  "' is not a shape like 1x3x360x480 (positive integers joined by 'x')");
    dims.push_back(d);
  }
  SEGSLIM_CHECK(dims.size() == 4, flag, " '", text, "' must have 4 dims (NxCxHxW)");
  return dims;
}

}  // namespace segslim::cli

int main(int argc, char** argv) {
  CLI::App app{"segslim: make ONNX semantic-segmentation models fast with INT8 QAT + distillation"};
  app.require_subcommand(1);
  segslim::cli::add_inspect_command(app);
  segslim::cli::add_eval_command(app);
  segslim::cli::add_predict_command(app);
  segslim::cli::add_compress_command(app);
  segslim::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const segslim::Error& e) {
    std::cerr << "segslim: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::cerr << "segslim: error: " << what.substr(0, what.find('\n')) << "\n";
    return 1;
  }
  return 0;
}

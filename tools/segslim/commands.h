#pragma once
// One file per subcommand; each only parses flags and prints: the work lives in src/.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace segslim::cli {

void add_inspect_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_compress_command(CLI::App& app);
void add_bench_command(CLI::App& app);

// --threads: LibTorch defaults to 1 thread on these machines, so always set it explicitly.
void add_threads_option(CLI::App& cmd, int& threads);
void apply_threads(int threads);

// --engine torch|onednn|auto (auto: the oneDNN engine unless it refuses the model).
void add_engine_option(CLI::App& cmd, std::string& engine);

// "1x3x360x480" -> {1, 3, 360, 480}; throws naming the flag.
std::vector<int64_t> parse_shape(const std::string& text, const std::string& flag);

}  // namespace segslim::cli

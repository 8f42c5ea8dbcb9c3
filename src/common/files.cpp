#include "common/files.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <shared_mutex>

#include "common/error.h"

namespace segslim {

namespace {
// Writers share it; exit_between_writes takes it exclusively and never gives it back.
std::shared_mutex& temp_file_mutex() {
  static std::shared_mutex m;
  return m;
}
}  // namespace

TempFileScope::TempFileScope() { temp_file_mutex().lock_shared(); }
TempFileScope::~TempFileScope() { temp_file_mutex().unlock_shared(); }

void exit_between_writes(int code) {
  temp_file_mutex().lock();
  std::_Exit(code);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  TempFileScope scope;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    SEGSLIM_CHECK(out, "cannot write ", tmp);
    out << content;
    out.flush();
    SEGSLIM_CHECK(out.good(), "write failed for ", tmp, " (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error(str_cat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
}

std::string read_file(const std::string& path, const std::string& what) {
  SEGSLIM_CHECK(std::filesystem::is_regular_file(path), what, " '", path, "' does not exist.");
  std::ifstream in(path, std::ios::binary);
  SEGSLIM_CHECK(in, "cannot open ", what, " '", path, "'.");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace segslim

#pragma once
#include <string>

namespace segslim {

// Writes `content` to `path.tmp.<pid>` and renames it over `path`: readers never see a
// half-written file, and a crash leaves the previous version intact.
void write_file_atomic(const std::string& path, const std::string& content);

// The whole file as bytes; `what` names it in the error ("dataset config", ...).
std::string read_file(const std::string& path, const std::string& what);

}  // namespace segslim

#pragma once
#include <string>

namespace segslim {

// Writes `content` to `path.tmp.<pid>` and renames it over `path`: readers never see a
// half-written file, and a crash leaves the previous version intact.
void write_file_atomic(const std::string& path, const std::string& content);

// Held by every writer while its temporary file exists (write_file_atomic, checkpoints, optimizer
// state). exit_between_writes waits until none is held, so a process ended that way never
// leaves a half-written temporary file behind.
class TempFileScope {
 public:
  TempFileScope();
  ~TempFileScope();
  TempFileScope(const TempFileScope&) = delete;
  TempFileScope& operator=(const TempFileScope&) = delete;
};

// Ends the process with `code` (std::_Exit: no destructors) once no TempFileScope is held, and
// keeps new ones from starting. For a watchdog thread that must stop a process whose main
// thread is blocked (dist/health.h).
[[noreturn]] void exit_between_writes(int code);

// The whole file as bytes; `what` names it in the error ("dataset config", ...).
std::string read_file(const std::string& path, const std::string& what);

}  // namespace segslim

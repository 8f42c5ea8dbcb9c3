#pragma once
// Errors a user can cause (bad file, bad config, unsupported op) and broken internal
// invariants are both reported by throwing segslim::Error with a message that names the
// offending file, key, node or value and says what would be valid. The CLI catches it,
// prints the message once and exits non-zero.
#include <sstream>
#include <stdexcept>
#include <string>

namespace segslim {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace segslim

#define SEGSLIM_CHECK(cond, ...)                                          \
  do {                                                                    \
    if (!(cond)) throw ::segslim::Error(::segslim::str_cat(__VA_ARGS__)); \
  } while (0)

#include "passes/name_pattern.h"

#include <regex>

#include "common/error.h"

namespace segslim::passes {
namespace {

constexpr const char kRegexPrefix[] = "re:";

bool is_regex(const std::string& pattern) { return pattern.rfind(kRegexPrefix, 0) == 0; }

std::regex compile(const std::string& pattern) {
  return std::regex(pattern.substr(sizeof(kRegexPrefix) - 1), std::regex::ECMAScript);
}

}  // namespace

bool name_matches_pattern(const std::string& name, const std::string& pattern) {
  if (pattern.empty()) return false;
  if (!is_regex(pattern)) return name.find(pattern) != std::string::npos;
  return std::regex_search(name, compile(pattern));
}

void check_name_pattern(const std::string& pattern, const std::string& where) {
  if (!is_regex(pattern)) return;
  try {
    compile(pattern);
  } catch (const std::regex_error& e) {
    throw Error(str_cat(where, ": '", pattern, "' is not a valid regular expression (", e.what(),
                        "); write 're:' followed by an ECMAScript regular expression, or a plain "
                        "substring of the node names."));
  }
}

}  // namespace segslim::passes

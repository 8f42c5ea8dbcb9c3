#include "passes/name_pattern.h"

#include "common/error.h"

namespace segslim::passes {
namespace {

constexpr const char kRegexPrefix[] = "re:";

bool is_regex(const std::string& pattern) { return pattern.rfind(kRegexPrefix, 0) == 0; }

}  // namespace

NamePattern::NamePattern(std::string pattern) {
  if (is_regex(pattern)) {
    regex_.emplace(pattern.substr(sizeof(kRegexPrefix) - 1), std::regex::ECMAScript);
  } else {
    text_ = std::move(pattern);
  }
}

bool NamePattern::matches(const std::string& name) const {
  if (regex_) return std::regex_search(name, *regex_);
  return !text_.empty() && name.find(text_) != std::string::npos;
}

bool name_matches_pattern(const std::string& name, const std::string& pattern) {
  return NamePattern(pattern).matches(name);
}

void check_name_pattern(const std::string& pattern, const std::string& where) {
  try {
    NamePattern{pattern};
  } catch (const std::regex_error& e) {
    throw Error(str_cat(where, ": '", pattern, "' is not a valid regular expression (", e.what(),
                        "); write 're:' followed by an ECMAScript regular expression, or a plain "
                        "substring of the node names."));
  }
}

}  // namespace segslim::passes

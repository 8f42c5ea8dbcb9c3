#pragma once
// QuantAware.not_quant_pattern entries (docs/quantization.md, "Passes").
#include <optional>
#include <regex>
#include <string>

namespace segslim::passes {

// PaddleSlim's form: the node name contains `pattern`. An entry written `re:EXPR` is an
// ECMAScript regular expression searched in the name instead, for sets a substring cannot
// separate: ESPNet's residual sum `/level3.7/Add_3` contains its first hierarchical sum's name
// `/level3.7/Add`, and `re:/Add(_[12])?$` names only the hierarchical ones.
bool name_matches_pattern(const std::string& name, const std::string& pattern);

// One pattern prepared for many names (an `re:` entry compiled once).
class NamePattern {
 public:
  explicit NamePattern(std::string pattern);  // std::regex_error for a bad `re:` entry
  bool matches(const std::string& name) const;

 private:
  std::string text_;  // the substring, or empty for an expression
  std::optional<std::regex> regex_;
};

// Throws segslim::Error naming `where` and the pattern if an `re:` entry does not compile.
void check_name_pattern(const std::string& pattern, const std::string& where);

}  // namespace segslim::passes

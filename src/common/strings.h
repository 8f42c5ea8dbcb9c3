#pragma once
#include <string>
#include <vector>

namespace segslim {

// "a, b, c"
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

// "a, b,,c" split at ',' -> {"a", " b", "", "c"}.
std::vector<std::string> split(const std::string& text, char sep);
// Without leading and trailing whitespace.
std::string trim(const std::string& text);

// Levenshtein distance; used to suggest the closest valid name in error messages.
size_t edit_distance(const std::string& a, const std::string& b);

// Up to `limit` candidates closest to `name` (by edit distance, then alphabetically).
std::vector<std::string> closest_names(const std::string& name,
                                       const std::vector<std::string>& candidates,
                                       size_t limit = 3);

}  // namespace segslim

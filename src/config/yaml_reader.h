#pragma once
// What the YAML parsers (dataset configs, compression configs) share: where a value came from
// (file:line) and the one phrasing of their errors: an unknown key names its full path, the
// closest valid key and every valid key; a value of the wrong type names the path, the expected
// type and what was written. Included by parser .cpp files only.
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "common/error.h"

namespace segslim::yaml {

struct Source {
  std::string origin;    // the file, for messages
  std::string base_dir;  // relative paths in the file resolve against this folder
  // "file:line" of a node (just the file when the node has no position).
  std::string where(const YAML::Node& node) const;
  // Relative to the config file's folder, not the working directory, so a config moved
  // together with what it names keeps working.
  std::string resolve(const std::string& path) const;
};

// "a.b" from a key path and a key; the key alone at the top level.
std::string join_path(const std::string& path, const std::string& key);
// " Did you mean 'x'?" when one valid name is close enough to be a likely typo, else "".
std::string suggestion(const std::string& name, const std::vector<std::string>& valid);
// Every key of `map` must be in `valid`.
void check_keys(const Source& src, const YAML::Node& map, const std::string& path,
                const std::vector<std::string>& valid);
// A node in one-line flow style, for messages.
std::string flow(const YAML::Node& node);

// A scalar as T, or an Error naming the path and `what` was expected ("a number", ...).
template <typename T>
T get(const Source& src, const YAML::Node& node, const std::string& path, const char* what) {
  try {
    if (!node.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "not a scalar");
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw Error(
        str_cat(src.where(node), ": '", path, "' must be ", what, ", got '", flow(node), "'."));
  }
}

}  // namespace segslim::yaml

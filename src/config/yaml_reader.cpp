#include "config/yaml_reader.h"

#include <algorithm>
#include <filesystem>

#include "common/strings.h"

namespace segslim::yaml {

std::string Source::where(const YAML::Node& node) const {
  const YAML::Mark m = node.Mark();
  return m.line >= 0 ? str_cat(origin, ":", m.line + 1) : origin;
}

std::string Source::resolve(const std::string& p) const {
  namespace fs = std::filesystem;
  if (p.empty()) return p;
  fs::path path(p);
  if (path.is_absolute()) return path.lexically_normal().string();
  return (fs::path(base_dir) / path).lexically_normal().string();
}

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string suggestion(const std::string& name, const std::vector<std::string>& valid) {
  auto close = closest_names(name, valid, 1);
  if (close.empty() || edit_distance(name, close[0]) > std::max<size_t>(2, name.size() / 3))
    return "";
  return str_cat(" Did you mean '", close[0], "'?");
}

void check_keys(const Source& src, const YAML::Node& map, const std::string& path,
                const std::vector<std::string>& valid) {
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(valid.begin(), valid.end(), key) != valid.end()) continue;
    throw Error(str_cat(
        src.where(kv.first), ": unknown key '", join_path(path, key), "'.", suggestion(key, valid),
        " Valid keys (closest first): ", join(closest_names(key, valid, valid.size())), "."));
  }
}

std::string flow(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

}  // namespace segslim::yaml

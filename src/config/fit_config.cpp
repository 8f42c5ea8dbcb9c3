#include "config/fit_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "common/files.h"
#include "common/strings.h"
#include "config/train_section.h"
#include "config/yaml_reader.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

using Ctx = yaml::Source;

const std::vector<std::string> kSections = {"Global", "TrainConfig", "Eval", "Loss", "loss"};
const std::vector<std::string> kLossKeys = {"type", "thresh", "min_kept", "weight", "coef"};

void check_map(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  SEGSLIM_CHECK(node.IsMap() || node.IsNull(), ctx.where(node), ": '", path,
                "' must be a map of keys.");
}

std::vector<double> get_numbers(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  SEGSLIM_CHECK(node.IsSequence(), ctx.where(node), ": '", path,
                "' must be a list of numbers, got '", yaml::flow(node), "'.");
  std::vector<double> out;
  for (size_t i = 0; i < node.size(); ++i)
    out.push_back(yaml::get<double>(ctx, node[i], str_cat(path, "[", i, "]"), "a number"));
  return out;
}

// One loss map (Loss, or an entry of loss.types); `path` is its key path.
void parse_loss_map(const Ctx& ctx, const YAML::Node& node, const std::string& path,
                    const std::vector<std::string>& keys, LossConfig& l) {
  check_map(ctx, node, path);
  yaml::check_keys(ctx, node, path, keys);
  auto key = [&](const char* k) { return yaml::join_path(path, k); };
  if (node["type"]) {
    l.type = yaml::get<std::string>(ctx, node["type"], key("type"), "a string");
    const auto& valid = loss_type_names();
    if (!std::count(valid.begin(), valid.end(), l.type))
      throw Error(str_cat(ctx.where(node["type"]), ": '", key("type"), "' is '", l.type, "'.",
                          yaml::suggestion(l.type, valid), " Valid: ", join(valid), "."));
  }
  if (node["thresh"]) {
    l.thresh = yaml::get<double>(ctx, node["thresh"], key("thresh"), "a number");
    SEGSLIM_CHECK(l.thresh > 0 && l.thresh <= 1, ctx.where(node["thresh"]), ": '", key("thresh"),
                  "' must be in (0, 1], got ", l.thresh, ".");
  }
  if (node["min_kept"]) {
    l.min_kept = yaml::get<int64_t>(ctx, node["min_kept"], key("min_kept"), "an integer");
    SEGSLIM_CHECK(l.min_kept >= 0, ctx.where(node["min_kept"]), ": '", key("min_kept"),
                  "' must be an integer >= 0, got ", l.min_kept, ".");
  }
  if (node["weight"] && !node["weight"].IsNull())
    l.weight = get_numbers(ctx, node["weight"], key("weight"));
  if (node["coef"]) l.coef = yaml::get<double>(ctx, node["coef"], key("coef"), "a number");
}

// PaddleSeg's `loss: {types: [...], coef: [...]}`, one loss.
void parse_paddleseg_loss(const Ctx& ctx, const YAML::Node& node, LossConfig& l) {
  check_map(ctx, node, "loss");
  yaml::check_keys(ctx, node, "loss", {"types", "coef"});
  const YAML::Node types = node["types"];
  SEGSLIM_CHECK(types && types.IsSequence() && types.size() == 1, ctx.where(node),
                ": 'loss.types' must be a list of exactly one loss (segslim trains one "
                "output with one loss), e.g. [{type: CrossEntropyLoss}].");
  parse_loss_map(ctx, types[0], "loss.types[0]", {"type", "thresh", "min_kept", "weight"}, l);
  if (node["coef"]) {
    const auto coef = get_numbers(ctx, node["coef"], "loss.coef");
    SEGSLIM_CHECK(coef.size() == 1, ctx.where(node["coef"]),
                  ": 'loss.coef' must have one value per loss type (1).");
    l.coef = coef[0];
  }
}

}  // namespace

const std::vector<std::string>& loss_type_names() {
  static const std::vector<std::string> names = {"CrossEntropyLoss", "OhemCrossEntropyLoss"};
  return names;
}

FitConfig parse_fit_config(const std::string& text, const std::string& origin) {
  Ctx ctx{origin, fs::absolute(fs::path(origin)).parent_path().string()};
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw Error(str_cat(origin, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  FitConfig c;
  c.path = origin;
  if (root.IsNull()) return c;
  SEGSLIM_CHECK(root.IsMap(), origin,
                ": expected a training config (a map with sections such as TrainConfig, Loss).");
  yaml::check_keys(ctx, root, "", kSections);
  SEGSLIM_CHECK(!(root["Loss"] && root["loss"]), origin,
                ": both 'Loss' and 'loss' are set; keep one.");
  if (root["Global"]) {
    check_map(ctx, root["Global"], "Global");
    yaml::check_keys(ctx, root["Global"], "Global", {"seed"});
    if (root["Global"]["seed"])
      c.seed = yaml::get<int>(ctx, root["Global"]["seed"], "Global.seed", "an integer");
  }
  if (root["TrainConfig"]) c.train = parse_train_section(ctx, root["TrainConfig"]);
  if (root["Eval"]) {
    check_map(ctx, root["Eval"], "Eval");
    yaml::check_keys(ctx, root["Eval"], "Eval", {"batch_size"});
    if (root["Eval"]["batch_size"]) {
      c.eval_batch_size =
          yaml::get<int>(ctx, root["Eval"]["batch_size"], "Eval.batch_size", "an integer");
      SEGSLIM_CHECK(*c.eval_batch_size > 0, ctx.where(root["Eval"]["batch_size"]),
                    ": 'Eval.batch_size' must be a positive integer.");
    }
  }
  if (root["Loss"]) parse_loss_map(ctx, root["Loss"], "Loss", kLossKeys, c.loss);
  if (root["loss"]) parse_paddleseg_loss(ctx, root["loss"], c.loss);
  return c;
}

FitConfig load_fit_config(const std::string& path) {
  return parse_fit_config(read_file(path, "training config"), path);
}

}  // namespace segslim

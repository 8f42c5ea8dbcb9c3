#include "config/compress_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "common/files.h"
#include "common/strings.h"
#include "config/train_section.h"
#include "config/yaml_reader.h"
#include "passes/name_pattern.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kSections = {
    "Global",      "Distillation", "QuantAware", "QuantPost", "HyperParameterOptimization",
    "TrainConfig", "Auto",         "Eval"};
// PaddleSlim strategies segslim does not implement: named as such rather than "unknown".
const std::vector<std::string> kUnsupportedSections = {
    "UnstructurePrune", "ChannelPrune", "ASPPrune", "TransformerPrune", "MultiTeacherDistillation"};

const std::vector<std::string> kLossTypes = {"l2", "soft_label"};
const std::vector<std::string> kWeightQuantTypes = {"channel_wise_abs_max", "abs_max"};
const std::vector<std::string> kActQuantTypes = {"moving_average_abs_max", "abs_max",
                                                 "range_abs_max", "min_max"};
const std::vector<std::string> kPtqAlgos = {"KL", "hist", "avg", "mse", "abs_max"};
const std::vector<std::string> kLrTypes = {"Constant", "CosineAnnealingDecay", "PiecewiseDecay"};
const std::vector<std::string> kOptimizerTypes = {"SGD", "Momentum", "Adam", "AdamW"};

using Ctx = yaml::Source;
using yaml::check_keys;
using yaml::flow;
using yaml::get;
using yaml::join_path;
using yaml::suggestion;

// A section or sub-map: a map, or empty (`Distillation:` alone = all defaults).
void check_map(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  SEGSLIM_CHECK(node.IsMap() || node.IsNull(), ctx.where(node), ": '", path,
                "' must be a map of keys.");
}

std::string get_str(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  if (node.IsNull()) return "";  // `params_filename: null`
  return get<std::string>(ctx, node, path, "a string");
}

// A list, or (allow_scalar) one value meaning a list of one.
template <typename T>
std::vector<T> get_list(const Ctx& ctx, const YAML::Node& node, const std::string& path,
                        const char* what, bool allow_scalar) {
  if (allow_scalar && node.IsScalar()) return {get<T>(ctx, node, path, what)};
  if (node.IsNull()) return {};
  SEGSLIM_CHECK(node.IsSequence(), ctx.where(node), ": '", path, "' must be a list of ", what,
                allow_scalar ? " (or one value)" : "", ", got '", flow(node), "'.");
  std::vector<T> out;
  for (size_t i = 0; i < node.size(); ++i)
    out.push_back(get<T>(ctx, node[i], str_cat(path, "[", i, "]"), what));
  return out;
}

void check_one_of(const Ctx& ctx, const YAML::Node& node, const std::string& path,
                  const std::string& value, const std::vector<std::string>& valid) {
  if (std::count(valid.begin(), valid.end(), value)) return;
  throw Error(str_cat(ctx.where(node), ": '", path, "' is '", value, "'.", suggestion(value, valid),
                      " Valid: ", join(valid), "."));
}

// Typed readers bound to one map and its key path; each reads the key only when present.
struct Section {
  const Ctx& ctx;
  const YAML::Node& node;
  std::string path;

  bool has(const char* key) const { return node.IsMap() && node[key]; }
  YAML::Node at(const char* key) const { return node[key]; }
  std::string key(const char* k) const { return join_path(path, k); }

  void num(const char* k, double& field) const {
    if (has(k)) field = get<double>(ctx, at(k), key(k), "a number");
  }
  template <typename I>
  void integer(const char* k, I& field) const {
    if (has(k)) field = get<I>(ctx, at(k), key(k), "an integer");
  }
  template <typename I>
  void integer(const char* k, std::optional<I>& field) const {
    if (has(k)) field = get<I>(ctx, at(k), key(k), "an integer");
  }
  void boolean(const char* k, bool& field) const {
    if (has(k)) field = get<bool>(ctx, at(k), key(k), "true or false");
  }
  void str(const char* k, std::string& field) const {
    if (has(k)) field = get_str(ctx, at(k), key(k));
  }
  void choice(const char* k, std::string& field, const std::vector<std::string>& valid) const {
    if (!has(k)) return;
    field = get_str(ctx, at(k), key(k));
    check_one_of(ctx, at(k), key(k), field, valid);
  }
  // `cond` must hold for the (possibly defaulted) value; `what` says the valid range.
  void require(const char* k, bool cond, const char* what) const {
    if (cond) return;
    throw Error(str_cat(has(k) ? ctx.where(at(k)) : ctx.where(node), ": '", key(k), "' must be ",
                        what, has(k) ? str_cat(", got '", flow(at(k)), "'") : std::string(), "."));
  }
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

GlobalConfig parse_global(const Ctx& ctx, const YAML::Node& node) {
  check_map(ctx, node, "Global");
  check_keys(ctx, node, "Global",
             {"model_dir", "model_filename", "params_filename", "input_shapes", "model", "data",
              "reader_config", "seed", "output_dir", "deploy_hardware"});
  Section s{ctx, node, "Global"};
  GlobalConfig g;
  s.str("model_dir", g.model_dir);
  g.model_dir = ctx.resolve(g.model_dir);
  s.str("model_filename", g.model_filename);
  s.str("params_filename", g.params_filename);
  if (s.has("input_shapes")) {
    const YAML::Node shapes = s.at("input_shapes");
    if (shapes.IsMap()) {
      for (const auto& kv : shapes) {
        const std::string name = kv.first.as<std::string>();
        g.input_shapes[name] = get_list<int64_t>(ctx, kv.second, s.key("input_shapes") + "." + name,
                                                 "integers", false);
      }
    } else {
      g.input_shapes[""] = get_list<int64_t>(ctx, shapes, s.key("input_shapes"), "integers", false);
    }
  }
  s.str("model", g.model);
  g.model = ctx.resolve(g.model);
  if (g.model.empty()) {
    // The original points at a Paddle inference model; segslim reads ONNX, so the pair names a
    // model only when it is one (e.g. `model_dir: out, model_filename: model.onnx`).
    if (ends_with(g.model_filename, ".onnx"))
      g.model = (fs::path(g.model_dir.empty() ? ctx.base_dir : g.model_dir) / g.model_filename)
                    .lexically_normal()
                    .string();
    else if (ends_with(g.model_dir, ".onnx"))
      g.model = g.model_dir;
  }
  SEGSLIM_CHECK(!(s.has("data") && s.has("reader_config")), ctx.where(node),
                ": 'Global.data' and 'Global.reader_config' name the same thing; keep one.");
  s.str("data", g.data);
  s.str("reader_config", g.data);
  g.data = ctx.resolve(g.data);
  s.integer("seed", g.seed);
  s.str("output_dir", g.output_dir);
  g.output_dir = ctx.resolve(g.output_dir);
  if (s.has("deploy_hardware")) get_str(ctx, s.at("deploy_hardware"), s.key("deploy_hardware"));
  return g;
}

DistillationConfig parse_distillation(const Ctx& ctx, const YAML::Node& node) {
  check_map(ctx, node, "Distillation");
  check_keys(ctx, node, "Distillation",
             {"alpha", "loss", "node", "teacher_model_dir", "teacher_model_filename",
              "teacher_params_filename", "temperature", "ce_weight", "enable"});
  Section s{ctx, node, "Distillation"};
  DistillationConfig d;
  s.num("alpha", d.alpha);
  s.require("alpha", d.alpha >= 0, "a number >= 0");
  s.choice("loss", d.loss, kLossTypes);
  if (s.has("node"))
    d.node = get_list<std::string>(ctx, s.at("node"), s.key("node"), "tensor names", true);
  s.str("teacher_model_dir", d.teacher_model_dir);
  d.teacher_model_dir = ctx.resolve(d.teacher_model_dir);
  s.str("teacher_model_filename", d.teacher_model_filename);
  s.str("teacher_params_filename", d.teacher_params_filename);
  s.num("temperature", d.temperature);
  s.require("temperature", d.temperature > 0, "a number > 0");
  s.num("ce_weight", d.ce_weight);
  s.require("ce_weight", d.ce_weight >= 0, "a number >= 0");
  s.boolean("enable", d.enable);
  return d;
}

QuantAwareConfig parse_quant_aware(const Ctx& ctx, const YAML::Node& node) {
  check_map(ctx, node, "QuantAware");
  check_keys(ctx, node, "QuantAware",
             {"quantize_op_types", "weight_bits", "activation_bits", "weight_quantize_type",
              "activation_quantize_type", "moving_rate", "not_quant_pattern", "use_pact",
              "onnx_format", "dtype", "use_learnable_scale", "skip_first_last", "activation_dtype",
              "freeze_bn", "add_concat_inputs"});
  Section s{ctx, node, "QuantAware"};
  QuantAwareConfig q;
  if (s.has("quantize_op_types")) {
    const YAML::Node list = s.at("quantize_op_types");
    q.quantize_op_types =
        get_list<std::string>(ctx, list, s.key("quantize_op_types"), "op type names", true);
    SEGSLIM_CHECK(!q.quantize_op_types.empty(), ctx.where(list), ": '", s.key("quantize_op_types"),
                  "' is empty; valid names: ", join(quantize_op_type_names()), ".");
    q.onnx_op_types.clear();
    for (size_t i = 0; i < q.quantize_op_types.size(); ++i) {
      const std::string& name = q.quantize_op_types[i];
      const auto& valid = quantize_op_type_names();
      if (!std::count(valid.begin(), valid.end(), name)) {
        const YAML::Node item = list.IsSequence() ? list[i] : list;
        throw Error(str_cat(ctx.where(item), ": '", s.key("quantize_op_types"), "' names '", name,
                            "', which segslim cannot quantize.", suggestion(name, valid),
                            " Valid: ", join(valid), "."));
      }
      for (const auto& t : onnx_op_types_for(name))
        if (!std::count(q.onnx_op_types.begin(), q.onnx_op_types.end(), t))
          q.onnx_op_types.push_back(t);
    }
  }
  s.integer("weight_bits", q.weight_bits);
  s.require("weight_bits", q.weight_bits >= 2 && q.weight_bits <= 8, "an integer in [2, 8]");
  s.integer("activation_bits", q.activation_bits);
  s.require("activation_bits", q.activation_bits >= 2 && q.activation_bits <= 8,
            "an integer in [2, 8]");
  s.choice("weight_quantize_type", q.weight_quantize_type, kWeightQuantTypes);
  s.choice("activation_quantize_type", q.activation_quantize_type, kActQuantTypes);
  s.num("moving_rate", q.moving_rate);
  s.require("moving_rate", q.moving_rate >= 0 && q.moving_rate < 1, "a number in [0, 1)");
  if (s.has("not_quant_pattern")) {
    const YAML::Node list = s.at("not_quant_pattern");
    q.not_quant_pattern =
        get_list<std::string>(ctx, list, s.key("not_quant_pattern"), "strings", true);
    for (size_t i = 0; i < q.not_quant_pattern.size(); ++i)
      passes::check_name_pattern(q.not_quant_pattern[i],
                                 str_cat(ctx.where(list.IsSequence() ? list[i] : list), ": '",
                                         s.key("not_quant_pattern"), "'"));
  }
  bool use_pact = false;
  s.boolean("use_pact", use_pact);
  // PACT clips activations with a trained threshold; LSQ's learnable scale plays the same role
  // in the QDQ representation (docs/quantization.md), so point there instead.
  SEGSLIM_CHECK(!use_pact, ctx.where(s.at("use_pact")),
                ": 'QuantAware.use_pact: true': PACT is not supported; use "
                "'QuantAware.use_learnable_scale: true' (LSQ, a trained activation scale) "
                "instead.");
  s.boolean("onnx_format", q.onnx_format);
  s.choice("dtype", q.dtype, {"int8"});
  s.boolean("use_learnable_scale", q.use_learnable_scale);
  s.boolean("skip_first_last", q.skip_first_last);
  s.choice("activation_dtype", q.activation_dtype, {"int8", "uint8"});
  s.choice("add_concat_inputs", q.add_concat_inputs, {"all", "shared"});
  s.boolean("freeze_bn", q.freeze_bn);
  return q;
}

QuantPostConfig parse_quant_post(const Ctx& ctx, const YAML::Node& node) {
  check_map(ctx, node, "QuantPost");
  check_keys(ctx, node, "QuantPost",
             {"algo", "hist_percent", "batch_size", "batch_nums", "batch_num", "bias_correction",
              "onnx_format"});
  Section s{ctx, node, "QuantPost"};
  QuantPostConfig q;
  s.choice("algo", q.algo, kPtqAlgos);
  s.num("hist_percent", q.hist_percent);
  s.require("hist_percent", q.hist_percent > 0 && q.hist_percent <= 1, "a number in (0, 1]");
  s.integer("batch_size", q.batch_size);
  s.require("batch_size", q.batch_size > 0, "a positive integer");
  SEGSLIM_CHECK(!(s.has("batch_nums") && s.has("batch_num")), ctx.where(node),
                ": 'QuantPost.batch_nums' and 'QuantPost.batch_num' are the same key; keep one.");
  s.integer("batch_nums", q.batch_nums);
  s.integer("batch_num", q.batch_nums);
  s.require(s.has("batch_num") ? "batch_num" : "batch_nums", q.batch_nums > 0,
            "a positive integer");
  bool bias_correction = false;
  s.boolean("bias_correction", bias_correction);
  SEGSLIM_CHECK(
      !bias_correction, ctx.where(s.at("bias_correction")),
      ": 'QuantPost.bias_correction: true' is not supported yet; remove it or set false.");
  s.boolean("onnx_format", q.onnx_format);
  return q;
}

HyperParameterOptimizationConfig parse_hpo(const Ctx& ctx, const YAML::Node& node) {
  const std::string sec = "HyperParameterOptimization";
  check_map(ctx, node, sec);
  check_keys(ctx, node, sec,
             {"ptq_algo", "bias_correct", "weight_quantize_type", "hist_percent", "batch_num",
              "max_quant_count"});
  Section s{ctx, node, sec};
  HyperParameterOptimizationConfig h;
  auto nonempty = [&](const char* k, size_t n) {
    SEGSLIM_CHECK(n > 0, ctx.where(s.at(k)), ": '", s.key(k), "' must not be empty.");
  };
  if (s.has("ptq_algo")) {
    h.ptq_algo = get_list<std::string>(ctx, s.at("ptq_algo"), s.key("ptq_algo"), "strings", true);
    nonempty("ptq_algo", h.ptq_algo.size());
    for (const auto& a : h.ptq_algo)
      check_one_of(ctx, s.at("ptq_algo"), s.key("ptq_algo"), a, kPtqAlgos);
  }
  if (s.has("bias_correct")) {
    h.bias_correct.clear();
    for (bool b :
         get_list<bool>(ctx, s.at("bias_correct"), s.key("bias_correct"), "true or false", true)) {
      SEGSLIM_CHECK(!b, ctx.where(s.at("bias_correct")), ": '", s.key("bias_correct"),
                    "' contains true: bias correction is not supported yet; use [false].");
      h.bias_correct.push_back(b);
    }
    nonempty("bias_correct", h.bias_correct.size());
  }
  if (s.has("weight_quantize_type")) {
    h.weight_quantize_type = get_list<std::string>(ctx, s.at("weight_quantize_type"),
                                                   s.key("weight_quantize_type"), "strings", true);
    nonempty("weight_quantize_type", h.weight_quantize_type.size());
    for (const auto& t : h.weight_quantize_type)
      check_one_of(ctx, s.at("weight_quantize_type"), s.key("weight_quantize_type"), t,
                   kWeightQuantTypes);
  }
  if (s.has("hist_percent")) {
    h.hist_percent =
        get_list<double>(ctx, s.at("hist_percent"), s.key("hist_percent"), "numbers", true);
    nonempty("hist_percent", h.hist_percent.size());
    for (double p : h.hist_percent)
      SEGSLIM_CHECK(p > 0 && p <= 1, ctx.where(s.at("hist_percent")), ": '", s.key("hist_percent"),
                    "' values must lie in (0, 1], got ", p, ".");
  }
  if (s.has("batch_num")) {
    h.batch_num = get_list<int>(ctx, s.at("batch_num"), s.key("batch_num"), "integers", true);
    nonempty("batch_num", h.batch_num.size());
    for (int b : h.batch_num)
      SEGSLIM_CHECK(b > 0, ctx.where(s.at("batch_num")), ": '", s.key("batch_num"),
                    "' values must be positive, got ", b, ".");
  }
  s.integer("max_quant_count", h.max_quant_count);
  s.require("max_quant_count", h.max_quant_count > 0, "a positive integer");
  return h;
}

LearningRateConfig parse_learning_rate(const Ctx& ctx, const YAML::Node& node,
                                       const std::string& path) {
  LearningRateConfig lr;
  if (node.IsScalar()) {
    lr.learning_rate = get<double>(ctx, node, path, "a number or a map {type: ...}");
    SEGSLIM_CHECK(lr.learning_rate >= 0, ctx.where(node), ": '", path, "' must be >= 0.");
    return lr;
  }
  SEGSLIM_CHECK(node.IsMap(), ctx.where(node), ": '", path,
                "' must be a number or a map {type: CosineAnnealingDecay | PiecewiseDecay | "
                "Constant, ...}.");
  check_keys(ctx, node, path,
             {"type", "learning_rate", "base", "T_max", "eta_min", "boundaries", "values",
              "warmup_steps", "warmup_iter", "warmup_start_lr"});
  Section s{ctx, node, path};
  SEGSLIM_CHECK(s.has("type"), ctx.where(node), ": '", path,
                "' has no 'type'. Valid: ", join(kLrTypes), ".");
  s.choice("type", lr.type, kLrTypes);
  SEGSLIM_CHECK(!(s.has("learning_rate") && s.has("base")), ctx.where(node), ": '", path,
                ".learning_rate' and '", path, ".base' are the same key; keep one.");
  s.num("learning_rate", lr.learning_rate);
  s.num("base", lr.learning_rate);
  s.require(s.has("base") ? "base" : "learning_rate", lr.learning_rate >= 0, "a number >= 0");
  s.integer("T_max", lr.T_max);
  s.require("T_max", lr.T_max >= 0, "an integer >= 0 (0 = all iterations)");
  s.num("eta_min", lr.eta_min);
  if (s.has("boundaries"))
    lr.boundaries = get_list<int64_t>(ctx, s.at("boundaries"), s.key("boundaries"),
                                      "integers (iterations)", false);
  if (s.has("values"))
    lr.values = get_list<double>(ctx, s.at("values"), s.key("values"), "numbers", false);
  if (lr.type == "PiecewiseDecay") {
    SEGSLIM_CHECK(!lr.values.empty() && lr.values.size() == lr.boundaries.size() + 1,
                  ctx.where(node), ": '", path,
                  "' (PiecewiseDecay) needs 'values' with one more entry than 'boundaries', got ",
                  lr.values.size(), " values and ", lr.boundaries.size(), " boundaries.");
    for (size_t i = 1; i < lr.boundaries.size(); ++i)
      SEGSLIM_CHECK(lr.boundaries[i] > lr.boundaries[i - 1], ctx.where(s.at("boundaries")), ": '",
                    s.key("boundaries"), "' must be strictly increasing.");
  }
  SEGSLIM_CHECK(!(s.has("warmup_steps") && s.has("warmup_iter")), ctx.where(node), ": '", path,
                ".warmup_steps' and '", path, ".warmup_iter' are the same key; keep one.");
  s.integer("warmup_steps", lr.warmup_steps);
  s.integer("warmup_iter", lr.warmup_steps);
  s.require(s.has("warmup_iter") ? "warmup_iter" : "warmup_steps", lr.warmup_steps >= 0,
            "an integer >= 0");
  s.num("warmup_start_lr", lr.warmup_start_lr);
  return lr;
}

// weight_decay: a number, or the original's regularizer map {type: L2 | L2Decay, coeff}.
double parse_weight_decay(const Ctx& ctx, const YAML::Node& node, const std::string& path) {
  double wd = 0;
  if (node.IsMap()) {
    check_keys(ctx, node, path, {"type", "coeff"});
    Section s{ctx, node, path};
    std::string type = "L2";
    s.choice("type", type, {"L2", "L2Decay"});
    s.num("coeff", wd);
  } else {
    wd = get<double>(ctx, node, path, "a number or a map {type: L2, coeff: ...}");
  }
  SEGSLIM_CHECK(wd >= 0, ctx.where(node), ": '", path, "' must be >= 0.");
  return wd;
}

OptimizerConfig parse_optimizer_builder(const Ctx& ctx, const YAML::Node& node,
                                        const std::string& path) {
  check_map(ctx, node, path);
  check_keys(ctx, node, path, {"optimizer", "weight_decay", "regularizer", "grad_clip"});
  Section s{ctx, node, path};
  OptimizerConfig o;
  if (s.has("optimizer")) {
    const YAML::Node opt = s.at("optimizer");
    const std::string opath = s.key("optimizer");
    check_map(ctx, opt, opath);
    check_keys(ctx, opt, opath, {"type", "momentum", "beta1", "beta2", "epsilon", "weight_decay"});
    Section so{ctx, opt, opath};
    so.choice("type", o.type, kOptimizerTypes);
    so.num("momentum", o.momentum);
    so.require("momentum", o.momentum >= 0 && o.momentum < 1, "a number in [0, 1)");
    so.num("beta1", o.beta1);
    so.require("beta1", o.beta1 >= 0 && o.beta1 < 1, "a number in [0, 1)");
    so.num("beta2", o.beta2);
    so.require("beta2", o.beta2 >= 0 && o.beta2 < 1, "a number in [0, 1)");
    so.num("epsilon", o.epsilon);
    so.require("epsilon", o.epsilon > 0, "a number > 0");
    // Paddle's optimizers also take weight_decay as a constructor argument.
    if (so.has("weight_decay"))
      o.weight_decay = parse_weight_decay(ctx, so.at("weight_decay"), so.key("weight_decay"));
  }
  SEGSLIM_CHECK(!(s.has("weight_decay") && s.has("regularizer")), ctx.where(node), ": '", path,
                ".weight_decay' and '", path, ".regularizer' both set the weight decay; keep one.");
  for (const char* k : {"weight_decay", "regularizer"})
    if (s.has(k)) o.weight_decay = parse_weight_decay(ctx, s.at(k), s.key(k));
  if (s.has("grad_clip")) {
    // A number, or the original's {type: ClipGradByGlobalNorm, clip_norm: X}.
    const YAML::Node gc = s.at("grad_clip");
    double clip = 0;
    if (gc.IsMap()) {
      check_keys(ctx, gc, s.key("grad_clip"), {"type", "clip_norm"});
      Section sg{ctx, gc, s.key("grad_clip")};
      std::string type = "ClipGradByGlobalNorm";
      sg.choice("type", type, {"ClipGradByGlobalNorm"});
      SEGSLIM_CHECK(sg.has("clip_norm"), ctx.where(gc), ": '", s.key("grad_clip"),
                    "' needs 'clip_norm'.");
      sg.num("clip_norm", clip);
    } else {
      clip = get<double>(ctx, gc, s.key("grad_clip"), "a number (max global gradient norm)");
    }
    SEGSLIM_CHECK(clip > 0, ctx.where(gc), ": '", s.key("grad_clip"), "' must be > 0.");
    o.grad_clip = clip;
  }
  return o;
}

TrainConfig parse_train(const Ctx& ctx, const YAML::Node& node) {
  check_map(ctx, node, "TrainConfig");
  check_keys(
      ctx, node, "TrainConfig",
      {"epochs", "train_iter", "eval_iter", "logging_iter", "learning_rate", "optimizer_builder",
       "origin_metric", "batch_size", "num_workers", "checkpoint_every"});
  Section s{ctx, node, "TrainConfig"};
  TrainConfig t;
  SEGSLIM_CHECK(!(s.has("epochs") && s.has("train_iter")), ctx.where(node),
                ": 'TrainConfig' sets both 'epochs' and 'train_iter'; keep exactly one.");
  SEGSLIM_CHECK(s.has("epochs") || s.has("train_iter"), ctx.where(node),
                ": 'TrainConfig' needs 'epochs' or 'train_iter' (exactly one).");
  s.integer("epochs", t.epochs);
  if (t.epochs) s.require("epochs", *t.epochs > 0, "a positive integer");
  s.integer("train_iter", t.train_iter);
  if (t.train_iter) s.require("train_iter", *t.train_iter > 0, "a positive integer");
  s.integer("eval_iter", t.eval_iter);
  s.require("eval_iter", t.eval_iter > 0, "a positive integer");
  s.integer("logging_iter", t.logging_iter);
  s.require("logging_iter", t.logging_iter > 0, "a positive integer");
  if (s.has("learning_rate"))
    t.learning_rate = parse_learning_rate(ctx, s.at("learning_rate"), s.key("learning_rate"));
  if (s.has("optimizer_builder"))
    t.optimizer =
        parse_optimizer_builder(ctx, s.at("optimizer_builder"), s.key("optimizer_builder"));
  if (s.has("origin_metric"))  // the FP32 model's metric; segslim measures it itself
    get<double>(ctx, s.at("origin_metric"), s.key("origin_metric"), "a number");
  s.integer("batch_size", t.batch_size);
  if (t.batch_size) s.require("batch_size", *t.batch_size > 0, "a positive integer");
  s.integer("num_workers", t.num_workers);
  s.require("num_workers", t.num_workers >= 0, "an integer >= 0");
  t.checkpoint_every = t.eval_iter;
  s.integer("checkpoint_every", t.checkpoint_every);
  s.require("checkpoint_every", t.checkpoint_every > 0, "a positive integer");
  return t;
}

}  // namespace

TrainConfig parse_train_section(const yaml::Source& src, const YAML::Node& node) {
  return parse_train(src, node);
}

const std::vector<std::string>& quantize_op_type_names() {
  static const std::vector<std::string> names = {
      "conv2d", "depthwise_conv2d", "conv2d_transpose", "mul",  "matmul",        "matmul_v2",
      "pool2d", "elementwise_add",  "concat",           "Conv", "ConvTranspose", "MatMul",
      "Gemm",   "AveragePool",      "MaxPool",          "Add",  "Concat"};
  return names;
}

std::vector<std::string> onnx_op_types_for(const std::string& name) {
  if (name == "conv2d" || name == "depthwise_conv2d" || name == "Conv") return {"Conv"};
  if (name == "conv2d_transpose" || name == "ConvTranspose") return {"ConvTranspose"};
  // Paddle's mul / matmul / matmul_v2 export to ONNX as MatMul, or Gemm when fused with a bias.
  if (name == "mul" || name == "matmul" || name == "matmul_v2") return {"MatMul", "Gemm"};
  if (name == "MatMul") return {"MatMul"};
  // Pooling has no weight: its input gets the Q/DQ pair of the tensor, shared with the other
  // quantized consumers, so int8 runtimes pool on int8 (docs/quantization.md).
  if (name == "pool2d") return {"AveragePool", "MaxPool"};
  if (name == "AveragePool" || name == "MaxPool") return {name};
  if (name == "Gemm") return {"Gemm"};
  // Sums and concatenations: all their runtime inputs, each tensor's pair shared likewise.
  if (name == "elementwise_add" || name == "Add") return {"Add"};
  if (name == "concat" || name == "Concat") return {"Concat"};
  throw Error(str_cat("unknown quantize op type '", name, "'.",
                      suggestion(name, quantize_op_type_names()),
                      " Valid: ", join(quantize_op_type_names()), "."));
}

std::vector<std::pair<std::string, std::string>> resolve_distill_pairs(
    const std::vector<std::string>& node, bool node0_is_student_tensor, const std::string& origin) {
  std::vector<std::pair<std::string, std::string>> pairs;
  if (node.empty()) return pairs;
  if (node0_is_student_tensor) {
    for (const auto& n : node) pairs.emplace_back(n, n);
    return pairs;
  }
  if (node.size() % 2 != 0)
    throw Error(str_cat(origin.empty() ? "" : origin + ": ", "'Distillation.node' = [", join(node),
                        "]: Distill_node_pair config wrong, the length need to be an even "
                        "number. '",
                        node[0],
                        "' is not a tensor of the student model, so the list is read as pairs: "
                        "list tensor names in pairs [teacher, student, ...]; with one student "
                        "graph the same name twice, e.g. [logits, logits]; see `segslim inspect "
                        "MODEL` for candidates."));
  for (size_t i = 0; i < node.size(); i += 2) pairs.emplace_back(node[i], node[i + 1]);
  return pairs;
}

CompressConfig parse_compress_config(const std::string& yaml, const std::string& origin) {
  Ctx ctx{origin, fs::absolute(fs::path(origin)).parent_path().string()};
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    throw Error(str_cat(origin, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  SEGSLIM_CHECK(root.IsMap(), origin,
                ": expected a compression config (a map with sections such as Global, "
                "Distillation, QuantAware, TrainConfig).");
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    SEGSLIM_CHECK(!std::count(kUnsupportedSections.begin(), kUnsupportedSections.end(), key),
                  ctx.where(kv.first), ": section '", key,
                  "' (a PaddleSlim strategy) is not supported by segslim. Supported sections: ",
                  join(kSections), ".");
  }
  check_keys(ctx, root, "", kSections);

  CompressConfig c;
  c.path = origin;
  if (root["Global"]) c.global = parse_global(ctx, root["Global"]);
  if (root["Distillation"]) c.distillation = parse_distillation(ctx, root["Distillation"]);
  if (root["QuantAware"]) c.quant_aware = parse_quant_aware(ctx, root["QuantAware"]);
  if (root["QuantPost"]) c.quant_post = parse_quant_post(ctx, root["QuantPost"]);
  if (root["HyperParameterOptimization"])
    c.hpo = parse_hpo(ctx, root["HyperParameterOptimization"]);
  if (root["TrainConfig"]) c.train = parse_train(ctx, root["TrainConfig"]);
  if (root["Auto"]) {
    const YAML::Node n = root["Auto"];
    check_map(ctx, n, "Auto");
    check_keys(ctx, n, "Auto", {"ptq_max_drop"});
    Section s{ctx, n, "Auto"};
    s.num("ptq_max_drop", c.auto_config.ptq_max_drop);
    s.require("ptq_max_drop", c.auto_config.ptq_max_drop >= 0, "a number >= 0 (mIoU points)");
  }
  if (root["Eval"]) {
    const YAML::Node n = root["Eval"];
    check_map(ctx, n, "Eval");
    check_keys(ctx, n, "Eval", {"batch_size"});
    Section s{ctx, n, "Eval"};
    s.integer("batch_size", c.eval.batch_size);
    if (c.eval.batch_size) s.require("batch_size", *c.eval.batch_size > 0, "a positive integer");
  }
  return c;
}

CompressConfig load_compress_config(const std::string& path) {
  return parse_compress_config(read_file(path, "compression config"), path);
}

}  // namespace segslim

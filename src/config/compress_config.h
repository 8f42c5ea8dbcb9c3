#pragma once
// The `segslim compress` config: PaddleSlim auto-compression (ACT) YAML, read as users already
// write it (Global / Distillation / QuantAware / QuantPost / HyperParameterOptimization /
// TrainConfig, with the original's key names and defaults), plus segslim's own keys and the
// `Auto` / `Eval` sections. Every key is checked: an unknown key is an Error naming the file,
// the key path (e.g. `TrainConfig.optimizer_builder.optimizer.tyep`) and the valid keys (closest
// first); a value of the wrong type is an Error naming the key path and the expected type.
//
// A strategy section that is absent parses to std::nullopt, so the caller can tell which
// strategies were configured. Plain structs: no yaml-cpp or torch in this header.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace segslim {

struct GlobalConfig {
  // The original's keys, kept as written (model_dir resolved against the config's folder).
  std::string model_dir;
  std::string model_filename;
  std::string params_filename;
  // `input_shapes: [1, 3, 512, 512]` is stored under the key ""; the map form
  // `{x: [1, 3, 512, 512]}` under each input name.
  std::map<std::string, std::vector<int64_t>> input_shapes;
  // segslim: the ONNX model (absolute). Given as `model`, or derived: model_dir/model_filename
  // when model_filename ends in .onnx, or model_dir itself when it is an .onnx file. Empty when
  // none of these applies (e.g. a Paddle .pdmodel: the CLI's --model must supply it).
  std::string model;
  // segslim: the PaddleSeg dataset YAML (absolute). ACT's seg examples call it `reader_config`,
  // accepted as an alias.
  std::string data;
  int seed = 42;
  std::string output_dir;  // absolute; empty = the CLI's default
};

struct DistillationConfig {
  double alpha = 1.0;
  std::string loss = "l2";  // l2 | soft_label
  // As written. The original expands a list whose first name is a student tensor into pairs
  // (teacher's n, student's n); otherwise it reads it as flat [teacher, student, ...] pairs.
  // Which applies needs the graph: see resolve_distill_pairs().
  std::vector<std::string> node;
  std::string teacher_model_dir;  // absolute; empty = the uncompressed model
  std::string teacher_model_filename;
  std::string teacher_params_filename;
  double temperature = 1.0;  // segslim, soft_label only
  double ce_weight = 0.0;    // segslim: weight of the label cross-entropy mixed into the loss
  bool enable = true;        // segslim: false = plain QAT without a teacher
};

struct QuantAwareConfig {
  // As written (original or ONNX names), and mapped to ONNX op types (deduplicated, in order
  // of first appearance): conv2d / depthwise_conv2d -> Conv, conv2d_transpose -> ConvTranspose,
  // mul / matmul / matmul_v2 -> MatMul and Gemm.
  std::vector<std::string> quantize_op_types = {"conv2d", "depthwise_conv2d"};
  std::vector<std::string> onnx_op_types = {"Conv"};
  int weight_bits = 8;
  int activation_bits = 8;
  std::string weight_quantize_type = "channel_wise_abs_max";        // | abs_max
  std::string activation_quantize_type = "moving_average_abs_max";  // | abs_max, range_abs_max,
                                                                    //   min_max
  double moving_rate = 0.9;
  std::vector<std::string> not_quant_pattern;
  bool onnx_format = true;
  std::string dtype = "int8";
  // segslim
  bool use_learnable_scale = false;  // LSQ: activation scales are trained
  bool skip_first_last = false;
  std::string activation_dtype = "int8";  // int8 (symmetric) | uint8 (asymmetric)
  // Which runtime inputs of quantized Add / Concat nodes get Q/DQ: all | shared (only tensors
  // another quantized consumer quantizes anyway: passes::QuantPolicy::sum_inputs_shared_only)
  std::string add_concat_inputs = "all";
  bool freeze_bn = true;
};

struct QuantPostConfig {
  std::string algo = "hist";  // KL | hist | avg | mse | abs_max
  double hist_percent = 0.999;
  int batch_size = 32;
  int batch_nums = 10;  // alias batch_num
  bool onnx_format = true;
};

struct HyperParameterOptimizationConfig {
  std::vector<std::string> ptq_algo = {"KL", "hist", "avg", "mse"};
  std::vector<bool> bias_correct = {false};
  std::vector<std::string> weight_quantize_type = {"channel_wise_abs_max"};
  std::vector<double> hist_percent = {0.999};
  std::vector<int> batch_num = {10};
  int max_quant_count = 20;
};

struct LearningRateConfig {
  std::string type = "Constant";    // Constant | CosineAnnealingDecay | PiecewiseDecay
  double learning_rate = 0.001;     // base rate (map key learning_rate or base)
  int64_t T_max = 0;                // cosine period in iterations; 0 = the total iterations
  double eta_min = 0.0;             // cosine floor
  std::vector<int64_t> boundaries;  // piecewise, iterations, increasing
  std::vector<double> values;       // piecewise, boundaries.size() + 1 rates
  int64_t warmup_steps = 0;         // alias warmup_iter
  double warmup_start_lr = 0.0;
};

struct OptimizerConfig {
  std::string type = "SGD";  // SGD | Momentum | Adam | AdamW
  double momentum = 0.9;     // Momentum
  double beta1 = 0.9;        // Adam, AdamW
  double beta2 = 0.999;
  double epsilon = 1e-8;
  // L2 coefficient: coupled (added to the gradient) for SGD / Momentum / Adam, decoupled
  // (p -= lr * wd * p) for AdamW.
  double weight_decay = 0.0;
  std::optional<double> grad_clip;  // max global L2 norm of all gradients
};

struct TrainConfig {
  // Exactly one of the two is set.
  std::optional<int> epochs;
  std::optional<int64_t> train_iter;
  int64_t eval_iter = 1000;
  int64_t logging_iter = 10;
  LearningRateConfig learning_rate;
  OptimizerConfig optimizer;  // YAML: optimizer_builder
  // segslim
  std::optional<int> batch_size;  // overrides the dataset's
  int num_workers = 2;
  int64_t checkpoint_every = 1000;  // default = eval_iter
};

struct AutoConfig {
  double ptq_max_drop = 0.5;  // mIoU points PTQ may lose before QAT is used instead
};

struct EvalConfig {
  std::optional<int> batch_size;
};

struct CompressConfig {
  std::string path;  // the YAML file (origin)
  GlobalConfig global;
  std::optional<DistillationConfig> distillation;
  std::optional<QuantAwareConfig> quant_aware;
  std::optional<QuantPostConfig> quant_post;
  std::optional<HyperParameterOptimizationConfig> hpo;
  std::optional<TrainConfig> train;
  AutoConfig auto_config;  // YAML: Auto
  EvalConfig eval;         // YAML: Eval
};

CompressConfig load_compress_config(const std::string& path);
// `origin` names the text in messages; relative paths resolve against its folder.
CompressConfig parse_compress_config(const std::string& yaml, const std::string& origin);

// The original's accepted quantize_op_types names (Paddle and ONNX) and the mapping to ONNX op
// types; an unknown name is an Error listing the valid ones.
const std::vector<std::string>& quantize_op_type_names();
std::vector<std::string> onnx_op_types_for(const std::string& name);

// The distillation pairs [teacher_tensor, student_tensor] for `node`, as the original decides:
// when node[0] is a tensor of the student graph (`node0_is_student_tensor`), every name n becomes
// (n, n) (the teacher's tensor of the same name); otherwise node is read as flat
// [teacher, student, ...] pairs, and an odd length is the original's error plus the fix.
std::vector<std::pair<std::string, std::string>> resolve_distill_pairs(
    const std::vector<std::string>& node, bool node0_is_student_tensor,
    const std::string& origin = "");

}  // namespace segslim

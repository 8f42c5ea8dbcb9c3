#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "config/compress_config.h"
#include "support/test_support.h"

namespace segslim {
namespace {

namespace fs = std::filesystem;

// The origin "/cfg/act.yml" makes relative paths resolve against /cfg.
CompressConfig parse(const std::string& yaml) {
  return parse_compress_config(yaml, "/cfg/act.yml");
}

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(haystack, needle)                               \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "'" << (haystack) << "' lacks '" << (needle) << "'"

// SYSTEM.md's PP-LiteSeg example, verbatim.
const char* kPpLiteSeg = R"(
Distillation: {alpha: 1.0, loss: l2, node: [conv2d_94.tmp_0]}
QuantAware: {onnx_format: False, quantize_op_types: [conv2d, depthwise_conv2d]}
TrainConfig:
  epochs: 20
  eval_iter: 180
  learning_rate: 0.0005
  optimizer_builder: {optimizer: {type: SGD}, weight_decay: 4.0e-05}
)";

TEST(CompressConfig, PpLiteSegExample) {
  const CompressConfig c = parse(kPpLiteSeg);
  ASSERT_TRUE(c.distillation);
  EXPECT_EQ(c.distillation->alpha, 1.0);
  EXPECT_EQ(c.distillation->loss, "l2");
  EXPECT_EQ(c.distillation->node, std::vector<std::string>{"conv2d_94.tmp_0"});
  EXPECT_TRUE(c.distillation->enable);
  ASSERT_TRUE(c.quant_aware);
  EXPECT_FALSE(c.quant_aware->onnx_format);
  EXPECT_EQ(c.quant_aware->quantize_op_types,
            (std::vector<std::string>{"conv2d", "depthwise_conv2d"}));
  EXPECT_EQ(c.quant_aware->onnx_op_types, std::vector<std::string>{"Conv"});
  EXPECT_EQ(c.quant_aware->weight_bits, 8);
  ASSERT_TRUE(c.train);
  EXPECT_EQ(c.train->epochs, 20);
  EXPECT_FALSE(c.train->train_iter);
  EXPECT_EQ(c.train->eval_iter, 180);
  EXPECT_EQ(c.train->checkpoint_every, 180);  // defaults to eval_iter
  EXPECT_EQ(c.train->learning_rate.type, "Constant");
  EXPECT_DOUBLE_EQ(c.train->learning_rate.learning_rate, 0.0005);
  EXPECT_EQ(c.train->optimizer.type, "SGD");
  EXPECT_DOUBLE_EQ(c.train->optimizer.weight_decay, 4.0e-05);
  EXPECT_FALSE(c.train->optimizer.grad_clip);
  EXPECT_FALSE(c.quant_post);
  EXPECT_FALSE(c.hpo);
}

TEST(CompressConfig, DefaultsOfEmptySections) {
  const CompressConfig c = parse(R"(
Global:
Distillation:
QuantAware: {}
QuantPost: {}
HyperParameterOptimization: {}
TrainConfig: {train_iter: 100}
)");
  EXPECT_EQ(c.global.seed, 42);
  EXPECT_EQ(c.global.model, "");
  const auto& d = *c.distillation;
  EXPECT_EQ(d.alpha, 1.0);
  EXPECT_EQ(d.loss, "l2");
  EXPECT_TRUE(d.node.empty());
  EXPECT_EQ(d.temperature, 1.0);
  EXPECT_EQ(d.ce_weight, 0.0);
  EXPECT_TRUE(d.enable);
  const auto& q = *c.quant_aware;
  EXPECT_EQ(q.onnx_op_types, std::vector<std::string>{"Conv"});
  EXPECT_EQ(q.weight_bits, 8);
  EXPECT_EQ(q.activation_bits, 8);
  EXPECT_EQ(q.weight_quantize_type, "channel_wise_abs_max");
  EXPECT_EQ(q.activation_quantize_type, "moving_average_abs_max");
  EXPECT_EQ(q.moving_rate, 0.9);
  EXPECT_TRUE(q.onnx_format);
  EXPECT_EQ(q.dtype, "int8");
  EXPECT_FALSE(q.use_learnable_scale);
  EXPECT_FALSE(q.skip_first_last);
  EXPECT_EQ(q.activation_dtype, "int8");
  EXPECT_TRUE(q.freeze_bn);
  const auto& p = *c.quant_post;
  EXPECT_EQ(p.algo, "hist");
  EXPECT_EQ(p.hist_percent, 0.999);
  EXPECT_EQ(p.batch_size, 32);
  EXPECT_EQ(p.batch_nums, 10);
  const auto& h = *c.hpo;
  EXPECT_EQ(h.ptq_algo, (std::vector<std::string>{"KL", "hist", "avg", "mse"}));
  EXPECT_EQ(h.bias_correct, std::vector<bool>{false});
  EXPECT_EQ(h.hist_percent, std::vector<double>{0.999});
  EXPECT_EQ(h.batch_num, std::vector<int>{10});
  EXPECT_EQ(h.max_quant_count, 20);
  const auto& t = *c.train;
  EXPECT_EQ(t.train_iter, 100);
  EXPECT_EQ(t.eval_iter, 1000);
  EXPECT_EQ(t.logging_iter, 10);
  EXPECT_EQ(t.num_workers, 2);
  EXPECT_EQ(t.checkpoint_every, 1000);
  EXPECT_FALSE(t.batch_size);
  EXPECT_EQ(t.optimizer.type, "SGD");
  EXPECT_EQ(t.optimizer.momentum, 0.9);
  EXPECT_EQ(t.optimizer.beta1, 0.9);
  EXPECT_EQ(t.optimizer.beta2, 0.999);
  EXPECT_EQ(t.optimizer.epsilon, 1e-8);
  EXPECT_EQ(t.optimizer.weight_decay, 0.0);
  EXPECT_EQ(c.auto_config.ptq_max_drop, 0.5);
  EXPECT_FALSE(c.eval.batch_size);
}

TEST(CompressConfig, MissingSectionsAreNullopt) {
  const CompressConfig c = parse("Global: {seed: 7}\n");
  EXPECT_EQ(c.global.seed, 7);
  EXPECT_FALSE(c.distillation);
  EXPECT_FALSE(c.quant_aware);
  EXPECT_FALSE(c.quant_post);
  EXPECT_FALSE(c.hpo);
  EXPECT_FALSE(c.train);
}

TEST(CompressConfig, FullConfig) {
  const CompressConfig c = parse(R"(
Global:
  model_dir: models/ppliteseg
  model_filename: model.onnx
  params_filename: null
  input_shapes: [1, 3, 512, 1024]
  reader_config: ../data/cityscapes.yml
  output_dir: out
Distillation:
  loss: soft_label
  node: [logits, logits]
  teacher_model_dir: /abs/teacher.onnx
  temperature: 4
  ce_weight: 0.5
  enable: false
QuantAware:
  quantize_op_types: [Conv, conv2d_transpose, matmul_v2, Gemm]
  weight_quantize_type: abs_max
  activation_quantize_type: min_max
  not_quant_pattern: [skip_quant]
  use_learnable_scale: true
  skip_first_last: true
  activation_dtype: uint8
  freeze_bn: false
QuantPost: {algo: KL, batch_num: 5, hist_percent: 0.99}
HyperParameterOptimization: {ptq_algo: [KL, mse], hist_percent: 0.9999, batch_num: [5, 10]}
TrainConfig:
  train_iter: 5000
  eval_iter: 500
  checkpoint_every: 250
  batch_size: 8
  origin_metric: 0.7704
  learning_rate:
    type: CosineAnnealingDecay
    learning_rate: 0.01
    T_max: 4000
    warmup_iter: 100
    warmup_start_lr: 0.001
  optimizer_builder:
    optimizer: {type: Momentum, momentum: 0.8}
    weight_decay: {type: L2, coeff: 0.0001}
    grad_clip: {type: ClipGradByGlobalNorm, clip_norm: 5.0}
Auto: {ptq_max_drop: 1.0}
Eval: {batch_size: 2}
)");
  EXPECT_EQ(c.global.model_dir, "/cfg/models/ppliteseg");
  EXPECT_EQ(c.global.model, "/cfg/models/ppliteseg/model.onnx");
  EXPECT_EQ(c.global.params_filename, "");
  EXPECT_EQ(c.global.input_shapes.at(""), (std::vector<int64_t>{1, 3, 512, 1024}));
  EXPECT_EQ(c.global.data, "/data/cityscapes.yml");
  EXPECT_EQ(c.global.output_dir, "/cfg/out");
  EXPECT_EQ(c.distillation->loss, "soft_label");
  EXPECT_EQ(c.distillation->teacher_model_dir, "/abs/teacher.onnx");
  EXPECT_EQ(c.distillation->temperature, 4.0);
  EXPECT_EQ(c.distillation->ce_weight, 0.5);
  EXPECT_FALSE(c.distillation->enable);
  EXPECT_EQ(c.quant_aware->onnx_op_types,
            (std::vector<std::string>{"Conv", "ConvTranspose", "MatMul", "Gemm"}));
  EXPECT_EQ(c.quant_aware->weight_quantize_type, "abs_max");
  EXPECT_EQ(c.quant_aware->activation_quantize_type, "min_max");
  EXPECT_EQ(c.quant_aware->not_quant_pattern, std::vector<std::string>{"skip_quant"});
  EXPECT_TRUE(c.quant_aware->use_learnable_scale);
  EXPECT_TRUE(c.quant_aware->skip_first_last);
  EXPECT_EQ(c.quant_aware->activation_dtype, "uint8");
  EXPECT_FALSE(c.quant_aware->freeze_bn);
  EXPECT_EQ(c.quant_post->algo, "KL");
  EXPECT_EQ(c.quant_post->batch_nums, 5);
  EXPECT_EQ(c.quant_post->hist_percent, 0.99);
  EXPECT_EQ(c.hpo->ptq_algo, (std::vector<std::string>{"KL", "mse"}));
  EXPECT_EQ(c.hpo->hist_percent, std::vector<double>{0.9999});
  EXPECT_EQ(c.hpo->batch_num, (std::vector<int>{5, 10}));
  const auto& t = *c.train;
  EXPECT_EQ(t.train_iter, 5000);
  EXPECT_EQ(t.checkpoint_every, 250);
  EXPECT_EQ(t.batch_size, 8);
  EXPECT_EQ(t.learning_rate.type, "CosineAnnealingDecay");
  EXPECT_EQ(t.learning_rate.learning_rate, 0.01);
  EXPECT_EQ(t.learning_rate.T_max, 4000);
  EXPECT_EQ(t.learning_rate.warmup_steps, 100);
  EXPECT_EQ(t.learning_rate.warmup_start_lr, 0.001);
  EXPECT_EQ(t.optimizer.type, "Momentum");
  EXPECT_EQ(t.optimizer.momentum, 0.8);
  EXPECT_EQ(t.optimizer.weight_decay, 0.0001);
  EXPECT_EQ(t.optimizer.grad_clip, 5.0);
  EXPECT_EQ(c.auto_config.ptq_max_drop, 1.0);
  EXPECT_EQ(c.eval.batch_size, 2);
}

TEST(CompressConfig, ModelDerivation) {
  EXPECT_EQ(parse("Global: {model_dir: m.onnx}").global.model, "/cfg/m.onnx");
  EXPECT_EQ(parse("Global: {model_dir: d, model_filename: model.pdmodel}").global.model, "");
  EXPECT_EQ(parse("Global: {model: /x/y.onnx, model_dir: d}").global.model, "/x/y.onnx");
  EXPECT_EQ(parse("Global: {input_shapes: {x: [1, 3, 8, 8]}}").global.input_shapes.at("x"),
            (std::vector<int64_t>{1, 3, 8, 8}));
}

TEST(CompressConfig, PiecewiseAndScalarGradClip) {
  const auto t = *parse(R"(
TrainConfig:
  epochs: 1
  learning_rate: {type: PiecewiseDecay, boundaries: [10, 20], values: [0.1, 0.01, 0.001]}
  optimizer_builder: {optimizer: {type: AdamW, beta1: 0.8, beta2: 0.99, epsilon: 1.0e-6},
                      weight_decay: 0.01, grad_clip: 1.5}
)")
                      .train;
  EXPECT_EQ(t.learning_rate.boundaries, (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(t.learning_rate.values, (std::vector<double>{0.1, 0.01, 0.001}));
  EXPECT_EQ(t.optimizer.type, "AdamW");
  EXPECT_EQ(t.optimizer.beta1, 0.8);
  EXPECT_EQ(t.optimizer.beta2, 0.99);
  EXPECT_EQ(t.optimizer.epsilon, 1e-6);
  EXPECT_EQ(t.optimizer.weight_decay, 0.01);
  EXPECT_EQ(t.optimizer.grad_clip, 1.5);
}

TEST(CompressConfig, OpTypeMapping) {
  EXPECT_EQ(onnx_op_types_for("conv2d"), std::vector<std::string>{"Conv"});
  EXPECT_EQ(onnx_op_types_for("depthwise_conv2d"), std::vector<std::string>{"Conv"});
  EXPECT_EQ(onnx_op_types_for("Conv"), std::vector<std::string>{"Conv"});
  EXPECT_EQ(onnx_op_types_for("conv2d_transpose"), std::vector<std::string>{"ConvTranspose"});
  EXPECT_EQ(onnx_op_types_for("ConvTranspose"), std::vector<std::string>{"ConvTranspose"});
  for (const char* n : {"mul", "matmul", "matmul_v2"})
    EXPECT_EQ(onnx_op_types_for(n), (std::vector<std::string>{"MatMul", "Gemm"})) << n;
  EXPECT_EQ(onnx_op_types_for("MatMul"), std::vector<std::string>{"MatMul"});
  EXPECT_EQ(onnx_op_types_for("Gemm"), std::vector<std::string>{"Gemm"});
  // Deduplicated, first appearance first.
  EXPECT_EQ(parse("QuantAware: {quantize_op_types: [mul, conv2d, MatMul, depthwise_conv2d]}")
                .quant_aware->onnx_op_types,
            (std::vector<std::string>{"MatMul", "Gemm", "Conv"}));
  const std::string e = error_of("QuantAware: {quantize_op_types: [conv2d, elementwise_mul]}");
  EXPECT_HAS(e, "/cfg/act.yml:1");
  EXPECT_HAS(e, "QuantAware.quantize_op_types");
  EXPECT_HAS(e, "'elementwise_mul'");
  EXPECT_HAS(e, "Did you mean 'elementwise_add'?");
  EXPECT_HAS(e,
             "conv2d, depthwise_conv2d, conv2d_transpose, mul, matmul, matmul_v2, pool2d, "
             "elementwise_add, concat, Conv, ConvTranspose, MatMul, Gemm, AveragePool, MaxPool, "
             "Add, Concat");
  // Paddle's pool2d covers both ONNX poolings (activation input only).
  EXPECT_EQ(onnx_op_types_for("pool2d"), (std::vector<std::string>{"AveragePool", "MaxPool"}));
  EXPECT_EQ(parse("QuantAware: {quantize_op_types: [conv2d, pool2d]}").quant_aware->onnx_op_types,
            (std::vector<std::string>{"Conv", "AveragePool", "MaxPool"}));
  // Sums and concatenations (all runtime inputs quantized)
  EXPECT_EQ(parse("QuantAware: {quantize_op_types: [conv2d, elementwise_add, concat, Add]}")
                .quant_aware->onnx_op_types,
            (std::vector<std::string>{"Conv", "Add", "Concat"}));
}

TEST(CompressConfigErrors, UnknownKeyNamesPathAndValidKeysClosestFirst) {
  const std::string e = error_of(R"(TrainConfig:
  epochs: 1
  optimizer_builder:
    optimizer: {tyep: SGD}
)");
  EXPECT_HAS(e, "/cfg/act.yml:4: unknown key 'TrainConfig.optimizer_builder.optimizer.tyep'.");
  EXPECT_HAS(e, "Did you mean 'type'?");
  // "type" is at distance 2 from "tyep"; the rest are farther.
  EXPECT_HAS(e, "Valid keys (closest first): type, ");
  for (const char* k : {"momentum", "beta1", "beta2", "epsilon", "weight_decay"}) EXPECT_HAS(e, k);

  const std::string top = error_of("Distilation: {alpha: 1}\n");
  EXPECT_HAS(top, "unknown key 'Distilation'");
  EXPECT_HAS(top, "Did you mean 'Distillation'?");
  EXPECT_HAS(error_of("QuantAware: {weight_bit: 8}"), "unknown key 'QuantAware.weight_bit'");
  EXPECT_HAS(error_of("Global: {modle_dir: x}"), "unknown key 'Global.modle_dir'");
  EXPECT_HAS(error_of("TrainConfig: {epochs: 1, learning_rate: {type: Constant, lr: 1}}"),
             "unknown key 'TrainConfig.learning_rate.lr'");
  EXPECT_HAS(error_of("UnstructurePrune: {ratio: 0.5}"), "is not supported by segslim");
}

TEST(CompressConfigErrors, WrongTypes) {
  std::string e = error_of("TrainConfig: {epochs: 1, eval_iter: often}");
  EXPECT_HAS(e, "'TrainConfig.eval_iter' must be an integer, got 'often'");
  e = error_of("TrainConfig: {epochs: 1, learning_rate: fast}");
  EXPECT_HAS(e, "'TrainConfig.learning_rate' must be a number or a map");
  e = error_of("Distillation: {alpha: [1]}");
  EXPECT_HAS(e, "'Distillation.alpha' must be a number, got '[1]'");
  e = error_of("QuantAware: {freeze_bn: maybe}");
  EXPECT_HAS(e, "'QuantAware.freeze_bn' must be true or false");
  e = error_of("TrainConfig: {epochs: 1.5}");
  EXPECT_HAS(e, "'TrainConfig.epochs' must be an integer, got '1.5'");
  e = error_of("TrainConfig: {epochs: 1, optimizer_builder: {weight_decay: lots}}");
  EXPECT_HAS(e, "'TrainConfig.optimizer_builder.weight_decay' must be a number");
  e = error_of("Distillation: {node: [a, [b]]}");
  EXPECT_HAS(e, "'Distillation.node[1]' must be tensor names");
  e = error_of("TrainConfig: {epochs: 1, optimizer_builder: {optimizer: {type: Lion}}}");
  EXPECT_HAS(e, "'TrainConfig.optimizer_builder.optimizer.type' is 'Lion'");
  EXPECT_HAS(e, "Valid: SGD, Momentum, Adam, AdamW");
  e = error_of("Distillation: {loss: ce}");
  EXPECT_HAS(e, "'Distillation.loss' is 'ce'");
  EXPECT_HAS(e, "Valid: l2, soft_label");
}

TEST(CompressConfigErrors, PactRefusedPointsToLsq) {
  const std::string e = error_of("QuantAware: {use_pact: true}");
  EXPECT_HAS(e, "PACT is not supported");
  EXPECT_HAS(e, "use_learnable_scale");
  EXPECT_FALSE(parse("QuantAware: {use_pact: false}").quant_aware->use_learnable_scale);
  EXPECT_HAS(error_of("QuantPost: {bias_correction: true}"), "not supported yet");
}

TEST(CompressConfigErrors, NotQuantPatternRegexMustCompile) {
  const std::string e = error_of(R"(QuantAware: {not_quant_pattern: [head, "re:/Add(_[12]$"]})");
  EXPECT_HAS(e, "'QuantAware.not_quant_pattern'");
  EXPECT_HAS(e, "'re:/Add(_[12]$' is not a valid regular expression");
  EXPECT_EQ(parse(R"(QuantAware: {not_quant_pattern: [head, "re:/Add(_[12])?$"]})")
                .quant_aware->not_quant_pattern,
            (std::vector<std::string>{"head", "re:/Add(_[12])?$"}));
}

TEST(CompressConfig, AddConcatInputs) {
  EXPECT_EQ(parse("QuantAware: {}").quant_aware->add_concat_inputs, "all");
  EXPECT_EQ(parse("QuantAware: {add_concat_inputs: shared}").quant_aware->add_concat_inputs,
            "shared");
  const std::string e = error_of("QuantAware: {add_concat_inputs: some}");
  EXPECT_HAS(e, "'QuantAware.add_concat_inputs' is 'some'");
  EXPECT_HAS(e, "Valid: all, shared");
}

TEST(CompressConfigErrors, EpochsAndTrainIter) {
  EXPECT_HAS(error_of("TrainConfig: {epochs: 1, train_iter: 10}"),
             "sets both 'epochs' and 'train_iter'");
  EXPECT_HAS(error_of("TrainConfig: {eval_iter: 10}"), "needs 'epochs' or 'train_iter'");
  EXPECT_HAS(error_of("TrainConfig: {train_iter: 0}"),
             "'TrainConfig.train_iter' must be a positive");
  EXPECT_HAS(error_of(R"(TrainConfig:
  epochs: 1
  learning_rate: {type: PiecewiseDecay, boundaries: [10], values: [0.1]})"),
             "one more entry than 'boundaries'");
}

TEST(CompressConfigErrors, OddDistillNodeList) {
  // The original's rule: names of student tensors become (teacher n, student n) pairs ...
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(resolve_distill_pairs({"conv2d_94.tmp_0"}, true),
            (Pairs{{"conv2d_94.tmp_0", "conv2d_94.tmp_0"}}));
  // ... otherwise the list is flat [teacher, student, ...].
  EXPECT_EQ(resolve_distill_pairs({"t", "s", "t2", "s2"}, false),
            (Pairs{{"t", "s"}, {"t2", "s2"}}));
  std::string e;
  try {
    resolve_distill_pairs({"conv2d_94.tmp_0"}, false, "act.yml");
  } catch (const Error& err) {
    e = err.what();
  }
  EXPECT_HAS(e, "act.yml: ");
  EXPECT_HAS(e, "Distill_node_pair config wrong, the length need to be an even number");
  EXPECT_HAS(e,
             "list tensor names in pairs [teacher, student, ...]; with one student graph the "
             "same name twice, e.g. [logits, logits]; see `segslim inspect MODEL` for "
             "candidates");
}

TEST(CompressConfig, LoadFromFileResolvesAgainstItsFolder) {
  const fs::path dir = fs::path(testing::temp_dir()) / "compress_config_load";
  fs::create_directories(dir);
  const fs::path p = dir / "act.yml";
  std::ofstream(p) << "Global: {model: m.onnx, data: d.yml}\n";
  const CompressConfig c = load_compress_config(p.string());
  EXPECT_EQ(c.path, p.string());
  EXPECT_EQ(c.global.model, (fs::absolute(dir) / "m.onnx").lexically_normal().string());
  EXPECT_EQ(c.global.data, (fs::absolute(dir) / "d.yml").lexically_normal().string());
  try {
    load_compress_config((dir / "missing.yml").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "missing.yml");
  }
  EXPECT_HAS(error_of("Global: [unclosed"), "/cfg/act.yml:1: invalid YAML");
}

}  // namespace
}  // namespace segslim

#include "support/test_support.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace segslim::testing {

namespace fs = std::filesystem;

std::string source_dir() { return SEGSLIM_SOURCE_DIR; }

std::string shared_dir() {
  const char* env = std::getenv("SEGSLIM_SHARED");
  fs::path p = env ? fs::path(env) : fs::path(SEGSLIM_SOURCE_DIR).parent_path() / "shared";
  return fs::is_directory(p / "models") ? p.string() : std::string();
}

onnx::TensorProto read_tensor_proto(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  onnx::TensorProto t;
  if (!in || !t.ParseFromString(ss.str())) throw std::runtime_error("cannot read " + path);
  return t;
}

::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected,
                                     double rtol, double atol) {
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " != expected " << expected.sizes();
  if (actual.numel() == 0) return ::testing::AssertionSuccess();
  at::Tensor a = actual.detach().to(at::kCPU).to(at::kDouble);
  at::Tensor e = expected.detach().to(at::kCPU).to(at::kDouble);
  at::Tensor both_nan = at::isnan(a) & at::isnan(e);
  at::Tensor excess = (a - e).abs() - (atol + rtol * e.abs());
  excess.masked_fill_(both_nan, -1.0);
  excess.masked_fill_(at::isnan(excess), 1.0);
  // equal infinities give inf - inf = nan above; treat exact equality as a match
  excess.masked_fill_(a == e, -1.0);
  const int64_t worst = excess.reshape({-1}).argmax().item<int64_t>();
  if (excess.reshape({-1})[worst].item<double>() <= 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst << ": actual " << a.reshape({-1})[worst].item<double>()
         << " expected " << e.reshape({-1})[worst].item<double>() << " (rtol " << rtol << ", atol "
         << atol << ")";
}

OneNodeModel one_node_model(const std::string& op_type, const std::vector<std::string>& inputs,
                            const std::vector<std::string>& outputs, int64_t opset) {
  OneNodeModel m;
  m.model.set_ir_version(8);
  auto* op = m.model.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  auto* g = m.model.mutable_graph();
  g->set_name(op_type + "_test");
  m.node = g->add_node();
  m.node->set_op_type(op_type);
  m.node->set_name(op_type + "_0");
  for (const auto& i : inputs) {
    m.node->add_input(i);
    if (i.empty()) continue;
    auto* vi = g->add_input();
    vi->set_name(i);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    vi->mutable_type()->mutable_tensor_type()->mutable_shape();  // unknown rank
  }
  for (const auto& o : outputs) {
    m.node->add_output(o);
    auto* vi = g->add_output();
    vi->set_name(o);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    vi->mutable_type()->mutable_tensor_type()->mutable_shape();
  }
  return m;
}

std::string temp_dir() {
  // Named after this process; a directory of that name found on the first call was left by an
  // earlier process that had the same pid (pids wrap): emptied, or a test that checks that a
  // file was NOT written (a killed run's report) would find the old one.
  static const std::string dir = [] {
    fs::path p = fs::temp_directory_path() / ("segslim_test_" + std::to_string(::getpid()));
    fs::remove_all(p);
    return p.string();
  }();
  fs::create_directories(dir);
  return dir;
}

std::string write_temp_file(const std::string& name, const std::string& content) {
  fs::path p = fs::path(temp_dir()) / name;
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << content;
  return p.string();
}

}  // namespace segslim::testing

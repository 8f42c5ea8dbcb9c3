#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"

namespace segslim {

namespace fs = std::filesystem;

namespace {

// Archive layout. Keys are fixed ASCII ("tensor_0", ...) because the archive is a TorchScript
// module whose attribute names should not carry arbitrary ONNX tensor names ('.', '/', ':');
// the real names travel as strings encoded in uint8 tensors. Scalars are 1-element tensors.
constexpr int64_t kFormatVersion = 1;

at::Tensor string_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  if (!s.empty()) std::memcpy(t.data_ptr<uint8_t>(), s.data(), s.size());
  return t;
}

std::string tensor_string(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kByte).contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()),
                     static_cast<size_t>(c.numel()));
}

// Names joined by '\0' (which no tensor name contains).
at::Tensor names_tensor(const std::vector<std::string>& names) {
  std::string joined;
  for (const auto& n : names) {
    joined += n;
    joined += '\0';
  }
  return string_tensor(joined);
}

std::vector<std::string> tensor_names(const at::Tensor& t) {
  const std::string joined = tensor_string(t);
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < joined.size(); ++i)
    if (joined[i] == '\0') {
      out.push_back(joined.substr(start, i - start));
      start = i + 1;
    }
  SEGSLIM_CHECK(start == joined.size(), "name list is not terminated");
  return out;
}

std::string tmp_name(const fs::path& p) {
  return p.string() + ".tmp." + std::to_string(::getpid());
}

void rename_or_throw(const std::string& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) {
    fs::remove(from, ec);
    throw Error(str_cat("cannot rename ", from, " to ", to.string(), ": ", ec.message()));
  }
}

}  // namespace

void save_checkpoint(const std::string& dir, const Checkpoint& ck) {
  fs::create_directories(dir);
  const fs::path pt = fs::path(dir) / "checkpoint.pt";
  const fs::path js = fs::path(dir) / "checkpoint.json";
  const std::string pt_tmp = tmp_name(pt), js_tmp = tmp_name(js);
  TempFileScope scope;

  try {
    torch::serialize::OutputArchive archive;
    auto scalar_i = [](int64_t v) { return at::full({1}, v, at::kLong); };
    archive.write("format_version", scalar_i(kFormatVersion), /*is_buffer=*/true);
    archive.write("iteration", scalar_i(ck.iteration), true);
    archive.write("epoch", scalar_i(ck.epoch), true);
    archive.write("best_miou", at::full({1}, ck.best_miou, at::kDouble), true);

    std::vector<std::string> names;
    int64_t i = 0;
    for (const auto& [name, t] : ck.tensors) {
      SEGSLIM_CHECK(t.defined(), "checkpoint tensor '", name, "' is undefined.");
      names.push_back(name);
      archive.write(str_cat("tensor_", i++), t.detach().to(at::kCPU).contiguous(), true);
    }
    archive.write("tensor_names", names_tensor(names), true);

    names.clear();
    i = 0;
    for (const auto& [name, values] : ck.observer_states) {
      names.push_back(name);
      at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
      if (!values.empty())
        std::memcpy(t.data_ptr<double>(), values.data(), values.size() * sizeof(double));
      archive.write(str_cat("observer_", i++), t, true);
    }
    archive.write("observer_names", names_tensor(names), true);
    archive.write("extra_json", string_tensor(ck.extra_json), true);
    archive.save_to(pt_tmp);
  } catch (const Error&) {
    std::error_code ec;
    fs::remove(pt_tmp, ec);
    throw;
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(pt_tmp, ec);
    std::string what = e.what();
    throw Error(
        str_cat("cannot write checkpoint '", pt_tmp, "': ", what.substr(0, what.find('\n'))));
  }

  {
    nlohmann::json j = {{"iteration", ck.iteration},
                        {"epoch", ck.epoch},
                        {"best_miou", ck.best_miou},
                        {"num_tensors", ck.tensors.size()}};
    std::ofstream out(js_tmp, std::ios::binary | std::ios::trunc);
    out << j.dump(2) << "\n";
    out.flush();
    if (!out.good()) {
      std::error_code ec;
      fs::remove(js_tmp, ec);
      fs::remove(pt_tmp, ec);
      throw Error(str_cat("cannot write ", js_tmp, " (disk full?)"));
    }
  }
  // Order matters: see the consistency rule in checkpoint.h.
  rename_or_throw(js_tmp, js);
  rename_or_throw(pt_tmp, pt);
}

std::optional<Checkpoint> load_checkpoint(const std::string& dir) {
  const fs::path pt = fs::path(dir) / "checkpoint.pt";
  if (!fs::exists(pt)) return std::nullopt;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(pt.string());
    auto read = [&](const std::string& key) {
      at::Tensor t;
      SEGSLIM_CHECK(archive.try_read(key, t, /*is_buffer=*/true), "missing entry '", key, "'");
      return t;
    };
    const int64_t version = read("format_version").item<int64_t>();
    SEGSLIM_CHECK(version == kFormatVersion, "format version ", version, " (this build reads ",
                  kFormatVersion, ")");
    Checkpoint ck;
    ck.iteration = read("iteration").item<int64_t>();
    ck.epoch = static_cast<int>(read("epoch").item<int64_t>());
    ck.best_miou = read("best_miou").item<double>();
    const auto names = tensor_names(read("tensor_names"));
    for (size_t i = 0; i < names.size(); ++i) ck.tensors[names[i]] = read(str_cat("tensor_", i));
    const auto obs = tensor_names(read("observer_names"));
    for (size_t i = 0; i < obs.size(); ++i) {
      const at::Tensor t = read(str_cat("observer_", i)).to(at::kDouble).contiguous();
      const double* p = t.data_ptr<double>();
      ck.observer_states[obs[i]] = std::vector<double>(p, p + t.numel());
    }
    ck.extra_json = tensor_string(read("extra_json"));
    return ck;
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw Error(str_cat("checkpoint '", pt.string(), "' is corrupt or truncated (",
                        what.substr(0, what.find('\n')),
                        "); delete it (or its folder) to start training from scratch."));
  }
}

}  // namespace segslim

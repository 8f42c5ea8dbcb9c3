// The oneDNN inference engine (engine.h). Compilation, per input shape, in three phases
// (plan.h): graph -> IR steps (graph_builder.cpp), IR -> primitives (lowering.cpp), activation
// memory plan (memory_plan.cpp). Here: the public API, the load-time support check and run().
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "common/error.h"
#include "engine/plan.h"
#include "graph/model.h"
#include "ops/registry.h"

namespace segslim::engine {

struct Engine::Impl {
  onnx::ModelProto model;
  EngineOptions opt;
  int64_t opset = 13;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  Plan* last = nullptr;
  std::string input_name;

  void check_supported();
  std::unique_ptr<Plan> compile(const std::vector<int64_t>& in_dims);
};

void Engine::Impl::check_supported() {
  const auto& g = model.graph();
  std::set<std::string> known;  // values computable at compile time
  for (const auto& i : g.initializer()) known.insert(i.name());
  std::map<std::string, std::string> bad;
  const auto& reg = ops::Registry::instance();
  for (const auto& n : g.node()) {
    const bool default_domain = n.domain().empty() || n.domain() == "ai.onnx";
    const std::string type = default_domain ? n.op_type() : n.domain() + "::" + n.op_type();
    bool all_known = true;
    for (const auto& i : n.input()) all_known = all_known && (i.empty() || known.count(i));
    bool ok = false;
    if (default_domain && (n.op_type() == "Constant" || n.op_type() == "Shape" ||
                           (all_known && reg.find(n.op_type())))) {
      ok = true;
      for (const auto& o : n.output()) known.insert(o);
    } else if (default_domain && native_ops().count(n.op_type())) {
      ok = true;
    } else if (default_domain && n.op_type() == "ArgMax" && g.output_size() > 0 &&
               n.output(0) == g.output(0).name()) {
      ok = true;  // the class-id map at the end of a deployed model
    } else if (default_domain && reg.find(n.op_type())) {
      // the executor's ATen kernel, on runtime tensors: float results only
      ok = float_result(n);
      if (!ok && !bad.count(type)) bad[type] = node_name(n) + ", whose result is not float";
    }
    if (!ok && !bad.count(type)) bad[type] = node_name(n);
  }
  if (bad.empty()) return;
  std::string msg =
      opt.origin + ": the engine cannot run " + std::to_string(bad.size()) + " op type(s): ";
  bool first = true;
  for (const auto& [t, nn] : bad) {
    msg += (first ? "" : ", ") + t + " (node " + nn + ")";
    first = false;
  }
  throw Error(msg +
              ". Runs every op `segslim inspect` accepts, on float tensors (integer and boolean "
              "results only on compile-time constants, or an ArgMax as the graph output)");
}

std::unique_ptr<Plan> Engine::Impl::compile(const std::vector<int64_t>& in_dims) {
  auto p = std::make_unique<Plan>();
  p->opset = opset;
  build_ir(model, opt, opset, input_name, in_dims, *p);
  p->half_links = opt.half_links &&
                  std::any_of(p->ir.begin(), p->ir.end(), [](const Step& s) { return s.int8; });
  lower_plan(*p, eng, strm);
  // graph boundary: the output to NCHW f32, directly when it has that layout already
  Val& ov = p->vals[p->output_val];
  p->out_dims = ov.dims;
  memory::desc omd(mdims(ov.dims), dt::f32, plain_tag(ov.dims.size()));
  p->output_direct = ov.int64 || (ov.md == omd && !ov.external);
  if (!p->output_direct)
    p->out_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, ov.md, eng, omd));
  plan_memory(*p, eng);
  if (!p->output_direct) p->out_mem = memory(omd, eng, nullptr);
  return p;
}

Engine::Engine(const onnx::ModelProto& model, EngineOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = model;
  impl_->opt = std::move(options);
  impl_->opset = default_opset(model);
  const auto inputs = real_inputs(model.graph());
  SEGSLIM_CHECK(inputs.size() == 1, impl_->opt.origin,
                ": the engine runs models with one input, this one has ", inputs.size());
  SEGSLIM_CHECK(model.graph().output_size() >= 1, impl_->opt.origin, ": the model has no output");
  impl_->input_name = inputs[0]->name();
  impl_->check_supported();
}

Engine::~Engine() = default;

at::Tensor Engine::run(const at::Tensor& input) {
  SEGSLIM_CHECK(input.scalar_type() == at::kFloat && input.device().is_cpu(), impl_->opt.origin,
                ": the engine takes a float32 CPU tensor");
  at::Tensor x = input.contiguous();
  const std::vector<int64_t> dims = x.sizes().vec();
  auto& slot = impl_->plans[dims];
  if (!slot) slot = impl_->compile(dims);
  Plan& p = *slot;
  impl_->last = &p;
  p.in_mem.set_data_handle(x.data_ptr());
  // The previous output, when the caller has let go of it (and of every view of it): a large
  // fresh buffer would be page-faulted in on every run (a 1x19x1024x2048 map is 160 MB).
  if (!p.out_cache.defined() || p.out_cache.use_count() != 1 ||
      p.out_cache.storage().use_count() != 1)  // nor a view of it
    p.out_cache = at::empty(p.out_dims, p.vals[p.output_val].int64 ? at::kLong : at::kFloat);
  at::Tensor out = p.out_cache;
  p.out_mem.set_data_handle(out.data_ptr());
  const bool profile = impl_->opt.profile;
  if (profile && p.step_ms.size() != p.execs.size() + 1) p.step_ms.assign(p.execs.size() + 1, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto lap = [&](size_t i) {  // profiling: charge the time since the last lap to step i
    impl_->strm.wait();
    const auto t1 = std::chrono::steady_clock::now();
    p.step_ms[i] += std::chrono::duration<double, std::milli>(t1 - t0).count();
    t0 = t1;
  };
  for (size_t i = 0; i < p.execs.size(); ++i) {
    Exec& e = p.execs[i];
    if (e.custom) {
      impl_->strm.wait();
      e.custom();
    } else {
      try {
        e.prim.execute(impl_->strm, e.args);
      } catch (const dnnl::error& err) {
        throw Error(
            str_cat(impl_->opt.origin, ": oneDNN failed in step '", e.line, "': ", err.what()));
      }
    }
    if (profile) lap(i);
  }
  if (!p.output_direct) p.out_reorder.execute(impl_->strm, p.mems[p.output_val], p.out_mem);
  impl_->strm.wait();
  if (profile) {
    lap(p.execs.size());
    ++p.profiled_runs;
  }
  return out;
}

std::vector<std::string> Engine::describe() const {
  if (!impl_->last) return {};
  return impl_->last->lines;
}

int Engine::num_int8_steps() const { return impl_->last ? impl_->last->int8_steps : 0; }

std::vector<StepTime> Engine::profile() const {
  std::vector<StepTime> out;
  const Plan* p = impl_->last;
  if (!p || p->step_ms.empty()) return out;
  for (size_t i = 0; i < p->execs.size(); ++i)
    out.push_back({p->execs[i].line, p->step_ms[i], p->profiled_runs});
  out.push_back({"Reorder output -> nchw f32", p->step_ms.back(), p->profiled_runs});
  return out;
}

}  // namespace segslim::engine

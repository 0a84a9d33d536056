// FSDP (fsdp.hpp): sharding, the per-block gather/free around forward and backward, the
// reduce-scatter of gradients as they become complete, and the checkpoint views of the shards.
// Dimensions: W ranks, R rows of a parameter's dim 0, C = ceil(R / W) rows per rank, E elements
// per row, N a unit's elements per rank (its parameters' C x E, padded).
#include "train/fsdp.hpp"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "host/json.hpp"
#include "nn/model.hpp"
#include "nn/safetensors.hpp"
#include "train/grad_ready.hpp"

namespace sky::train {

struct Fsdp::Param {
  std::string name;
  at::Tensor full;              // the model's own tensor: [0] while sharded, full shape while gathered
  std::vector<int64_t> shape;   // full shape
  int64_t R = 1, C = 1, E = 1;  // rows, rows per rank, elements per row
  int64_t local_rows = 0;       // this rank's rows (C, fewer or none at the end)
  at::Tensor shard;             // [local_rows, ...] in the shards' dtype: the optimizer's leaf
  at::ScalarType gather_dtype;  // dtype of the full tensor in training (param_dtype)
  bool trainable = false;
  size_t unit = 0;
  int64_t gather_off = 0;  // in the unit's per-rank gather slice
  int64_t reduce_off = 0;  // in the unit's per-rank reduce slice (trainable parameters only)
  std::shared_ptr<torch::autograd::Node> grad_acc;  // kept alive: its post hook reports the grad
  uintptr_t hook_key = 0;
};

struct Fsdp::Unit {
  std::string prefix;  // "" for the root unit
  std::vector<size_t> params;
  int64_t gather_N = 0, reduce_N = 0;
  int trainable = 0;
  enum State { UNIT_SHARDED, UNIT_GATHERING, UNIT_GATHERED } state = UNIT_SHARDED;
  at::ScalarType gathering_dtype = at::kFloat;  // of the gather in flight, or the gathered tensors
  at::Tensor gather_in, gather_out;             // [N], [W * N]
  dist::Pending gather;
  // this micro-batch's backward
  int grads_left = 0;
  bool reduce_started = false;
  at::Tensor reduce_in, reduce_out;  // [W * N], [N]
  dist::Pending reduce;
};

namespace {

// The bytes behind t become n bytes, in place: views of t (autograd's saved tensors) see them.
void storage_resize(const at::Tensor& t, size_t n) {
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  if (s->nbytes() == n) return;
  at::Allocator* a = s->allocator() ? s->allocator() : c10::GetAllocator(t.device().type());
  s->set_data_ptr_noswap(a->allocate(n));
  s->set_nbytes(n);
}

// A tensor writing into t's memory with its own version counter: filling a gathered parameter
// does not count as an in-place change of a tensor autograd saved.
at::Tensor alias_of(const at::Tensor& t) {
  at::NoGradGuard no_grad;
  at::Tensor a = at::empty({0}, t.options().requires_grad(false));
  a.set_(t.storage(), t.storage_offset(), t.sizes(), t.strides());
  return a;
}


int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// full [R, ...] <-> per-rank padded parts in flat [W, N] at column off: rank r's rows
// [r*C, min((r+1)*C, R)) are the first C*E elements of its part. At most two copies each way.
void copy_rows_from_parts(const at::Tensor& full, const at::Tensor& flat, int64_t W, int64_t N, int64_t off, int64_t R,
                          int64_t C, int64_t E) {
  at::Tensor parts = flat.view({W, N}).narrow(1, off, C * E);  // [W, C*E]
  at::Tensor dst = full.view({R, E});
  const int64_t whole = R / C;  // ranks whose C rows are all there
  if (whole > 0) dst.narrow(0, 0, whole * C).view({whole, C * E}).copy_(parts.narrow(0, 0, whole));
  const int64_t rest = R - whole * C;
  if (rest > 0) dst.narrow(0, whole * C, rest).view({rest * E}).copy_(parts[whole].narrow(0, 0, rest * E));
}

void copy_rows_to_parts(const at::Tensor& flat, const at::Tensor& full, int64_t W, int64_t N, int64_t off, int64_t R,
                        int64_t C, int64_t E) {
  at::Tensor parts = flat.view({W, N}).narrow(1, off, C * E);
  at::Tensor src = full.reshape({R, E});
  const int64_t whole = R / C;
  if (whole > 0) parts.narrow(0, 0, whole).copy_(src.narrow(0, 0, whole * C).view({whole, C * E}));
  const int64_t rest = R - whole * C;
  if (rest > 0) parts[whole].narrow(0, 0, rest * E).copy_(src.narrow(0, whole * C, rest).reshape({rest * E}));
}

}  // namespace

Fsdp::Fsdp(std::vector<NamedParam> params, FsdpConfig cfg, std::shared_ptr<dist::Group> group, at::Device device)
    : cfg_(std::move(cfg)), ops_(std::move(group)), device_(device), alive_(std::make_shared<bool>(true)) {
  const int64_t W = world_size();
  for (size_t i = 0; i < cfg_.blocks.size(); ++i) {
    units_.push_back(Unit{});
    units_.back().prefix = cfg_.blocks[i];
    unit_by_prefix_[cfg_.blocks[i]] = i;
  }
  units_.push_back(Unit{});  // the root
  const size_t root = units_.size() - 1;
  for (NamedParam& np : params) {
    Param p;
    p.name = np.name;
    p.full = np.param;
    p.shape = np.param.sizes().vec();
    p.R = p.shape.empty() ? 1 : p.shape[0];
    p.E = p.R == 0 ? 0 : np.param.numel() / p.R;
    p.C = std::max<int64_t>(ceil_div(p.R, W), 1);
    p.local_rows = std::max<int64_t>(0, std::min(p.C, p.R - rank() * p.C));
    p.trainable = np.param.requires_grad();
    p.gather_dtype = cfg_.param_dtype.value_or(np.param.scalar_type());
    p.unit = root;
    for (size_t u = 0; u < cfg_.blocks.size(); ++u)
      if (p.name.compare(0, cfg_.blocks[u].size(), cfg_.blocks[u]) == 0) p.unit = u;
    param_by_name_[p.name] = params_.size();
    units_[p.unit].params.push_back(params_.size());
    params_.push_back(std::move(p));
  }
  for (size_t u = 0; u < cfg_.blocks.size(); ++u)
    if (units_[u].params.empty())
      throw std::runtime_error("FSDP: the block '" + cfg_.blocks[u] + "' has no parameters");
  for (Unit& u : units_) {
    for (size_t i : u.params) {
      Param& p = params_[i];
      p.gather_off = u.gather_N;
      u.gather_N += p.C * p.E;
      if (p.trainable) {
        p.reduce_off = u.reduce_N;
        u.reduce_N += p.C * p.E;
        ++u.trainable;
      }
    }
  }
  shard_all();
}

Fsdp::~Fsdp() {
  *alive_ = false;
  for (Param& p : params_)
    if (p.grad_acc) p.grad_acc->del_post_hook(p.hook_key);
}

Fsdp::Param& Fsdp::param(const std::string& name) {
  auto it = param_by_name_.find(name);
  if (it == param_by_name_.end()) throw std::runtime_error("FSDP: no parameter '" + name + "'");
  return params_[it->second];
}

const Fsdp::Param& Fsdp::param(const std::string& name) const { return const_cast<Fsdp*>(this)->param(name); }

void Fsdp::shard_all() {
  at::NoGradGuard no_grad;
  const int r = rank();
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    Unit& u = units_[ui];
    if (cfg_.sync_module_states && world_size() > 1) {
      // rank 0's values, a unit at a time (the peak is one unit's broadcast buffers)
      std::vector<at::Tensor> ts;
      for (size_t i : u.params) ts.push_back(params_[i].full);
      auto g = dist::default_group();
      g->broadcast_tensors(ts, 0);
    }
    for (size_t i : u.params) {
      Param& p = params_[i];
      at::Tensor full = p.full;
      at::Tensor rows = p.shape.empty() ? full.reshape({1}) : full;
      p.shard = rows.narrow(0, std::min(r * p.C, p.R), p.local_rows).to(device_).clone().contiguous();
      p.shard.set_requires_grad(p.trainable);
      // the model's tensor gets storage of its own (it may have shared a mapped checkpoint's),
      // the gathered dtype, and its grad accumulator made while it has its full shape
      c10::TensorImpl* impl = full.unsafeGetTensorImpl();
      at::Allocator* a = c10::GetAllocator(full.device().type());
      c10::Storage fresh(c10::Storage::use_byte_size_t(), 0, a, /*resizable=*/true);
      impl->set_storage_and_dtype(fresh, caffe2::TypeMeta::fromScalarType(p.gather_dtype));
      impl->set_storage_offset(0);
      impl->set_sizes_contiguous(p.shape);
      if (p.trainable) {
        p.grad_acc = torch::autograd::impl::grad_accumulator(full);
        const size_t unit = p.unit;
        p.hook_key = p.grad_acc->add_post_hook(std::make_unique<GradReady>(alive_, [this, unit] { on_grad_ready(unit); }));
      }
      impl->set_sizes_contiguous({0});
    }
    u.state = Unit::UNIT_SHARDED;
  }
  unshard(units_.back());  // the root stays gathered between steps
}

std::vector<NamedParam> Fsdp::trainable_shards() const {
  std::vector<NamedParam> out;
  for (const Param& p : params_)
    if (p.trainable) out.push_back({p.name, p.shard});
  return out;
}

std::vector<Fsdp::ParamInfo> Fsdp::params_info() const {
  std::vector<ParamInfo> out;
  for (const Param& p : params_) out.push_back({p.name, p.shape, p.trainable});
  return out;
}

int64_t Fsdp::chunk_rows(const std::string& name) const { return param(name).C; }

// ---- gather and free ------------------------------------------------------------------------------

void Fsdp::start_gather(Unit& u) {
  if (u.state != Unit::UNIT_SHARDED) return;
  at::NoGradGuard no_grad;
  const int64_t W = world_size();
  // one dtype per unit: the shards' own inside a FullParams scope, else the parameters' gather dtype
  at::ScalarType dt = summoned_ ? params_[u.params[0]].shard.scalar_type() : params_[u.params[0]].gather_dtype;
  u.gathering_dtype = dt;
  u.gather_in = at::empty({u.gather_N}, at::TensorOptions().dtype(dt).device(device_));  // [N]
  for (size_t i : u.params) {
    const Param& p = params_[i];
    if (p.local_rows > 0) u.gather_in.narrow(0, p.gather_off, p.local_rows * p.E).copy_(p.shard.reshape({-1}));
  }
  u.gather_out = at::empty({W * u.gather_N}, u.gather_in.options());  // [W * N]
  u.gather = ops_.all_gather(u.gather_in, u.gather_out, "FSDP all-gather");
  u.state = Unit::UNIT_GATHERING;
}

void Fsdp::finish_gather(Unit& u) {
  if (u.state != Unit::UNIT_GATHERING) return;
  u.gather.wait();
  at::NoGradGuard no_grad;
  const int64_t W = world_size();
  for (size_t i : u.params) {
    Param& p = params_[i];
    c10::TensorImpl* impl = p.full.unsafeGetTensorImpl();
    if (p.full.scalar_type() != u.gathering_dtype)
      impl->set_storage_and_dtype(p.full.storage(), caffe2::TypeMeta::fromScalarType(u.gathering_dtype));
    impl->set_sizes_contiguous(p.shape);
    storage_resize(p.full, static_cast<size_t>(p.full.numel()) * p.full.element_size());
    copy_rows_from_parts(alias_of(p.full), u.gather_out, W, u.gather_N, p.gather_off, p.R, p.C, p.E);
  }
  u.gather_in = at::Tensor();
  u.gather_out = at::Tensor();
  u.state = Unit::UNIT_GATHERED;
}

void Fsdp::unshard(Unit& u) {
  start_gather(u);
  finish_gather(u);
}

void Fsdp::reshard(Unit& u) {
  if (u.state == Unit::UNIT_GATHERING) u.gather.wait();
  for (size_t i : u.params) {
    Param& p = params_[i];
    storage_resize(p.full, 0);
    p.full.unsafeGetTensorImpl()->set_sizes_contiguous({0});
  }
  u.gather_in = at::Tensor();
  u.gather_out = at::Tensor();
  u.state = Unit::UNIT_SHARDED;
}

// ---- forward and backward ---------------------------------------------------------------------------

at::Tensor Fsdp::run_block(const std::string& prefix, const at::Tensor& h, const BlockRun& run) {
  auto it = unit_by_prefix_.find(prefix);
  if (it == unit_by_prefix_.end()) return run(h);  // a block that is not wrapped: part of the root
  const size_t j = it->second;
  Unit& u = units_[j];
  const bool grad = at::GradMode::is_enabled();
  if (j == 0 && grad) {
    for (Unit& v : units_) {  // a new forward: this micro-batch's backward starts from scratch
      v.grads_left = v.trainable;
      v.reduce_started = false;
    }
  }
  unshard(u);
  if (cfg_.forward_prefetch && j + 1 < cfg_.blocks.size()) start_gather(units_[j + 1]);
  at::Tensor out = run(h);
  if (grad && out.requires_grad()) {
    std::shared_ptr<bool> alive = alive_;
    out.register_hook([this, alive, j](const at::TensorBase&) {
      if (*alive) pre_backward(j);
    });
  }
  if (!grad || cfg_.reshard_after_forward) reshard(u);
  return out;
}

void Fsdp::pre_backward(size_t j) {
  // block j+1's backward is over: its input's gradient is this block's output's
  if (j + 1 < cfg_.blocks.size() && units_[j + 1].state != Unit::UNIT_SHARDED) reshard(units_[j + 1]);
  unshard(units_[j]);
  if (cfg_.backward_prefetch == BackwardPrefetch::BACKWARD_PREFETCH_PRE && j > 0) start_gather(units_[j - 1]);
}

void Fsdp::on_grad_ready(size_t j) {
  Unit& u = units_[j];
  if (u.reduce_started || --u.grads_left > 0) return;
  start_reduce(u);
  if (cfg_.backward_prefetch == BackwardPrefetch::BACKWARD_PREFETCH_POST && j > 0 && j < cfg_.blocks.size())
    start_gather(units_[j - 1]);
}

void Fsdp::start_reduce(Unit& u) {
  if (u.reduce_started || u.trainable == 0) return;
  u.reduce_started = true;
  drain_reduces(1);  // at most two in flight
  at::NoGradGuard no_grad;
  const int64_t W = world_size();
  const auto opts = at::TensorOptions().dtype(cfg_.reduce_dtype).device(device_);
  u.reduce_in = at::zeros({W * u.reduce_N}, opts);  // [W * N]; padding rows and missing grads stay 0
  for (size_t i : u.params) {
    Param& p = params_[i];
    if (!p.trainable) continue;
    at::Tensor g = p.full.grad();
    if (g.defined()) {
      copy_rows_to_parts(u.reduce_in, g, W, u.reduce_N, p.reduce_off, p.R, p.C, p.E);
      p.full.mutable_grad() = at::Tensor();  // the full gradient's memory goes now
    }
  }
  u.reduce_out = at::empty({u.reduce_N}, opts);  // [N]
  u.reduce = ops_.reduce_scatter_sum(u.reduce_in, u.reduce_out, "FSDP reduce-scatter");
  reducing_.push_back(static_cast<size_t>(&u - units_.data()));
}

void Fsdp::drain_reduces(size_t keep) {
  at::NoGradGuard no_grad;
  const double inv_w = 1.0 / static_cast<double>(world_size());
  while (reducing_.size() > keep) {
    Unit& u = units_[reducing_.front()];
    reducing_.pop_front();
    u.reduce.wait();
    for (size_t i : u.params) {
      Param& p = params_[i];
      if (!p.trainable) continue;
      if (p.local_rows == 0) {  // no rows here: an empty grad, so the optimizer keeps (empty) state like the others
        if (!p.shard.grad().defined()) p.shard.mutable_grad() = at::zeros_like(p.shard);
        continue;
      }
      at::Tensor mine = u.reduce_out.narrow(0, p.reduce_off, p.local_rows * p.E).view(p.shard.sizes());
      at::Tensor add = (mine * inv_w).to(p.shard.scalar_type());  // the mean over ranks
      if (p.shard.grad().defined()) p.shard.mutable_grad().add_(add);
      else p.shard.mutable_grad() = add;
    }
    u.reduce_in = at::Tensor();
    u.reduce_out = at::Tensor();
  }
}

void Fsdp::finish_backward() {
  const size_t blocks = cfg_.blocks.size();
  for (size_t k = blocks; k-- > 0;) start_reduce(units_[k]);  // units no gradient reached: zeros
  start_reduce(units_[blocks]);                                 // the root
  drain_reduces(0);
  for (size_t k = 0; k < blocks; ++k)
    if (units_[k].state != Unit::UNIT_SHARDED) reshard(units_[k]);
  for (Unit& u : units_) {
    u.grads_left = u.trainable;
    u.reduce_started = false;
  }
}

at::Tensor Fsdp::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const Param& p : params_)
    if (p.trainable && p.shard.grad().defined()) grads.push_back(p.shard.grad());
  at::Tensor sq = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (const at::Tensor& g : grads) sq.add_(at::linalg_vector_norm(g, 2).to(at::kFloat).pow(2));
  ops_.all_reduce_sum(sq, "FSDP grad norm").wait();
  at::Tensor total = sq.sqrt().squeeze(0);
  if (max_norm > 0) {
    at::Tensor coef = ((total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
    for (at::Tensor& g : grads) g.mul_(coef.to(g.scalar_type()));
  }
  return total;
}

bool Fsdp::any_rank(bool mine) {
  at::Tensor t = at::full({1}, mine ? 1.0 : 0.0, at::TensorOptions().dtype(at::kFloat).device(device_));
  ops_.all_reduce_sum(t, "FSDP overflow check").wait();
  return t.item<float>() > 0;
}

void Fsdp::after_step() {
  Unit& root = units_.back();
  if (root.state != Unit::UNIT_SHARDED) reshard(root);
  unshard(root);
}

// ---- full parameters and checkpoints ------------------------------------------------------------------

Fsdp::FullParams::FullParams(Fsdp& f, bool trainable_only) : f_(f) {
  ++f_.summoned_;
  for (Unit& u : f_.units_) {
    if (trainable_only && u.trainable == 0) continue;
    f_.reshard(u);  // gathered again in the shards' dtype
    f_.unshard(u);
  }
}

Fsdp::FullParams::~FullParams() {
  --f_.summoned_;
  try {
    for (Unit& u : f_.units_) f_.reshard(u);
    f_.unshard(f_.units_.back());
  } catch (const std::exception&) {
    // a failed collective here already failed the scope's own work; nothing left to report
  }
}

at::Tensor Fsdp::full_of(const std::string& name, const at::Tensor& shard) {
  const Param& p = param(name);
  const int64_t W = world_size(), N = p.C * p.E;
  at::Tensor in = at::zeros({N}, shard.options().device(device_));
  if (p.local_rows > 0) in.narrow(0, 0, p.local_rows * p.E).copy_(shard.reshape({-1}));
  at::Tensor out = at::empty({W * N}, in.options());
  ops_.all_gather(in, out, "FSDP state gather").wait();
  at::Tensor full = at::empty(p.shape, in.options());
  copy_rows_from_parts(full, out, W, N, 0, p.R, p.C, p.E);
  return full.cpu();
}

at::Tensor Fsdp::shard_of(const std::string& name, const at::Tensor& full) const {
  const Param& p = param(name);
  if (!full.sizes().equals(p.shape))
    throw std::runtime_error("FSDP: '" + name + "' has shape " + c10::str(full.sizes()) + ", the model's " +
                             c10::str(at::IntArrayRef(p.shape)));
  at::Tensor rows = p.shape.empty() ? full.reshape({1}) : full;
  return rows.narrow(0, std::min(rank() * p.C, p.R), p.local_rows).contiguous();
}

std::vector<std::pair<std::string, at::Tensor>> Fsdp::shard_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Param& p : params_) out.emplace_back(p.name, p.shard.detach());
  return out;
}

void Fsdp::load_shards(const std::map<std::string, at::Tensor>& shards, const std::string& source) {
  at::NoGradGuard no_grad;
  for (Param& p : params_) {
    auto it = shards.find(p.name);
    if (it == shards.end()) throw std::runtime_error(source + " has no shard of '" + p.name + "'");
    if (!it->second.sizes().equals(p.shard.sizes()))
      throw std::runtime_error(source + ": the shard of '" + p.name + "' has shape " + c10::str(it->second.sizes()) +
                               ", this rank's is " + c10::str(p.shard.sizes()));
    p.shard.copy_(it->second);
  }
  after_step();  // the root gathered from the loaded shards
}

// ---- SHARDED_STATE_DICT files ------------------------------------------------------------------

namespace {

std::string shard_folder(const std::string& dir) { return dir + "/pytorch_model_fsdp_0"; }

std::string shard_file(const std::string& dir, int rank, int world) {
  char name[64];
  snprintf(name, sizeof(name), "/rank-%05d-of-%05d.safetensors", rank, world);
  return shard_folder(dir) + name;
}

}  // namespace

void fsdp_save_shards(const Fsdp& f, const std::string& dir) {
  std::filesystem::create_directories(shard_folder(dir));
  std::vector<std::pair<std::string, at::Tensor>> shards = f.shard_tensors();
  std::vector<nn::TensorToWrite> out;
  std::vector<at::Tensor> keep;  // contiguous CPU copies alive until written
  for (auto& [name, t] : shards) {
    keep.push_back(t.cpu().contiguous());
    const at::Tensor& c = keep.back();
    out.push_back({name, nn::st_dtype_of(c.scalar_type()), c.sizes().vec(), c.data_ptr()});
  }
  nn::safetensors_write(shard_file(dir, f.rank(), f.world_size()), out,
                        {{"format", "pt"}, {"rank", std::to_string(f.rank())},
                         {"world_size", std::to_string(f.world_size())}});
  if (f.rank() != 0) return;
  std::string idx = "{\n  \"world_size\": " + std::to_string(f.world_size()) + ",\n  \"parameters\": {";
  bool first = true;
  for (const Fsdp::ParamInfo& p : f.params_info()) {
    std::string shape;
    for (int64_t d : p.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    const at::Tensor* shard = nullptr;
    for (auto& [name, t] : shards)
      if (name == p.name) shard = &t;
    idx += std::string(first ? "" : ",") + "\n    \"" + p.name + "\": {\"shape\": [" + shape + "], \"dtype\": \"" +
           nn::dtype_to_string(shard->scalar_type()) + "\", \"rows_per_rank\": " + std::to_string(f.chunk_rows(p.name)) +
           ", \"trainable\": " + (p.trainable ? "true" : "false") + "}";
    first = false;
  }
  idx += "\n  }\n}\n";
  nn::write_file_atomic(shard_folder(dir) + "/index.json", idx);
}

void fsdp_load_shards(Fsdp& f, const std::string& dir) {
  const std::string index = shard_folder(dir) + "/index.json";
  if (!std::filesystem::exists(index))
    throw std::runtime_error("checkpoint " + dir + " has no pytorch_model_fsdp_0/index.json (not saved with " +
                             "state_dict_type = SHARDED_STATE_DICT)");
  std::string text;
  {
    FILE* fp = fopen(index.c_str(), "rb");
    if (!fp) throw std::runtime_error("cannot read " + index);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) text.append(buf, n);
    fclose(fp);
  }
  rapidjson::Document doc;
  if (JsonParsed r = json_parse(doc, text); !r) throw std::runtime_error(index + ": " + r.reason());
  if (!doc.IsObject() || !doc.HasMember("world_size") || !doc["world_size"].IsInt())
    throw std::runtime_error(index + ": no integer field 'world_size'");
  const int saved = doc["world_size"].GetInt();
  if (saved != f.world_size())
    throw std::runtime_error("checkpoint " + dir + " was saved sharded over " + std::to_string(saved) +
                             " ranks; a SHARDED_STATE_DICT checkpoint resumes on the same number of ranks (this run has " +
                             std::to_string(f.world_size()) + ")");
  const std::string path = shard_file(dir, f.rank(), f.world_size());
  if (!std::filesystem::exists(path)) throw std::runtime_error("checkpoint " + dir + " has no " + path.substr(dir.size() + 1));
  auto file = nn::SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> shards;
  for (const auto& e : file->header().tensors) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(nn::scalar_type_of(e.dtype, path, e.name)));
    if (e.end > e.begin) file->read(e, t.data_ptr());
    shards[e.name] = t;
  }
  f.load_shards(shards, path);
}

}  // namespace sky::train

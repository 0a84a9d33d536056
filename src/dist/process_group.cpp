// Rendezvous and the default process group: rank 0 hosts the authenticated store (store.hpp) at
// MASTER_ADDR:MASTER_PORT, every rank proves the pool secret and announces itself there (so a
// timeout can name the ranks that never came), then a Gloo or NCCL backend is built over that
// store. No Lua here (see lua_dist.cpp).
#include "dist/dist.hpp"

#include "dist/net.hpp"
#include "dist/store.hpp"

// Gloo's own headers come from libgloo-dev on Debian (the pip wheels ship them in include/).
#if __has_include(<gloo/context.h>)
#define SKY_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#else
#define SKY_HAVE_GLOO 0
#endif

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#if SKY_HAVE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace sky::dist {

namespace {

std::mutex g_mutex;
std::shared_ptr<Group> g_default;

// Our own errors carry finished messages; anything else thrown inside gets wrapped with context.
struct DistError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Interrupted : DistError {
  using DistError::DistError;
};

[[noreturn]] void fail(const std::string& msg) { throw DistError("dist: " + msg); }

// c10::Error's what() carries a C++ backtrace; users get the message alone.
std::string message_of(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

std::string seconds_text(std::chrono::milliseconds ms) {
  char buf[32];
  double s = static_cast<double>(ms.count()) / 1000.0;
  snprintf(buf, sizeof(buf), s == static_cast<double>(static_cast<int64_t>(s)) ? "%.0f s" : "%.3g s", s);
  return buf;
}

int env_int(const char* name, int def, bool required, const char* what) {
  const char* v = getenv(name);
  if (!v || !*v) {
    if (required) fail(std::string("no ") + what + ": pass it or set " + name);
    return def;
  }
  char* end = nullptr;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < 0 || n > 1 << 24) fail(std::string(name) + "='" + v + "' is not a non-negative integer");
  return static_cast<int>(n);
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// c10d's view of the authenticated store: what the backends (Gloo, NCCL) keep their keys in.
// Rank 0's copy also owns the server, which stops with the last copy.
class AuthStore : public c10d::Store {
 public:
  AuthStore(std::shared_ptr<StoreClient> client, std::shared_ptr<StoreServer> server, std::chrono::milliseconds timeout)
      : c10d::Store(timeout), client_(std::move(client)), server_(std::move(server)) {}

  // LibTorch 2.x declares clone() in c10d::Store (a copy sharing the same store); 1.13 has none.
  // Deliberately not marked override so that one definition fits both.
  c10::intrusive_ptr<c10d::Store> clone() { return c10::make_intrusive<AuthStore>(client_, server_, timeout_); }

  void set(const std::string& key, const std::vector<uint8_t>& value) override { client_->set(key, value); }
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& current,
                                  const std::vector<uint8_t>& desired) override {
    return client_->compare_set(key, current, desired);
  }
  std::vector<uint8_t> get(const std::string& key) override { return client_->get(key, timeout_); }
  int64_t add(const std::string& key, int64_t value) override { return client_->add(key, value); }
  bool deleteKey(const std::string& key) override { return client_->remove(key); }
  bool check(const std::vector<std::string>& keys) override { return client_->check(keys); }
  int64_t getNumKeys() override { return client_->num_keys(); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    if (!client_->wait(keys, timeout)) {
      std::string names;
      for (const std::string& k : keys) names += (names.empty() ? "'" : ", '") + k + "'";
      throw DistError("dist: rendezvous store at " + client_->where() + ": keys " + names + " did not appear within " +
                      seconds_text(timeout));
    }
  }

 private:
  std::shared_ptr<StoreClient> client_;
  std::shared_ptr<StoreServer> server_;
};

std::string joined_key(int r) { return "skyrun/joined/" + std::to_string(r); }
std::string ready_key(int r) { return "skyrun/ready/" + std::to_string(r); }

// Waits until every rank has set key_of(rank); on timeout names the ranks whose key is missing.
// Polls with check() rather than a blocking wait: TCPStore's client drops its connection when a
// wait times out, and we still need it to ask which ranks are missing.
void wait_all_ranks(c10d::Store& store, int world_size, std::string (*key_of)(int), std::chrono::milliseconds timeout,
                    const std::string& what, const std::function<bool()>& cancelled) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<bool> seen(static_cast<size_t>(world_size), false);
  int n_seen = 0;
  auto pause = std::chrono::milliseconds(1);
  std::string store_error;
  while (true) {
    try {
      for (int r = 0; r < world_size; ++r) {
        if (!seen[r] && store.check({key_of(r)})) {
          seen[r] = true;
          ++n_seen;
        }
      }
    } catch (const std::exception& e) {
      store_error = message_of(e);  // rank 0 gave up (or died) and its store closed
      break;
    }
    if (n_seen == world_size) return;
    if (cancelled && cancelled()) throw Interrupted("dist: " + what);
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  std::string missing;
  int n_missing = 0;
  for (int r = 0; r < world_size; ++r)
    if (!seen[r]) missing += (n_missing++ ? ", " : "") + std::to_string(r);
  std::string ranks = "rank" + std::string(n_missing > 1 ? "s " : " ") + missing + " of world size " +
                      std::to_string(world_size) + " did not join";
  if (!store_error.empty())
    fail(what + " failed: " + ranks + " before rank 0's store closed (" + store_error + ")");
  fail(what + " timed out after " + seconds_text(timeout) + ": " + ranks);
}

c10::intrusive_ptr<Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, const InitOptions& o) {
#if !SKY_HAVE_GLOO
  fail("backend 'gloo' is not supported yet in this build: Gloo's headers were missing when skyrun was built "
       "(on Debian: apt-get install libgloo-dev, then rebuild)");
#else
  auto options = c10d::ProcessGroupGloo::Options::create(o.timeout);
  const char* ifname = getenv("GLOO_SOCKET_IFNAME");
  std::string where;
  try {
    if (ifname && *ifname) {
      where = std::string("interface ") + ifname + " (GLOO_SOCKET_IFNAME)";
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else {
      std::string addr;
      try {
        addr = local_address_towards(o.master_addr);
      } catch (const std::exception& e) {
        throw DistError(e.what());
      }
      where = "address " + addr + " (the route towards MASTER_ADDR " + o.master_addr + ")";
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(addr));
    }
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail("cannot open a Gloo device on " + where + ": " + message_of(e));
  }
  options->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, options);
#endif
}

#if SKY_HAVE_CUDA
c10::intrusive_ptr<Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, const InitOptions& o,
                                      at::Device& device) {
  int count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) fail("backend 'nccl' needs a CUDA device and none is visible on rank " + std::to_string(o.rank));
  int index = o.local_rank % count;
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
  device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = o.timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, options);
}
#endif

}  // namespace

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Product: return "product";
  }
  return "?";
}

std::string collective_describe(const CollectiveCall& c) {
  auto dtype = [&] {
    if (c.dtype < 0 || c.dtype >= static_cast<int64_t>(c10::ScalarType::NumOptions)) return std::string("?");
    return std::string(c10::toString(static_cast<c10::ScalarType>(c.dtype)));
  };
  std::string data;
  switch (c.form) {
    case CollectiveCall::kTensor: {
      data = "a " + dtype() + " tensor [";
      for (size_t i = 0; i < c.shape.size(); ++i) data += (i ? ", " : "") + std::to_string(c.shape[i]);
      data += "]";
      break;
    }
    case CollectiveCall::kNumber: data = "a number"; break;
    case CollectiveCall::kArray:
      data = "an array of " + std::to_string(c.numel) + (c.numel == 1 ? " number" : " numbers");
      break;
    case CollectiveCall::kValue: data = "a Lua value"; break;
    case CollectiveCall::kArrays:
      data = std::to_string(c.count) + " arrays of " + std::to_string(c.numel) + " numbers in all";
      break;
    case CollectiveCall::kTensors:
      data = std::to_string(c.count) + " " + dtype() + " tensors of " + std::to_string(c.numel) + " elements in all";
      break;
    default: break;
  }
  std::string op = c.op >= 0 && c.op <= static_cast<int64_t>(ReduceOp::Product)
                       ? reduce_op_name(static_cast<ReduceOp>(c.op)) : "?";
  switch (c.kind) {
    case CollectiveCall::kBarrier: return "barrier";
    case CollectiveCall::kAllReduce: return "all_reduce(" + op + ") of " + data;
    case CollectiveCall::kBroadcast: return "broadcast from rank " + std::to_string(c.src) + " of " + data;
    case CollectiveCall::kAllReduceMean: return "all_reduce_mean of " + data;
    case CollectiveCall::kBroadcastTensors: return "broadcast from rank " + std::to_string(c.src) + " of " + data;
  }
  return "a collective of unknown kind " + std::to_string(c.kind);
}

ReduceOp reduce_op_from_name(const std::string& name) {
  static const std::map<std::string, ReduceOp> ops = {{"sum", ReduceOp::Sum}, {"max", ReduceOp::Max},
                                                       {"min", ReduceOp::Min}, {"avg", ReduceOp::Avg},
                                                       {"product", ReduceOp::Product}};
  auto it = ops.find(name);
  if (it == ops.end()) fail("unknown reduce op '" + name + "' (expected sum, max, min, avg or product)");
  return it->second;
}

InitOptions init_options_resolve(InitOptions o) {
  if (o.rank < 0) o.rank = env_int("RANK", -1, true, "rank");
  if (o.world_size < 0) o.world_size = env_int("WORLD_SIZE", -1, true, "world size");
  if (o.local_rank < 0) o.local_rank = env_int("LOCAL_RANK", 0, false, "local rank");
  if (o.master_addr.empty()) {
    const char* v = getenv("MASTER_ADDR");
    if (!v || !*v) fail("no master address: pass master_addr or set MASTER_ADDR (the host of rank 0)");
    o.master_addr = v;
  }
  if (o.master_port < 0) o.master_port = env_int("MASTER_PORT", -1, true, "master port");
  if (o.world_size < 1) fail("world size must be at least 1 (got " + std::to_string(o.world_size) + ")");
  if (o.rank >= o.world_size)
    fail("rank " + std::to_string(o.rank) + " is not below world size " + std::to_string(o.world_size));
  if (o.master_port < 1 || o.master_port > 65535)
    fail("master port " + std::to_string(o.master_port) + " is not a TCP port (1-65535)");
  if (o.timeout.count() <= 0) fail("timeout must be positive");
  if (o.secret.empty()) {
    const char* v = getenv("SKYRUN_DIST_SECRET");
    o.secret = v ? v : "";
  }
  // One rank alone: nobody else needs to know its secret.
  if (o.secret.empty() && o.world_size == 1) o.secret = store_new_secret();
  if (o.secret.size() < kStoreMinSecret)
    fail("no pool secret for the rendezvous store: set SKYRUN_DIST_SECRET to the same random value (at least " +
         std::to_string(kStoreMinSecret) + " characters) on every rank, or pass secret= (the torch plugin does this "
         "for a pool)");
  if (o.backend.empty()) o.backend = SKY_HAVE_CUDA && torch::cuda::is_available() ? "nccl" : "gloo";
  if (o.backend != "gloo" && o.backend != "nccl")
    fail("unknown backend '" + o.backend + "' (expected 'gloo' or 'nccl')");
  return o;
}

std::shared_ptr<Group> init_process_group(const InitOptions& in) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_default)
    fail("a process group exists already (rank " + std::to_string(g_default->rank()) + " of " +
         std::to_string(g_default->world_size()) + "); destroy it first");
  InitOptions o = init_options_resolve(in);
#if !SKY_HAVE_CUDA
  if (o.backend == "nccl") fail("backend 'nccl' is not available: this skyrun's LibTorch was built without CUDA; use 'gloo'");
#endif
  std::string master = o.master_addr + ":" + std::to_string(o.master_port);
  std::string who = "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size);

  std::shared_ptr<StoreServer> server;
  if (o.rank == 0) {
    try {
      server = std::make_shared<StoreServer>(o.master_addr, o.master_port, o.secret);
    } catch (const std::exception& e) {
      fail("rank 0 cannot host the rendezvous store at " + master + " (MASTER_ADDR:MASTER_PORT): " + message_of(e));
    }
  }
  std::shared_ptr<StoreClient> client;
  try {
    client = std::make_shared<StoreClient>(o.master_addr, o.master_port, o.secret, o.timeout, o.cancelled);
  } catch (const StoreUnreachable& e) {
    fail(who + " cannot reach the rendezvous store at " + master + " (MASTER_ADDR:MASTER_PORT) within " +
         seconds_text(o.timeout) + ": is rank 0 running there and the port reachable? (" + e.what() + ")");
  } catch (const std::exception& e) {
    fail(who + " cannot join the rendezvous store at " + master + " (MASTER_ADDR:MASTER_PORT): " + message_of(e));
  }
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<AuthStore>(client, server, o.timeout);

  try {
    if (o.rank == 0) store->set("skyrun/world_size", bytes_of(std::to_string(o.world_size)));
    if (store->add(joined_key(o.rank), 1) > 1)
      fail("rank " + std::to_string(o.rank) + " joined the rendezvous at " + master +
           " twice: two processes were given the same RANK, or a replaced worker tried to rejoin a running group "
           "(not supported yet: restart the pool)");
    wait_all_ranks(*store, 1, [](int) { return std::string("skyrun/world_size"); }, o.timeout,
                   "rendezvous at " + master + " (waiting for rank 0's world size)", o.cancelled);
    auto ws = store->get("skyrun/world_size");
    std::string ws0(ws.begin(), ws.end());
    if (ws0 != std::to_string(o.world_size))
      fail(who + " was started with WORLD_SIZE " + std::to_string(o.world_size) + " but rank 0 with " + ws0);
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail("rendezvous at " + master + " failed on " + who + ": " + message_of(e));
  }
  wait_all_ranks(*store, o.world_size, joined_key, o.timeout, "rendezvous at " + master, o.cancelled);

  at::Device device(at::kCPU);
  c10::intrusive_ptr<Backend> backend;
  try {
    if (o.backend == "gloo") {
      backend = make_gloo(store, o);
    } else {
#if SKY_HAVE_CUDA
      backend = make_nccl(store, o, device);
#endif
    }
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail("creating the " + o.backend + " group on " + who + " (store " + master + ") failed: " + message_of(e));
  }
  // Every rank has built its backend (Gloo: connected its pairs) before any rank moves on, so
  // rank 0 never drops the store while a peer still reads it.
  store->set(ready_key(o.rank), bytes_of("1"));
  wait_all_ranks(*store, o.world_size, ready_key, o.timeout, o.backend + " group setup at " + master, o.cancelled);

  g_default = std::make_shared<Group>(store, backend, o.backend, o.rank, o.world_size, device, master, o.timeout);
  return g_default;
}

std::shared_ptr<Group> default_group() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_default;
}

void destroy_process_group() {
  std::shared_ptr<Group> g;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g.swap(g_default);
  }
  // g's destructor runs here, outside the lock.
}

// ---- Group ------------------------------------------------------------------------------------

Group::Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Backend> backend, std::string backend_name,
             int rank, int world_size, at::Device device, std::string master, std::chrono::milliseconds timeout)
    : store_(std::move(store)),
      backend_(std::move(backend)),
      backend_name_(std::move(backend_name)),
      rank_(rank),
      world_size_(world_size),
      device_(device),
      master_(std::move(master)),
      timeout_(timeout) {}

Group::~Group() {
#if SKY_HAVE_CUDA && SKY_TORCH_AT_LEAST(2, 3)
  if (auto* nccl = dynamic_cast<c10d::ProcessGroupNCCL*>(backend_.get())) {
    try {
      nccl->shutdown();
    } catch (const std::exception&) {
    }
  }
#endif
  backend_.reset();
  store_.reset();
}

void Group::run(const char* what, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail(std::string(what) + " failed on rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) +
         " (" + backend_name_ + ", store " + master_ + "): " + message_of(e));
  }
}

static c10d::ReduceOp c10d_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Max: return c10d::ReduceOp::MAX;
    case ReduceOp::Min: return c10d::ReduceOp::MIN;
    case ReduceOp::Product: return c10d::ReduceOp::PRODUCT;
    case ReduceOp::Sum:
    case ReduceOp::Avg: return c10d::ReduceOp::SUM;
  }
  return c10d::ReduceOp::SUM;
}

// The agreement: each rank's call as a fixed row of int64 (the same size on every rank, whatever
// the call), all-gathered; every rank compares every row with its own.
namespace {
constexpr int64_t kCallMagic = 0x736b7963;  // "skyc": a row from this code, not stray data
constexpr size_t kMaxDims = 8;
constexpr size_t kRow = 10 + kMaxDims;  // magic, seq, kind, op, src, form, dtype, numel, count, ndim, dims

std::vector<int64_t> call_row(const CollectiveCall& c, int64_t seq) {
  std::vector<int64_t> row{kCallMagic, seq, c.kind, c.op, c.src, c.form, c.dtype, c.numel, c.count,
                           static_cast<int64_t>(c.shape.size())};
  for (size_t i = 0; i < kMaxDims; ++i) row.push_back(i < c.shape.size() ? c.shape[i] : -1);
  // more dims than the row holds: their product folds into the last one
  for (size_t i = kMaxDims; i < c.shape.size(); ++i) row.back() *= c.shape[i];
  return row;
}

CollectiveCall call_of_row(const int64_t* r) {
  CollectiveCall c;
  c.kind = r[2], c.op = r[3], c.src = r[4], c.form = r[5], c.dtype = r[6], c.numel = r[7], c.count = r[8];
  for (int64_t i = 0; i < r[9] && i < static_cast<int64_t>(kMaxDims); ++i) c.shape.push_back(r[10 + i]);
  return c;
}
}  // namespace

void Group::agree(const CollectiveCall& call, const char* fname) {
  int64_t seq = ++calls_;
  if (world_size_ == 1) return;
  std::vector<int64_t> mine = call_row(call, seq);
  at::Tensor row = torch::tensor(mine, torch::kInt64).to(device_);  // [kRow]
  std::vector<at::Tensor> input{row};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < world_size_; ++r) output[0].push_back(torch::empty({static_cast<int64_t>(kRow)}, row.options()));
  run(fname, [&] {
    c10d::AllgatherOptions ao;
    ao.timeout = timeout_;
    backend_->allgather(output, input, ao)->wait();
  });
  bool same = true;
  std::vector<at::Tensor> rows;
  for (int r = 0; r < world_size_; ++r) {
    rows.push_back(output[0][static_cast<size_t>(r)].to(at::kCPU).contiguous());
    const int64_t* p = rows.back().data_ptr<int64_t>();
    if (!std::equal(mine.begin(), mine.end(), p)) same = false;
  }
  if (same) return;
  std::string msg = std::string("dist.") + fname + ": the ranks are not in the same collective:";
  for (int r = 0; r < world_size_; ++r) {
    if (r == 8 && world_size_ > 9) {
      msg += " ... (" + std::to_string(world_size_ - 9) + " more); rank " + std::to_string(world_size_ - 1);
      r = world_size_ - 1;
    } else {
      msg += std::string(r ? ";" : "") + " rank " + std::to_string(r);
    }
    const int64_t* p = rows[static_cast<size_t>(r)].data_ptr<int64_t>();
    if (p[0] != kCallMagic) {
      msg += ": not in a skyrun collective";
      continue;
    }
    msg += " (call #" + std::to_string(p[1]) + "): " + collective_describe(call_of_row(p));
  }
  msg += " (this is rank " + std::to_string(rank_) + ")";
  throw DistError(msg);
}

static CollectiveCall tensor_call(CollectiveCall::Kind kind, const at::Tensor& t, CollectiveCall::Form form) {
  CollectiveCall c;
  c.kind = kind;
  c.form = form;
  c.dtype = static_cast<int64_t>(t.scalar_type());
  c.numel = t.numel();
  if (form == CollectiveCall::kTensor) c.shape = t.sizes().vec();
  return c;
}

static CollectiveCall list_call(CollectiveCall::Kind kind, const std::vector<at::Tensor>& ts, CollectiveCall::Form form) {
  CollectiveCall c;
  c.kind = kind;
  c.form = form;
  c.count = 0;
  c.numel = 0;
  for (const at::Tensor& t : ts) {
    if (!t.defined()) continue;
    if (c.dtype < 0) c.dtype = static_cast<int64_t>(t.scalar_type());
    ++c.count;
    c.numel += t.numel();
  }
  return c;
}

void Group::all_reduce(at::Tensor& t, ReduceOp op, CollectiveCall::Form form) {
  if (op == ReduceOp::Avg && !t.is_floating_point())
    fail("all_reduce with op 'avg' needs a floating-point tensor (got " + std::string(c10::toString(t.scalar_type())) + ")");
  CollectiveCall call = tensor_call(CollectiveCall::kAllReduce, t, form);
  call.op = static_cast<int64_t>(op);
  agree(call, "all_reduce");
  all_reduce_unchecked(t, op);
}

void Group::all_reduce_unchecked(at::Tensor& t, ReduceOp op) {
  bool direct = t.device() == device_ && t.is_contiguous();
  std::vector<at::Tensor> ts{direct ? t : t.to(device_).contiguous()};
  run("all_reduce", [&] {
    c10d::AllreduceOptions ao;
    ao.reduceOp = c10d_op(op);
    ao.timeout = timeout_;
    backend_->allreduce(ts, ao)->wait();
  });
  if (op == ReduceOp::Avg) ts[0].div_(world_size_);
  if (!direct) t.copy_(ts[0]);
}

void Group::broadcast(at::Tensor& t, int src) {
  if (src < 0 || src >= world_size_)
    fail("broadcast source rank " + std::to_string(src) + " is not in 0.." + std::to_string(world_size_ - 1));
  CollectiveCall call = tensor_call(CollectiveCall::kBroadcast, t, CollectiveCall::kTensor);
  call.src = src;
  agree(call, "broadcast");
  broadcast_unchecked(t, src);
}

void Group::broadcast_unchecked(at::Tensor& t, int src) {
  if (src < 0 || src >= world_size_)
    fail("broadcast source rank " + std::to_string(src) + " is not in 0.." + std::to_string(world_size_ - 1));
  bool direct = t.device() == device_ && t.is_contiguous();
  std::vector<at::Tensor> ts{direct ? t : t.to(device_).contiguous()};
  run("broadcast", [&] {
    c10d::BroadcastOptions bo;
    bo.rootRank = src;
    bo.timeout = timeout_;
    backend_->broadcast(ts, bo)->wait();
  });
  if (!direct) t.copy_(ts[0]);
}

void Group::barrier() {
  agree(CollectiveCall{}, "barrier");
  // An all_reduce of one element: the same on every backend (NCCL's barrier guesses a device).
  at::Tensor one = torch::ones({1}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  std::vector<at::Tensor> ts{one};
  run("barrier", [&] {
    c10d::AllreduceOptions ao;
    ao.timeout = timeout_;
    backend_->allreduce(ts, ao)->wait();
  });
}

// Runs `collective` on flat buckets of `tensors`: runs of defined tensors sharing dtype and
// device, each at most bucket_bytes (a larger tensor gets a bucket of its own), then copies the
// results back into the tensors.
static void for_each_bucket(std::vector<at::Tensor>& tensors, size_t bucket_bytes, at::Device device,
                            const std::function<void(at::Tensor&)>& collective) {
  size_t i = 0;
  while (i < tensors.size()) {
    if (!tensors[i].defined()) {
      ++i;
      continue;
    }
    std::vector<size_t> members{i};
    size_t bytes = static_cast<size_t>(tensors[i].numel()) * tensors[i].element_size();
    size_t j = i + 1;
    for (; j < tensors.size(); ++j) {
      const at::Tensor& t = tensors[j];
      if (!t.defined()) continue;
      size_t b = static_cast<size_t>(t.numel()) * t.element_size();
      if (t.scalar_type() != tensors[i].scalar_type() || t.device() != tensors[i].device() || bytes + b > bucket_bytes)
        break;
      members.push_back(j);
      bytes += b;
    }
    std::vector<at::Tensor> parts;
    for (size_t m : members) parts.push_back(tensors[m].detach().reshape({-1}));
    at::Tensor flat = torch::cat(parts).to(device);  // [sum of numel]
    collective(flat);
    int64_t off = 0;
    for (size_t m : members) {
      int64_t n = tensors[m].numel();
      torch::NoGradGuard no_grad;
      tensors[m].copy_(flat.narrow(0, off, n).view_as(tensors[m]));
      off += n;
    }
    i = j;
  }
}

void Group::all_reduce_mean(std::vector<at::Tensor>& tensors, size_t bucket_bytes, CollectiveCall::Form form) {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].defined() && !tensors[i].is_floating_point())
      fail("gradient sync needs floating-point tensors (tensor " + std::to_string(i + 1) + " is " +
           std::string(c10::toString(tensors[i].scalar_type())) + ")");
  agree(list_call(CollectiveCall::kAllReduceMean, tensors, form), "all_reduce_mean");
  for_each_bucket(tensors, bucket_bytes, device_, [&](at::Tensor& flat) { all_reduce_unchecked(flat, ReduceOp::Avg); });
}

void Group::broadcast_tensors(std::vector<at::Tensor>& tensors, int src, size_t bucket_bytes) {
  if (src < 0 || src >= world_size_)
    fail("broadcast source rank " + std::to_string(src) + " is not in 0.." + std::to_string(world_size_ - 1));
  CollectiveCall call = list_call(CollectiveCall::kBroadcastTensors, tensors, CollectiveCall::kTensors);
  call.src = src;
  agree(call, "broadcast_tensors");
  for_each_bucket(tensors, bucket_bytes, device_, [&](at::Tensor& flat) { broadcast_unchecked(flat, src); });
}

void sync_parameters(const std::vector<at::Tensor>& parameters, int src) {
  auto g = default_group();
  if (!g || g->world_size() == 1) return;
  std::vector<at::Tensor> ts(parameters.begin(), parameters.end());
  g->broadcast_tensors(ts, src);
}

void sync_gradients(const std::vector<at::Tensor>& parameters) {
  auto g = default_group();
  if (!g || g->world_size() == 1) return;
  std::vector<at::Tensor> grads;
  for (at::Tensor p : parameters) {
    if (!p.defined() || !p.requires_grad()) continue;
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  g->all_reduce_mean(grads);
}

}  // namespace sky::dist

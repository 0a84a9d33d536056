// Loader: dataset columns -> collated batches on a worker thread (loader.hpp).
#include "train/loader.hpp"

#include <cmath>
#include <stdexcept>

namespace sky::train {

using data::Column;
using data::DType;

namespace {

bool numeric(DType t) { return t == DType::Int64 || t == DType::Float64 || t == DType::Bool; }

double value_at(const Column& c, int64_t i) {
  switch (c.type) {
    case DType::Int64: return static_cast<double>(c.values.as<int64_t>()[i]);
    case DType::Float64: return c.values.as<double>()[i];
    default: return c.values.data[i] ? 1.0 : 0.0;  // Bool
  }
}

}  // namespace

Loader::Loader(data::DatasetPtr ds, CollateSpec spec) : ds_(std::move(ds)), spec_(std::move(spec)) {
  const data::Table& t = *ds_->table;
  for (size_t i = 0; i < t.columns.size(); ++i) {
    const std::string name = collate_column_name(t.names[i], spec_);
    const Column& c = *t.columns[i];
    if (name.empty() || c.type == DType::String || c.type == DType::Null) continue;  // text: not a model input
    if (c.type == DType::List && !(c.child && numeric(c.child->type)))
      throw std::runtime_error(spec_.where + ": column '" + t.names[i] + "' is " + c.type_string() +
                               " (numbers or lists of numbers expected)");
    sources_.push_back({name, t.columns[i]});
  }
}

Loader::~Loader() { stop(); }

Batch Loader::collate(const std::vector<int64_t>& rows) const {
  const int64_t n = static_cast<int64_t>(rows.size());
  std::map<std::string, GatheredColumn> cols;
  for (const Source& s : sources_) {
    const Column& c = *s.column;
    GatheredColumn& g = cols[s.name];
    g.sequence = c.type == DType::List;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t pos = rows[r];
      if (pos < 0 || pos >= ds_->size())
        throw std::runtime_error(spec_.where + ": row " + std::to_string(pos + 1) + " is outside the dataset (" +
                                 std::to_string(ds_->size()) + " rows)");
      const int64_t row = ds_->row(pos);
      if (!c.is_valid(row))
        throw std::runtime_error(spec_.where + ": column '" + s.name + "' is missing (null) in row " + std::to_string(pos + 1));
      if (!g.sequence) {
        const double v = value_at(c, row);
        if (v != std::floor(v)) g.floating = true;
        g.values.push_back(v);
        continue;
      }
      const Column& child = *c.child;
      for (int64_t j = c.offset(row), end = c.offset(row + 1); j < end; ++j) {
        if (!child.is_valid(j))
          throw std::runtime_error(spec_.where + ": column '" + s.name + "' row " + std::to_string(pos + 1) + " item " +
                                   std::to_string(j - c.offset(row) + 1) + " is null, not a number");
        const double v = value_at(child, j);
        if (v != std::floor(v)) g.floating = true;
        g.values.push_back(v);
      }
      g.starts.push_back(static_cast<int64_t>(g.values.size()));
    }
  }
  return collate_gathered(cols, n, spec_);
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    ++generation_;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = false;
  ready_.clear();
  error_ = nullptr;
}

void Loader::start(std::vector<std::vector<int64_t>> plan, size_t ahead) {
  stop();
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    plan_ = std::move(plan);
    ahead_ = std::max<size_t>(ahead, 1);
    taken_ = 0;
    gen = generation_;
  }
  worker_ = std::thread([this, gen] { work(gen); });
}

void Loader::work(uint64_t generation) {
  for (size_t i = 0; i < plan_.size(); ++i) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || generation_ != generation || ready_.size() < ahead_; });
      if (stopping_ || generation_ != generation) return;
    }
    Batch b;
    try {
      b = collate(plan_[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || generation_ != generation) return;
      ready_.push_back(std::move(b));
    }
    cv_.notify_all();
  }
}

Batch Loader::next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (taken_ >= plan_.size())
    throw std::runtime_error(spec_.where + ": the loader's plan has no batch left (" + std::to_string(plan_.size()) + " given)");
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty() && error_) std::rethrow_exception(error_);
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  ++taken_;
  lock.unlock();
  cv_.notify_all();
  return b;
}

}  // namespace sky::train

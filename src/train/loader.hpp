// The native data path of the Trainer: batches built straight from a dataset's memory-mapped
// columns (src/data) with a built-in collator's rules (collate.hpp), in page-locked memory when
// training on CUDA (so the engine's copies are non-blocking), prepared on a worker thread a few
// batches ahead of the step that trains. The Lua loop keeps the policy: it gives each epoch's plan
// (the rows of every micro-batch of this rank, in order) and takes the batches as it goes.
// User collators written in Lua take the slower path (rows as Lua tables, lua_train.cpp).
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "data/lua_data.hpp"
#include "train/collate.hpp"

namespace sky::train {

class Loader {
 public:
  // Checks the columns once: numbers and lists of numbers become model inputs, strings are left
  // out; anything else is an error naming the column.
  Loader(data::DatasetPtr ds, CollateSpec spec);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t size() const { return ds_->size(); }
  // The batch of these dataset rows (0-based positions in the dataset), built on this thread.
  Batch collate(const std::vector<int64_t>& rows) const;
  // A new plan (micro-batches of rows, in order), replacing what was left of the last; the worker
  // keeps at most `ahead` batches ready.
  void start(std::vector<std::vector<int64_t>> plan, size_t ahead = 3);
  // The next batch of the plan (waits for it); rethrows the worker's error; throws past the end.
  Batch next();

 private:
  struct Source {
    std::string name;  // the model input it becomes
    data::ColumnPtr column;
  };
  void stop();
  void work(uint64_t generation);
  data::DatasetPtr ds_;
  CollateSpec spec_;
  std::vector<Source> sources_;
  std::vector<std::vector<int64_t>> plan_;
  size_t ahead_ = 3, taken_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace sky::train

// A tqdm-like download progress bar on stderr ("config.json: 42%|████▏     | 4.19M/10.0M [00:01<00:01,
// 3.91MB/s]"), drawn only when stderr is a terminal. Thread-safe: parallel downloads share one bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace sky::hub {

// One rendered line, `width` columns at most. total <= 0: the size is unknown.
std::string progress_render(std::string_view label, int64_t done, int64_t total, double elapsed_s, double rate,
                            int width);

// "4.19M": 3 significant digits with k/M/G/T suffixes (powers of 1000), as tqdm's unit_scale.
std::string progress_format_size(double n);

class ProgressBar {
 public:
  // enabled: the caller's wish (settings); the bar still stays quiet when stderr is no terminal.
  ProgressBar(std::string label, int64_t total, int64_t initial, bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void add_total(int64_t n);
  void update(int64_t delta);  // delta may be negative (a restarted download)
  void finish();               // draws the last state and ends the line; idempotent

 private:
  void draw_locked(bool force);

  std::mutex mu_;
  std::string label_;
  int64_t total_, done_, initial_;
  bool enabled_, finished_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  size_t last_len_ = 0;
};

}  // namespace sky::hub

// The progress bar. Drawing throttles to 10 lines a second; each line overwrites the last with '\r'.
#include "hub/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace sky::hub {

namespace {

std::string format_time(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

int terminal_width() {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  return 80;
}

// Number of UTF-8 code points (the bar's blocks are 3 bytes each but one column).
size_t columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace

std::string progress_format_size(double n) {
  static const char* units[] = {"", "k", "M", "G", "T", "P", "E"};
  char buf[32];
  for (const char* u : units) {
    if (std::fabs(n) < 999.5) {
      if (std::fabs(n) < 99.95) {
        if (std::fabs(n) < 9.995) snprintf(buf, sizeof buf, "%1.2f%s", n, u);
        else snprintf(buf, sizeof buf, "%2.1f%s", n, u);
      } else {
        snprintf(buf, sizeof buf, "%3.0f%s", n, u);
      }
      return buf;
    }
    n /= 1000;
  }
  snprintf(buf, sizeof buf, "%3.1fZ", n);
  return buf;
}

std::string progress_render(std::string_view label, int64_t done, int64_t total, double elapsed_s, double rate,
                            int width) {
  std::string rate_s = rate > 0 ? progress_format_size(rate) + "B/s" : "?B/s";
  std::string head(label);
  head += ": ";
  if (total <= 0) {
    return head + progress_format_size(static_cast<double>(done)) + "B [" + format_time(elapsed_s) + ", " + rate_s + "]";
  }
  double frac = std::min(1.0, std::max(0.0, static_cast<double>(done) / static_cast<double>(total)));
  char pct[8];
  snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100));
  double eta = rate > 0 ? static_cast<double>(total - done) / rate : NAN;
  std::string tail = "| " + progress_format_size(static_cast<double>(done)) + "/" +
                     progress_format_size(static_cast<double>(total)) + " [" + format_time(elapsed_s) + "<" +
                     format_time(eta) + ", " + rate_s + "]";
  int bar_w = width - static_cast<int>(columns(head) + 5 + columns(tail));
  if (bar_w < 1) return head + pct + tail;
  bar_w = std::min(bar_w, 40);
  static const char* partial[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  double cells = frac * bar_w;
  int full = static_cast<int>(cells);
  std::string bar;
  for (int i = 0; i < full; ++i) bar += "█";
  int used = full;
  if (full < bar_w) {
    int eighth = static_cast<int>((cells - full) * 8);
    if (eighth > 0) {
      bar += partial[eighth];
      ++used;
    }
  }
  bar.append(static_cast<size_t>(bar_w - used), ' ');
  return head + pct + "|" + bar + tail;
}

ProgressBar::ProgressBar(std::string label, int64_t total, int64_t initial, bool enabled)
    : label_(std::move(label)),
      total_(total),
      done_(initial),
      initial_(initial),
      enabled_(enabled && isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {
  if (label_.size() > 40) label_ = "(…)" + label_.substr(label_.size() - 40);
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::add_total(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  total_ += n;
}

void ProgressBar::update(int64_t delta) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += delta;
  if (delta < 0) initial_ = std::min(initial_, done_);
  draw_locked(false);
}

void ProgressBar::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (!enabled_ || (!drawn_ && done_ == initial_)) return;  // nothing moved: no line at all
  draw_locked(true);
  if (drawn_) fputc('\n', stderr);
  fflush(stderr);
}

void ProgressBar::draw_locked(bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(done_ - initial_) / elapsed : 0;
  std::string line = progress_render(label_, done_, total_, elapsed, rate, terminal_width() - 1);
  size_t len = columns(line);
  if (len < last_len_) line.append(last_len_ - len, ' ');
  last_len_ = len;
  fprintf(stderr, "\r%s", line.c_str());
  fflush(stderr);
}

}  // namespace sky::hub

// HF's schedule lambdas (transformers/optimization.py), in double precision as Python computes them.
#include "train/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace sky::train {

ScheduleKind schedule_kind_from_name(const std::string& name) {
  if (name == "linear") return ScheduleKind::SCHEDULE_LINEAR;
  if (name == "cosine") return ScheduleKind::SCHEDULE_COSINE;
  if (name == "constant") return ScheduleKind::SCHEDULE_CONSTANT;
  if (name == "constant_with_warmup") return ScheduleKind::SCHEDULE_CONSTANT_WITH_WARMUP;
  if (name == "cosine_with_min_lr") return ScheduleKind::SCHEDULE_COSINE_WITH_MIN_LR;
  throw std::invalid_argument("'" + name + "' is not a valid SchedulerType");
}

double schedule_factor(const Schedule& s, int64_t step) {
  const double cur = static_cast<double>(step);
  if (s.kind == ScheduleKind::SCHEDULE_CONSTANT) return 1.0;  // get_constant_schedule ignores warmup
  if (step < s.warmup_steps) return cur / static_cast<double>(std::max<int64_t>(1, s.warmup_steps));
  switch (s.kind) {
    case ScheduleKind::SCHEDULE_CONSTANT_WITH_WARMUP:
      return 1.0;
    case ScheduleKind::SCHEDULE_LINEAR:
      return std::max(0.0, static_cast<double>(s.total_steps - step) /
                               static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps)));
    case ScheduleKind::SCHEDULE_COSINE:
    case ScheduleKind::SCHEDULE_COSINE_WITH_MIN_LR: {
      double progress = static_cast<double>(step - s.warmup_steps) /
                        static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
      double factor = 0.5 * (1.0 + std::cos(M_PI * s.num_cycles * 2.0 * progress));
      if (s.kind == ScheduleKind::SCHEDULE_COSINE) return std::max(0.0, factor);
      factor = factor * (1.0 - s.min_lr_rate) + s.min_lr_rate;
      return std::max(0.0, factor);
    }
    case ScheduleKind::SCHEDULE_CONSTANT:
      break;
  }
  return 1.0;
}

}  // namespace sky::train

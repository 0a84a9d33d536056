// Learning-rate schedules as HuggingFace's get_scheduler builds them: a LambdaLR factor that
// multiplies each group's initial lr. Step k of training uses factor(k - 1), so with warmup the
// first step runs at lr 0, as in HF. Pure arithmetic: no LibTorch, no Lua.
#pragma once

#include <cstdint>
#include <string>

namespace sky::train {

enum class ScheduleKind {
  SCHEDULE_LINEAR,
  SCHEDULE_COSINE,
  SCHEDULE_CONSTANT,
  SCHEDULE_CONSTANT_WITH_WARMUP,
  SCHEDULE_COSINE_WITH_MIN_LR,
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::SCHEDULE_LINEAR;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  double num_cycles = 0.5;    // cosine kinds
  double min_lr_rate = 0.0;   // cosine_with_min_lr: min_lr / initial lr
};

// Parses HF's lr_scheduler_type name; throws sky::Error-like std::invalid_argument when unknown.
ScheduleKind schedule_kind_from_name(const std::string& name);

// The LambdaLR factor after `step` scheduler steps (HF's lr_lambda(current_step)).
double schedule_factor(const Schedule& s, int64_t step);

}  // namespace sky::train

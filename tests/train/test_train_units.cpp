// The Trainer's pure pieces: HF's lr schedule lambdas and TensorBoard's record framing.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "train/schedule.hpp"
#include "train/tfevents.hpp"

using namespace sky::train;

TEST_CASE("linear warmup then decay gives HF's learning rates (fixture: 12 steps, warmup 2, lr 1e-3)") {
  Schedule s{ScheduleKind::SCHEDULE_LINEAR, 2, 12};
  // lr used by optimizer step k is factor(k - 1): HF logs 0, 5e-4, 1e-3, 9e-4, ... 1e-4
  const double expect[12] = {0.0, 0.0005, 0.001, 0.0009, 0.0008, 0.0007, 0.0006, 0.0005, 0.0004, 0.0003, 0.0002, 0.0001};
  for (int k = 1; k <= 12; ++k) CHECK(1e-3 * schedule_factor(s, k - 1) == doctest::Approx(expect[k - 1]).epsilon(1e-12));
  CHECK(schedule_factor(s, 12) == 0.0);
  CHECK(schedule_factor(s, 20) == 0.0);
}

TEST_CASE("constant ignores warmup; constant_with_warmup ramps then holds") {
  CHECK(schedule_factor({ScheduleKind::SCHEDULE_CONSTANT, 5, 10}, 0) == 1.0);
  Schedule w{ScheduleKind::SCHEDULE_CONSTANT_WITH_WARMUP, 4, 10};
  CHECK(schedule_factor(w, 1) == 0.25);
  CHECK(schedule_factor(w, 4) == 1.0);
  CHECK(schedule_factor(w, 9) == 1.0);
}

TEST_CASE("cosine follows half a cosine after warmup and cosine_with_min_lr stops at the floor") {
  Schedule c{ScheduleKind::SCHEDULE_COSINE, 2, 12};
  CHECK(schedule_factor(c, 1) == 0.5);
  CHECK(schedule_factor(c, 2) == doctest::Approx(1.0));
  CHECK(schedule_factor(c, 7) == doctest::Approx(0.5));
  CHECK(schedule_factor(c, 12) == doctest::Approx(0.0));
  Schedule m{ScheduleKind::SCHEDULE_COSINE_WITH_MIN_LR, 0, 10, 0.5, 0.1};
  CHECK(schedule_factor(m, 0) == doctest::Approx(1.0));
  CHECK(schedule_factor(m, 5) == doctest::Approx(0.55));
  CHECK(schedule_factor(m, 10) == doctest::Approx(0.1));
  CHECK_THROWS(schedule_kind_from_name("cosin"));
}

TEST_CASE("crc32c matches the Castagnoli check value") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  CHECK(crc32c("", 0) == 0u);
  uint32_t c = crc32c("123456789", 9);
  CHECK(crc32c_masked("123456789", 9) == ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST_CASE("a TFRecord is length, its masked crc, the payload and the payload's masked crc") {
  std::string rec = tfrecord_frame("abc");
  REQUIRE(rec.size() == 8 + 4 + 3 + 4);
  uint64_t len;
  memcpy(&len, rec.data(), 8);
  CHECK(len == 3);
  uint32_t lc, dc;
  memcpy(&lc, rec.data() + 8, 4);
  memcpy(&dc, rec.data() + 15, 4);
  CHECK(lc == crc32c_masked(rec.data(), 8));
  CHECK(dc == crc32c_masked("abc", 3));
}

TEST_CASE("a scalar Event encodes wall_time, step and Summary.Value{tag, simple_value}") {
  std::string ev = tfevent_scalar(1.5, 300, "train/loss", 2.0f);
  // 0x09 <8 bytes double> 0x10 <varint 300 = ac 02> 0x2a <len> [0x0a <len> [0x0a 10 "train/loss" 0x15 <float>]]
  REQUIRE(ev.size() == 1 + 8 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 10 + 1 + 4);
  CHECK(static_cast<unsigned char>(ev[0]) == 0x09);
  double wt;
  memcpy(&wt, ev.data() + 1, 8);
  CHECK(wt == 1.5);
  CHECK(static_cast<unsigned char>(ev[9]) == 0x10);
  CHECK(static_cast<unsigned char>(ev[10]) == 0xac);
  CHECK(static_cast<unsigned char>(ev[11]) == 0x02);
  CHECK(static_cast<unsigned char>(ev[12]) == 0x2a);
  CHECK(static_cast<unsigned char>(ev[13]) == 19);  // Summary length
  CHECK(static_cast<unsigned char>(ev[14]) == 0x0a);
  CHECK(static_cast<unsigned char>(ev[15]) == 17);  // Value length: tag field 12 + float field 5
  CHECK(ev.substr(18, 10) == "train/loss");
  CHECK(static_cast<unsigned char>(ev[28]) == 0x15);
  float v;
  memcpy(&v, ev.data() + 29, 4);
  CHECK(v == 2.0f);
  std::string fv = tfevent_file_version(0.0);
  CHECK(fv.find("brain.Event:2") != std::string::npos);
}

// The load the BE's heartbeats carry (cpu_permille), which used to be always 0.
#include "be/cpu_load.hpp"

#include <gtest/gtest.h>

#include "common/clock.hpp"

namespace tcpha::be {
namespace {

TEST(CpuLoad, ParsesTheAggregateLine) {
  auto t = parse_proc_stat(
      "cpu  100 20 30 800 50 5 5 0 0 0\ncpu0 50 10 15 400 25 2 3 0 0 0\nintr 1 2 3\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->total, 1010u);
  EXPECT_EQ(t->busy, 160u);  // everything but idle (800) and iowait (50)
}

TEST(CpuLoad, OldKernelsWithFourFields) {
  auto t = parse_proc_stat("cpu 1 2 3 4\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->total, 10u);
  EXPECT_EQ(t->busy, 6u);
}

TEST(CpuLoad, RefusesOtherText) {
  EXPECT_FALSE(parse_proc_stat("cpu0 1 2 3 4\n"));
  EXPECT_FALSE(parse_proc_stat("cpu  1 2\n"));
  EXPECT_FALSE(parse_proc_stat("cpu  1 x 3 4\n"));
  EXPECT_FALSE(parse_proc_stat(""));
}

TEST(CpuLoad, BusyShareBetweenReadings) {
  EXPECT_EQ(busy_permille({100, 1000}, {350, 2000}), 250u);
  EXPECT_EQ(busy_permille({100, 1000}, {1100, 2000}), 1000u);
  EXPECT_EQ(busy_permille({100, 1000}, {100, 1000}), 0u);  // no time passed
  EXPECT_EQ(busy_permille({100, 1000}, {50, 900}), 0u);    // counters went back
}

TEST(CpuLoad, SamplesThisHostOncePerWindow) {
  CpuLoad load;
  uint64_t now = monotonic_ns();
  EXPECT_EQ(load.sample(now), 0u);  // first reading: nothing to compare with yet
  // Busy for a while on this thread, then the next window's value.
  volatile uint64_t x = 0;
  uint64_t until = monotonic_ns() + 300'000'000;
  while (monotonic_ns() < until) x = x + 1;
  uint32_t v = load.sample(now + CpuLoad::kWindowNs);
  EXPECT_GT(v, 0u);  // this thread alone kept at least part of one CPU busy
  EXPECT_LE(v, 1000u);
  EXPECT_EQ(load.sample(now + CpuLoad::kWindowNs + 1), v);  // within the window: cached
}

}  // namespace
}  // namespace tcpha::be

// When a hot-standby front-end claims the active role (fe/standby.hpp): never two at
// once among the live ones, the earliest of the file first. The whole takeover is
// tests/netns/fe_standby_test.sh.
#include "fe/standby.hpp"

#include <gtest/gtest.h>

namespace tcpha::fe {
namespace {

constexpr uint64_t kDown = Standby::kDownNs, kPlace = Standby::kPerPlaceNs,
                   kCold = Standby::kColdWaitNs;

TEST(StandbyClaim, AtStartEachPlaceOfTheFileWaitsLonger) {
  EXPECT_EQ(Standby::claim_after(true, 0, {}), kCold);
  EXPECT_EQ(Standby::claim_after(true, 1, {}), kCold + kPlace);
  EXPECT_EQ(Standby::claim_after(true, 2, {0, 1}), kCold + 2 * kPlace);
}

TEST(StandbyClaim, TheFirstLiveStandbyTakesOverAtOnce) {
  // The active one (place 0) went silent; place 1 is the first live standby.
  EXPECT_EQ(Standby::claim_after(false, 1, {}), kDown);
  // The active one was place 1; place 0, back as a standby, claims first.
  EXPECT_EQ(Standby::claim_after(false, 0, {}), kDown);
}

TEST(StandbyClaim, ALaterStandbyLetsEachLiveEarlierOneGoFirst) {
  // Places 1 and 2 are standbys when the active place 0 fails: 2 waits a place longer,
  // and so hears 1's advert as active before its own time comes.
  const uint64_t first = Standby::claim_after(false, 1, {});
  const uint64_t second = Standby::claim_after(false, 2, {1});
  EXPECT_GE(second, first + kPlace);
  EXPECT_GT(kPlace, Standby::kAdvertNs);  // a place is longer than an advert's interval
  // Place 3 behind live 0 and 2 waits for the earliest of them.
  EXPECT_EQ(Standby::claim_after(false, 3, {0, 2}), kDown + 3 * kPlace);
  // Places after us are ignored (they wait for us).
  EXPECT_EQ(Standby::claim_after(false, 1, {2, 3}), kDown);
}

}  // namespace
}  // namespace tcpha::fe

// Policies: round-robin proportions, least-conn, consistent-hash disruption (measured
// and printed), LARD and LARD/R thresholds, the LARD table bound, and concurrent routing.
#include "sched/policies.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "http/request.hpp"
#include "sched/lard.hpp"
#include "sched/router.hpp"

namespace tcpha::sched {
namespace {

struct FakeLoad : LoadView {
  std::vector<bool> up;
  std::vector<int64_t> act;
  std::vector<uint32_t> cpu;
  explicit FakeLoad(size_t n) : up(n, true), act(n, 0), cpu(n, 0) {}
  bool usable(uint32_t i) const override { return i < up.size() && up[i]; }
  int64_t active(uint32_t i) const override { return i < act.size() ? act[i] : 0; }
  uint32_t cpu_permille(uint32_t i) const override { return i < cpu.size() ? cpu[i] : 0; }
};

// Members be0..be<n-1> with ids 0..n-1 (no local node: its id is out of range).
Members members(std::vector<uint32_t> weights) {
  std::vector<Member> list;
  for (uint32_t i = 0; i < weights.size(); ++i)
    list.push_back({i, weights[i], hash64("be" + std::to_string(i))});
  return Members(std::move(list), 1000);
}

// ---------------------------------------------------------------- round-robin

TEST(RoundRobin, ExactWeightedProportionsOverEachCycle) {
  RoundRobin rr(members({5, 1, 1, 3}));
  FakeLoad load(4);
  ASSERT_EQ(rr.cycle_length(), 10u);
  for (int cycle = 0; cycle < 3; ++cycle) {
    std::vector<int> hits(4);
    for (int i = 0; i < 10; ++i) ++hits[size_t(rr.next(load))];
    EXPECT_EQ(hits, (std::vector<int>{5, 1, 1, 3})) << "cycle " << cycle;
  }
}

// Smooth: after any prefix of the cycle each member has had its share within one pick,
// unlike a naive "5 x a, then b, c, 3 x d" order.
TEST(RoundRobin, TurnsAreInterleaved) {
  const std::vector<uint32_t> w = {5, 1, 1, 3};
  RoundRobin rr(members(w));
  FakeLoad load(4);
  std::vector<int> hits(4);
  for (int n = 1; n <= 10; ++n) {
    ++hits[size_t(rr.next(load))];
    for (size_t p = 0; p < 4; ++p)
      EXPECT_LE(std::abs(hits[p] - n * double(w[p]) / 10), 1.0) << "member " << p << " after " << n;
  }
}

TEST(RoundRobin, WeightsAreReducedByTheirGcd) {
  RoundRobin rr(members({200, 400, 600}));
  EXPECT_EQ(rr.cycle_length(), 6u);
}

TEST(RoundRobin, SkipsUnusableMembersKeepingTheOthersProportions) {
  RoundRobin rr(members({3, 2, 1}));
  FakeLoad load(3);
  load.up[1] = false;
  std::vector<int> hits(3);
  for (int i = 0; i < 400; ++i) ++hits[size_t(rr.next(load))];
  EXPECT_EQ(hits, (std::vector<int>{300, 0, 100}));
}

TEST(RoundRobin, FindsTheLastUsableMemberAndReportsNone) {
  RoundRobin rr(members(std::vector<uint32_t>(10, 1)));
  FakeLoad load(10);
  load.up.assign(10, false);
  EXPECT_EQ(rr.next(load), -1);
  load.up[7] = true;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(rr.next(load), 7);
}

// ---------------------------------------------------------------- least-conn

TEST(LeastConn, PicksTheLeastLoadedPerWeight) {
  LeastConn lc(members({1, 1, 1}));
  FakeLoad load(3);
  load.act = {10, 3, 7};
  EXPECT_EQ(lc.next(load), 1);
  load.up[1] = false;
  EXPECT_EQ(lc.next(load), 2);
  load.up.assign(3, false);
  EXPECT_EQ(lc.next(load), -1);

  LeastConn weighted(members({1, 4}));
  FakeLoad wl(2);
  wl.act = {2, 8};  // (2+1)/1 = 3 against (8+1)/4 = 2.25
  EXPECT_EQ(weighted.next(wl), 1);
  wl.act = {1, 8};  // 2 against 2.25
  EXPECT_EQ(weighted.next(wl), 0);
}

// Seed 000 4.9, dynamic load feedback: the members' own CPU load weighs in.
TEST(LeastConn, ReportedCpuLoadWeighsIn) {
  LeastConn lc(members({1, 1}));
  FakeLoad load(2);
  load.act = {3, 4};
  EXPECT_EQ(lc.next(load), 0);  // no CPU reports: fewer connections wins
  load.cpu = {900, 0};          // 4 * 1.9 = 7.6 against 5 * 1.0
  EXPECT_EQ(lc.next(load), 1);
  load.cpu = {300, 0};          // band 200: 4 * 1.2 = 4.8 against 5
  EXPECT_EQ(lc.next(load), 0);
  load.cpu = {450, 0};          // band 400: 4 * 1.4 = 5.6 against 5
  EXPECT_EQ(lc.next(load), 1);
  load.cpu = {5000, 0};         // an absurd report is capped at one CPU: 4 * 2 against 5
  EXPECT_EQ(lc.next(load), 1);
  load.act = {1, 4};            // capped: 2 * 2 = 4 against 5, still preferred
  EXPECT_EQ(lc.next(load), 0);
}

// CPU reports that differ by less than a band are noise: equal members still take turns.
TEST(LeastConn, CpuNoiseDoesNotBreakTies) {
  LeastConn lc(members({1, 1, 1}));
  FakeLoad load(3);
  load.cpu = {430, 410, 590};  // all in the 400 band
  std::vector<int> got(3, 0);
  for (int i = 0; i < 30; ++i) ++got[size_t(lc.next(load))];
  EXPECT_EQ(got, (std::vector<int>{10, 10, 10}));
}

TEST(LeastConn, EqualMembersTakeTurns) {
  LeastConn lc(members({1, 1, 1}));
  FakeLoad load(3);
  load.act = {4, 4, 4};
  std::vector<int> hits(3);
  for (int i = 0; i < 300; ++i) ++hits[size_t(lc.next(load))];
  EXPECT_EQ(hits, (std::vector<int>{100, 100, 100}));
}

// Connections that never close pile up in proportion to the weights.
TEST(LeastConn, LoadFollowsTheWeights) {
  LeastConn lc(members({1, 2, 3}));
  FakeLoad load(3);
  for (int i = 0; i < 600; ++i) ++load.act[size_t(lc.next(load))];
  EXPECT_NEAR(load.act[0], 100, 1);
  EXPECT_NEAR(load.act[1], 200, 1);
  EXPECT_NEAR(load.act[2], 300, 1);
}

// ---------------------------------------------------------------- consistent hash

std::vector<int> place(const ConsistentHash& h, const LoadView& load, int keys) {
  std::vector<int> where;
  for (int k = 0; k < keys; ++k)
    where.push_back(h.pick_hash(hash64("/file/" + std::to_string(k)), load));
  return where;
}

// The figures quoted in docs/scheduling.md come from this test's output.
TEST(ConsistentHash, DisruptionWhenAMemberLeavesOrJoins) {
  constexpr int kKeys = 10000;
  ConsistentHash four(members({1, 1, 1, 1}), "path");
  FakeLoad load(5);
  const std::vector<int> before = place(four, load, kKeys);
  std::vector<int> share(4);
  for (int m : before) ++share[size_t(m)];
  for (int s : share) EXPECT_NEAR(s, kKeys / 4, kKeys / 4 * 0.1);

  // be3 leaves (down): exactly its keys move, each to another member.
  load.up[3] = false;
  const std::vector<int> without = place(four, load, kKeys);
  int moved_leave = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[size_t(k)] == without[size_t(k)]) continue;
    ++moved_leave;
    EXPECT_EQ(before[size_t(k)], 3) << "key " << k << " moved off a member that stayed";
  }
  EXPECT_EQ(moved_leave, share[3]);
  EXPECT_LE(moved_leave, 1.3 * kKeys / 4);
  // Removing be3 from the config instead gives the same placement: scores do not
  // depend on the other members.
  ConsistentHash three(members({1, 1, 1}), "path");
  EXPECT_EQ(place(three, load, kKeys), without);

  // be4 joins: only keys it now wins move, all of them to it.
  load.up[3] = true;
  ConsistentHash five(members({1, 1, 1, 1, 1}), "path");
  const std::vector<int> after = place(five, load, kKeys);
  int moved_join = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[size_t(k)] == after[size_t(k)]) continue;
    ++moved_join;
    EXPECT_EQ(after[size_t(k)], 4) << "key " << k << " moved between old members";
  }
  EXPECT_LE(moved_join, 1.3 * kKeys / 5);
  EXPECT_GE(moved_join, kKeys / 5 / 1.3);

  // For contrast, hash modulo N moves most keys when N changes.
  int moved_mod = 0;
  for (int k = 0; k < kKeys; ++k) {
    uint64_t h = hash64("/file/" + std::to_string(k));
    moved_mod += h % 4 != h % 5;
  }
  std::printf(
      "hash disruption, %d keys: 4 -> 3 members moved %d (%.1f%%, ideal 25%%); "
      "4 -> 5 moved %d (%.1f%%, ideal 20%%); hash mod N 4 -> 5 moved %d (%.1f%%)\n",
      kKeys, moved_leave, 100.0 * moved_leave / kKeys, moved_join, 100.0 * moved_join / kKeys,
      moved_mod, 100.0 * moved_mod / kKeys);
}

TEST(ConsistentHash, SharesFollowTheWeights) {
  constexpr int kKeys = 20000;
  ConsistentHash h(members({1, 1, 2}), "path");
  FakeLoad load(3);
  std::vector<int> share(3);
  for (int m : place(h, load, kKeys)) ++share[size_t(m)];
  EXPECT_NEAR(share[0], kKeys / 4, kKeys * 0.02);
  EXPECT_NEAR(share[1], kKeys / 4, kKeys * 0.02);
  EXPECT_NEAR(share[2], kKeys / 2, kKeys * 0.02);
  load.up.assign(3, false);
  EXPECT_EQ(h.pick_hash(42, load), -1);
}

struct Req {
  std::string text;
  http::Request r;
  explicit Req(std::string t) : text(std::move(t)) {
    EXPECT_EQ(http::parse_request(text, r).status, http::ParseStatus::Complete) << text;
  }
  Req(const Req&) = delete;
  Req& operator=(const Req&) = delete;
};

TEST(ConsistentHash, KeyChoices) {
  Req a("GET /p?x=1 HTTP/1.1\r\nHost: Example.COM\r\nX-User: ann\r\nCookie: sid=s1\r\n\r\n");
  Req b("GET /p?x=2 HTTP/1.1\r\nHost: example.com\r\nX-User: bob\r\n\r\n");
  const uint32_t ca = 0x0100000a, cb = 0x0200000a;
  auto key = [](std::string_view spec, const Req& r, uint32_t client) {
    return ConsistentHash(members({1}), spec).key_hash(r.r, client);
  };
  EXPECT_EQ(key("path", a, ca), key("path", b, cb));  // the query is not part of the path
  EXPECT_NE(key("url", a, ca), key("url", b, ca));
  EXPECT_EQ(key("url", a, ca), hash64("/p?x=1"));
  EXPECT_EQ(key("host", a, ca), key("host", b, cb));  // host names are case-insensitive
  EXPECT_EQ(key("client", a, ca), key("client", b, ca));
  EXPECT_NE(key("client", a, ca), key("client", a, cb));
  EXPECT_EQ(key("header:x-user", a, ca), hash64("ann"));
  EXPECT_EQ(key("cookie:sid", a, ca), hash64("s1"));
  // Missing header or cookie: the client address keeps the client on one member.
  EXPECT_EQ(key("cookie:sid", b, cb), key("client", b, cb));
  EXPECT_EQ(key("header:X-Missing", b, cb), key("client", b, cb));
}

// ---------------------------------------------------------------- LARD

class LardTest : public ::testing::Test {
 protected:
  LardTest() : load_(4) {}
  int pick(Lard& l, uint64_t target, Lard::Clock::duration at = {}) {
    return l.pick_target(target, load_, Lard::Clock::time_point{} + at);
  }
  FakeLoad load_;
};

TEST_F(LardTest, ATargetStaysOnItsMemberAtLowLoad) {
  Lard lard(members({1, 1, 1, 1}), LardParams{});
  std::mt19937 rng(7);
  const int first = pick(lard, 1);
  for (int i = 0; i < 1000; ++i) {
    for (auto& a : load_.act) a = rng() % 65;  // never over T_high
    EXPECT_EQ(pick(lard, 1), first);
  }
}

TEST_F(LardTest, DistinctTargetsSpreadOverAllMembers) {
  Lard lard(members({1, 1, 1, 1}), LardParams{});
  std::vector<int> targets(4);
  for (uint64_t t = 0; t < 400; ++t) ++targets[size_t(pick(lard, t))];
  EXPECT_EQ(targets, (std::vector<int>{100, 100, 100, 100}));
  // With real load, a new target goes to the least loaded member.
  load_.act = {9, 3, 0, 5};
  EXPECT_EQ(pick(lard, 1000), 2);
}

// Sharing (multi-handoff): two nodes' tables. What one assigns, the other learns and
// then picks too; a learned assignment is not handed on again (no echo), and a change
// is reported once however often the target is picked.
TEST_F(LardTest, AssignmentsOneTableMakesTheOtherLearns) {
  Lard fe(members({1, 1, 1, 1}), LardParams{});
  Lard be(members({1, 1, 1, 1}), LardParams{});
  load_.act = {5, 5, 0, 5};
  const int s = pick(fe, 42);
  EXPECT_EQ(s, 2);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick(fe, 42), s);
  auto changes = fe.take_changes(100);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].first, 42u);
  EXPECT_EQ(changes[0].second, std::vector<uint32_t>{2});
  EXPECT_TRUE(fe.take_changes(100).empty());
  load_.act = {0, 5, 5, 5};  // the BE on its own would pick member 0
  be.learn(42, changes[0].second, Lard::Clock::time_point{});
  EXPECT_EQ(pick(be, 42), 2);
  EXPECT_TRUE(be.take_changes(100).empty()) << "learned, not re-announced";
  // Out-of-range positions (a node with a longer member list) are dropped.
  be.learn(43, {7}, Lard::Clock::time_point{});
  EXPECT_TRUE(be.servers_of(43).empty());
  // At most `max` per call; the rest come next time.
  for (uint64_t t = 100; t < 110; ++t) pick(fe, t);
  EXPECT_EQ(fe.take_changes(4).size(), 4u);
  EXPECT_EQ(fe.take_changes(100).size(), 6u);
}

TEST_F(LardTest, MovesWhenOverHighAndSomeoneIsUnderLow) {
  Lard lard(members({1, 1, 1, 1}), LardParams{.low = 25, .high = 65});
  const int s = pick(lard, 1);
  auto others = [&](int64_t a) {
    for (size_t p = 0; p < 4; ++p)
      if (int(p) != s) load_.act[p] = a;
  };
  load_.act[size_t(s)] = 65;  // at T_high, not over it
  others(0);
  EXPECT_EQ(pick(lard, 1), s);
  load_.act[size_t(s)] = 66;  // over T_high, but nobody under T_low
  others(25);
  EXPECT_EQ(pick(lard, 1), s);
  const int idle = (s + 2) % 4;
  load_.act[size_t(idle)] = 24;  // now someone is
  EXPECT_EQ(pick(lard, 1), idle);
  EXPECT_EQ(lard.servers_of(1), std::vector<uint32_t>{uint32_t(idle)});
  load_.act[size_t(s)] = 0;  // the target does not bounce back when its old member idles
  EXPECT_EQ(pick(lard, 1), idle);
}

TEST_F(LardTest, MovesAtTwiceHighWhateverTheOthers) {
  Lard lard(members({1, 1, 1, 1}), LardParams{.low = 25, .high = 65});
  const int s = pick(lard, 1);
  load_.act.assign(4, 100);
  load_.act[size_t(s)] = 129;
  EXPECT_EQ(pick(lard, 1), s);
  load_.act[size_t(s)] = 130;
  const int lighter = (s + 1) % 4;
  load_.act[size_t(lighter)] = 90;
  EXPECT_EQ(pick(lard, 1), lighter);
}

TEST_F(LardTest, ThresholdsScaleWithWeight) {
  Lard lard(members({2, 1}), LardParams{.low = 25, .high = 65});
  ASSERT_EQ(pick(lard, 1), 0);  // idle: the heavier member is lighter per weight
  load_.act = {130, 0};         // 130/2 = 65: not over T_high
  EXPECT_EQ(pick(lard, 1), 0);
  load_.act = {131, 0};
  EXPECT_EQ(pick(lard, 1), 1);
}

TEST_F(LardTest, AnUnusableMemberLosesItsTargets) {
  Lard lard(members({1, 1, 1, 1}), LardParams{});
  const int s = pick(lard, 1);
  load_.up[size_t(s)] = false;
  const int now = pick(lard, 1);
  EXPECT_NE(now, s);
  load_.up[size_t(s)] = true;
  EXPECT_EQ(pick(lard, 1), now);
  load_.up.assign(4, false);
  EXPECT_EQ(pick(lard, 1), -1);
}

// The health checker changes usable() while a worker routes. Here every member goes
// down between the pick's first look at the target's member and its search for a
// lighter one: the set must keep only real members (it once took -1, and the next
// pick indexed the member list with it).
TEST_F(LardTest, MembersGoingDownDuringAPickLeaveNoBogusMember) {
  struct GoingDown : FakeLoad {
    mutable int calls_left;
    GoingDown(size_t n, int calls) : FakeLoad(n), calls_left(calls) {}
    bool usable(uint32_t i) const override { return calls_left-- > 0 && FakeLoad::usable(i); }
  };
  for (bool replicate : {false, true}) {
    Lard lard(members({1, 1, 1, 1}), LardParams{.low = 25, .high = 65, .replicate = replicate});
    const int s = pick(lard, 1);
    GoingDown view(4, 1);  // one usable() answer (the erase of down members), then all down
    view.act.assign(4, 10);
    view.act[size_t(s)] = 130;  // at 2*T_high: looks for a lighter member, finds none up
    EXPECT_EQ(lard.pick_target(1, view, Lard::Clock::time_point{}), s);
    EXPECT_EQ(lard.servers_of(1), std::vector<uint32_t>{uint32_t(s)});
    EXPECT_EQ(lard.pick_target(1, view, Lard::Clock::time_point{}), -1);  // still all down
    EXPECT_TRUE(lard.servers_of(1).empty());
  }
}

TEST_F(LardTest, ReplicationGrowsTheSetAndShrinksItWhenStable) {
  using std::chrono::seconds;
  Lard lard(members({1, 1, 1, 1}),
            LardParams{.low = 25, .high = 65, .replicate = true, .shrink_after = seconds(20)});
  const int s = pick(lard, 1, seconds(0));
  load_.act.assign(4, 30);
  load_.act[size_t(s)] = 70;
  const int idle = (s + 1) % 4;
  load_.act[size_t(idle)] = 10;
  EXPECT_EQ(pick(lard, 1, seconds(1)), idle);  // over T_high, idle under T_low: set grows
  auto set = lard.servers_of(1);
  std::sort(set.begin(), set.end());
  auto both = std::vector<uint32_t>{uint32_t(std::min(s, idle)), uint32_t(std::max(s, idle))};
  EXPECT_EQ(set, both);

  // Requests go to the least loaded member of the set.
  load_.act[size_t(s)] = 20;
  load_.act[size_t(idle)] = 40;
  EXPECT_EQ(pick(lard, 1, seconds(2)), s);
  load_.act[size_t(idle)] = 15;
  EXPECT_EQ(pick(lard, 1, seconds(3)), idle);
  set = lard.servers_of(1);
  std::sort(set.begin(), set.end());
  EXPECT_EQ(set, both);  // 20 s have not passed since the set changed at 1 s

  // Unchanged for more than K: the most loaded member (s, 20 against 15) leaves.
  EXPECT_EQ(pick(lard, 1, seconds(22)), idle);
  EXPECT_EQ(lard.servers_of(1), std::vector<uint32_t>{uint32_t(idle)});
  // A set of one never shrinks.
  EXPECT_EQ(pick(lard, 1, seconds(100)), idle);
  EXPECT_EQ(lard.servers_of(1), std::vector<uint32_t>{uint32_t(idle)});
}

TEST_F(LardTest, TableIsBoundedAndEvictsTheLeastRecentlyUsed) {
  Lard lard(members({1, 1, 1, 1}), LardParams{.max_targets = 1000});
  for (uint64_t t = 0; t < 1000; ++t) pick(lard, t);
  pick(lard, 0);  // target 0 is now the most recently used; 1 the least
  for (uint64_t t = 1000; t < 5000; ++t) {
    pick(lard, t);
    if (t == 1000) {
      EXPECT_TRUE(lard.servers_of(1).empty());
      EXPECT_FALSE(lard.servers_of(0).empty());
    }
  }
  EXPECT_EQ(lard.target_count(), 1000u);
  EXPECT_FALSE(lard.servers_of(4999).empty());
  EXPECT_FALSE(lard.servers_of(4000).empty());
  EXPECT_TRUE(lard.servers_of(3999).empty());
}

// ---------------------------------------------------------------- concurrency

// A load view the routing threads update while they route, as the FE's atomics are.
struct AtomicLoad : LoadView {
  std::vector<std::atomic<bool>> up;
  std::vector<std::atomic<int64_t>> act;
  explicit AtomicLoad(size_t n) : up(n), act(n) {
    for (auto& u : up) u = true;
  }
  bool usable(uint32_t i) const override { return up.at(i).load(std::memory_order_relaxed); }
  int64_t active(uint32_t i) const override { return act.at(i).load(std::memory_order_relaxed); }
};

TEST(Concurrency, FourThreadsRouteThroughEveryPolicy) {
  config::Config cfg;
  cfg.path = "smoke.toml";
  for (int i = 0; i < 4; ++i) {
    config::BackendSection b;
    b.id = "be" + std::to_string(i);
    b.weight = uint32_t(i + 1);
    b.groups = {"all", i % 2 ? "odd" : "even"};
    cfg.backends.push_back(b);
  }
  cfg.frontend.groups = {"odd"};
  cfg.frontend.docroot = "/srv";
  auto rule = [](std::string path, std::string group, std::string policy) {
    config::RuleSection r;
    r.path = std::move(path);
    r.group = std::move(group);
    r.policy = std::move(policy);
    return r;
  };
  auto lard_r = rule("^/l/", "all", "lard");
  lard_r.lard_low = 2;
  lard_r.lard_high = 5;
  lard_r.lard_replicate = true;
  cfg.rules = {rule("^/rr/", "all", "round-robin"), rule("^/lc/", "odd", "least-conn"),
               rule("^/h/", "even", "hash"), lard_r, rule("^/l2/", "all", "lard")};
  auto built = Router::build(cfg);
  ASSERT_TRUE(built.ok()) << built.error().message();
  Router& router = **built;

  std::vector<std::unique_ptr<Req>> reqs;
  const char* prefixes[] = {"/rr/", "/lc/", "/h/", "/l/", "/l2/"};
  for (int i = 0; i < 500; ++i)
    reqs.push_back(std::make_unique<Req>(std::string("GET ") + prefixes[i % 5] + std::to_string(i) +
                                         " HTTP/1.1\r\nHost: x\r\n\r\n"));
  AtomicLoad load(5);
  constexpr int kPerThread = 100000;
  std::atomic<int> bad{0}, handled{0}, local{0}, to_backend{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng{uint32_t(t)};
      for (int i = 0; i < kPerThread; ++i) {
        const Req& req = *reqs[rng() % reqs.size()];
        Decision d = router.route(req.r, uint32_t(rng()), load);
        bool ok = d.rule >= 0 && d.rule < 5 &&
                  (d.kind == Decision::NoBackend || d.kind == Decision::Local ||
                   (d.kind == Decision::Backend && d.backend < 4));
        if (d.kind == Decision::Local && d.rule != 1) ok = false;  // only "odd" has the FE
        bad += !ok;
        ++handled;
        local += d.kind == Decision::Local;
        to_backend += d.kind == Decision::Backend;
        if (d.kind == Decision::Backend) {
          load.act[d.backend].fetch_add(1);
          if (rng() % 2) load.act[d.backend].fetch_sub(1);  // some connections close
        }
        if (t == 0 && i % 1000 == 0) {  // a back-end flaps
          load.up[rng() % 4] = false;
          load.up[rng() % 4] = true;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(handled.load(), 4 * kPerThread);
  EXPECT_GT(local.load(), 0);
  EXPECT_GT(to_backend.load(), 2 * kPerThread);  // most go to back-ends despite the flapping
}

}  // namespace
}  // namespace tcpha::sched

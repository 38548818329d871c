// The registration link on loopback: the FE's Membership and the BE's Registration
// (and bare proto::Links standing in for BEs that misbehave). JOIN is tied to the
// link's source address; only the link holding an id may remove it; the links keep
// each other alive, a silent one is reaped, and a restarted FE is joined again.
#include "be/registration.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/clock.hpp"
#include "fe/membership.hpp"
#include "proto/link.hpp"

namespace tcpha {
namespace {

constexpr uint64_t kMs = 1'000'000;

in_addr ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return a;
}

uint16_t free_port() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = ip("127.0.0.1");
  bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// What the FE's handlers saw, in order: "join be9 127.0.0.2", "leave be9", "gone be9".
class Events {
 public:
  void add(std::string e) {
    std::lock_guard lk(mu_);
    log_.push_back(std::move(e));
    cv_.notify_all();
  }
  bool wait_for(const std::string& e, int ms = 3000) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::milliseconds(ms),
                        [&] { return std::find(log_.begin(), log_.end(), e) != log_.end(); });
  }
  size_t count(const std::string& e) {
    std::lock_guard lk(mu_);
    return size_t(std::count(log_.begin(), log_.end(), e));
  }
  std::vector<std::string> all() {
    std::lock_guard lk(mu_);
    return log_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> log_;
};

struct Registry : ::testing::Test {
  config::Config cfg;
  Events ev;
  std::string refuse;  // what join() answers
  std::unique_ptr<fe::Membership> fe;

  Registry() {
    cfg.frontend.id = "fe";
    cfg.frontend.address = "127.0.0.1";
    cfg.frontend.addr = ip("127.0.0.1");
    cfg.cluster.control_port = free_port();
    cfg.cluster.key.assign(32, 0x5a);
  }
  void start_fe() {
    auto m = fe::Membership::start(cfg, {[this](const proto::JoinMsg& j, in_addr peer) {
                                           ev.add("join " + j.id + " " + ipv4_str(peer));
                                           return refuse;
                                         },
                                         [this](const std::string& id) { ev.add("leave " + id); },
                                         [this](const std::string& id) { ev.add("gone " + id); }});
    ASSERT_TRUE(m.ok()) << m.error().message();
    fe = std::move(*m);
  }
  void SetUp() override { start_fe(); }

  proto::LinkOptions be_options(const std::string& id, const char* source) {
    proto::LinkOptions o;
    std::copy_n(cfg.cluster.key.begin(), 32, o.key.begin());
    o.role = proto::Role::Be;
    o.node_id = id;
    o.source = ip(source);
    return o;
  }
  sockaddr_in fe_addr() const {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = cfg.frontend.addr;
    a.sin_port = htons(cfg.cluster.control_port);
    return a;
  }
};

// Drives one bare link until `done` or the time is up; returns the change bits seen.
template <typename Done>
unsigned drive(proto::Link& l, Done done, std::vector<proto::Message>* got = nullptr,
               int ms = 3000) {
  unsigned seen = 0;
  std::vector<proto::Message> msgs;
  const uint64_t until = monotonic_ns() + uint64_t(ms) * kMs;
  while (!done(seen) && monotonic_ns() < until) {
    pollfd p{l.fd(), short(l.events()), 0};
    if (l.fd() >= 0 && poll(&p, 1, 10) > 0) seen |= l.on_events(p.revents, msgs, monotonic_ns());
    seen |= l.tick(monotonic_ns());
  }
  if (got) *got = std::move(msgs);
  return seen;
}

unsigned bring_up(proto::Link& l, const sockaddr_in& to) {
  l.dial(to, monotonic_ns());
  return drive(l, [&](unsigned) { return l.up(); });
}

proto::JoinMsg join_msg(const std::string& id, const char* addr) {
  return proto::JoinMsg{id, ip(addr).s_addr, 1, {"all"}};
}

TEST_F(Registry, JoinCarriesTheLinksRealSourceAddress) {
  proto::Link be(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(be, fe_addr()) & proto::Link::kWentUp);
  // The JOIN claims another address; the handler learns where the link really is.
  ASSERT_TRUE(be.send(join_msg("be9", "10.9.9.9")));
  drive(
      be, [](unsigned) { return false; }, nullptr, 100);
  EXPECT_TRUE(ev.wait_for("join be9 127.0.0.2")) << ::testing::PrintToString(ev.all());
}

TEST_F(Registry, RefusedJoinClosesTheLink) {
  refuse = "address not the link's source";
  proto::Link be(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(be, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(be.send(join_msg("be9", "127.0.0.2")));
  unsigned seen = drive(be, [](unsigned s) { return s & proto::Link::kWentDown; });
  EXPECT_TRUE(seen & proto::Link::kWentDown);
  EXPECT_EQ(be.failure(), proto::Link::Failure::PeerClosed);
  EXPECT_EQ(ev.count("gone be9"), 0u) << "a refused link held nothing";
}

TEST_F(Registry, JoinForAnotherIdThanTheLinksIsRefused) {
  proto::Link be(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(be, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(be.send(join_msg("be1", "127.0.0.2")));
  unsigned seen = drive(be, [](unsigned s) { return s & proto::Link::kWentDown; });
  EXPECT_TRUE(seen & proto::Link::kWentDown);
  EXPECT_TRUE(ev.all().empty()) << ::testing::PrintToString(ev.all());
}

TEST_F(Registry, ALateCloseOfAnOldLinkDoesNotRemoveTheRejoinedBackend) {
  proto::Link old_link(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(old_link, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(old_link.send(join_msg("be9", "127.0.0.2")));
  drive(
      old_link, [](unsigned) { return false; }, nullptr, 50);
  ASSERT_TRUE(ev.wait_for("join be9 127.0.0.2"));

  // The BE registers again on a new link (it restarted; the old link lingers).
  proto::Link new_link(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(new_link, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(new_link.send(join_msg("be9", "127.0.0.2")));
  drive(
      new_link, [](unsigned) { return false; }, nullptr, 50);
  // The old link closes now: the FE must not remove be9, which the new link holds.
  unsigned seen = drive(old_link, [](unsigned s) { return s & proto::Link::kWentDown; });
  EXPECT_TRUE(seen & proto::Link::kWentDown) << "the superseded link is closed by the FE";
  old_link.stop("test");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(ev.count("gone be9"), 0u) << ::testing::PrintToString(ev.all());
  EXPECT_EQ(ev.count("join be9 127.0.0.2"), 2u);

  // Only the holder's LEAVE and close count.
  ASSERT_TRUE(new_link.send(proto::LeaveMsg{}));
  drive(
      new_link, [](unsigned) { return false; }, nullptr, 50);
  EXPECT_TRUE(ev.wait_for("leave be9"));
  new_link.stop("test");
  EXPECT_TRUE(ev.wait_for("gone be9"));
  EXPECT_EQ(ev.count("gone be9"), 1u);
}

TEST_F(Registry, AnIdHeldByALiveLinkFromAnotherAddressIsNotTaken) {
  proto::Link owner(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(owner, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(owner.send(join_msg("be9", "127.0.0.2")));
  drive(
      owner, [](unsigned) { return false; }, nullptr, 50);
  ASSERT_TRUE(ev.wait_for("join be9 127.0.0.2"));

  proto::Link thief(be_options("be9", "127.0.0.3"));
  ASSERT_TRUE(bring_up(thief, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(thief.send(join_msg("be9", "127.0.0.3")));
  unsigned seen = drive(thief, [](unsigned s) { return s & proto::Link::kWentDown; });
  EXPECT_TRUE(seen & proto::Link::kWentDown);
  EXPECT_EQ(ev.count("join be9 127.0.0.3"), 0u) << "refused before the handler";
  EXPECT_EQ(ev.count("gone be9"), 0u);
  EXPECT_TRUE(owner.up());
}

TEST_F(Registry, KeepalivesFlowAndSilentLinksAreReaped) {
  // A link that keeps quiet after joining (the BE's host vanished: its kernel no
  // longer answers; here the process just stops talking), and a connection that never
  // even says HELLO.
  proto::Link silent(be_options("be9", "127.0.0.2"));
  ASSERT_TRUE(bring_up(silent, fe_addr()) & proto::Link::kWentUp);
  ASSERT_TRUE(silent.send(join_msg("be9", "127.0.0.2")));
  UniqueFd mute(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in to = fe_addr();
  ASSERT_EQ(connect(mute.get(), reinterpret_cast<sockaddr*>(&to), sizeof to), 0);

  // The FE's keepalives arrive about every second.
  std::vector<proto::Message> got;
  drive(
      silent, [](unsigned) { return false; }, &got, 1500);
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(std::holds_alternative<proto::HeartbeatMsg>(got[0]));
  ASSERT_TRUE(ev.wait_for("join be9 127.0.0.2"));

  // Nothing from the BE for the idle limit: its slot is freed and be9 is gone.
  EXPECT_TRUE(ev.wait_for("gone be9", int(proto::kRegistrationIdleNs / kMs) + 2000))
      << ::testing::PrintToString(ev.all());
  // The mute connection was closed after its handshake deadline, long before.
  char buf[256];
  ssize_t n;
  while ((n = recv(mute.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) {
  }
  EXPECT_EQ(n, 0) << "the FE closed the connection that never said HELLO";
}

TEST_F(Registry, BackendJoinsAgainAfterTheFrontEndRestartsAndLeavesOnRequest) {
  config::BackendSection self;
  self.id = "be7";
  self.address = "127.0.0.7";
  self.addr = ip("127.0.0.7");
  self.groups = {"all"};
  be::Registration reg(cfg, self);
  ASSERT_TRUE(ev.wait_for("join be7 127.0.0.7"));
  // The BE marks itself linked as it sends JOIN; the FE may see the JOIN first (CI
  // once had the first link closed at once and redialled 100 ms later): bounded wait.
  const auto t_up = std::chrono::steady_clock::now();
  while (!reg.linked() && std::chrono::steady_clock::now() - t_up < std::chrono::seconds(3))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(reg.linked());

  fe.reset();  // the FE stops; it comes back a moment later on the same port
  // The BE's thread notices the closed link when it next runs (bounded wait: under
  // ASan with other tests beside it, that can take longer than a fixed sleep).
  const auto t_down = std::chrono::steady_clock::now();
  while (reg.linked() && std::chrono::steady_clock::now() - t_down < std::chrono::seconds(3))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(reg.linked());
  start_fe();
  // The BE redials within its backoff (at most 2 s) and joins again.
  const auto t0 = std::chrono::steady_clock::now();
  while (ev.count("join be7 127.0.0.7") < 2 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(ev.count("join be7 127.0.0.7"), 2u) << ::testing::PrintToString(ev.all());

  reg.leave();
  EXPECT_TRUE(ev.wait_for("leave be7"));
}

}  // namespace
}  // namespace tcpha

// proto::Link over socketpairs and loopback TCP: the handshake, partial writes, a
// peer that never reads (the bounded queue fails the link), garbage, a peer that
// vanishes, the handshake deadline, keepalive and idle limits, redial with backoff.
#include "proto/link.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "common/clock.hpp"
#include "common/fd.hpp"

namespace tcpha::proto {
namespace {

constexpr uint64_t kMs = 1'000'000;

LinkOptions options(Role role, const std::string& id) {
  LinkOptions o;
  for (size_t i = 0; i < o.key.size(); ++i) o.key[i] = uint8_t(3 * i + 1);
  o.role = role;
  o.node_id = id;
  return o;
}

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

struct Side {
  Link* link;
  std::vector<Message> msgs;
  unsigned changes = 0;
};

// Runs both links' events until nothing happens for a poll round (or 2 s pass).
void pump(std::initializer_list<Side*> sides, uint64_t now = 0) {
  const uint64_t until = monotonic_ns() + 2000 * kMs;
  for (;;) {
    std::vector<pollfd> p;
    std::vector<Side*> who;
    for (Side* s : sides)
      if (s->link->fd() >= 0) {
        p.push_back({s->link->fd(), short(s->link->events()), 0});
        who.push_back(s);
      }
    if (p.empty() || poll(p.data(), p.size(), 20) <= 0 || monotonic_ns() > until) return;
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i].revents)
        who[i]->changes |= who[i]->link->on_events(uint32_t(p[i].revents), who[i]->msgs, now);
  }
}

// An FE link and a BE link connected by a socketpair, both up.
struct UpPair {
  Link fe, be;
  Side f{&fe}, b{&be};
  explicit UpPair(LinkOptions fo = options(Role::Fe, "fe"),
                  LinkOptions bo = options(Role::Be, "be1"))
      : fe(std::move(fo)), be(std::move(bo)) {
    auto [x, y] = socket_pair();
    fe.adopt(std::move(x), sockaddr_in{}, 0);
    be.adopt(std::move(y), sockaddr_in{}, 0);
    pump({&f, &b});
  }
};

TEST(ProtoLink, HandshakeBringsBothSidesUpAndMessagesFlow) {
  UpPair p;
  ASSERT_TRUE(p.fe.up());
  ASSERT_TRUE(p.be.up());
  EXPECT_EQ(p.f.changes, Link::kWentUp);
  EXPECT_EQ(p.b.changes, Link::kWentUp);
  EXPECT_EQ(p.fe.peer_id(), "be1");
  EXPECT_EQ(p.be.peer_id(), "fe");
  ASSERT_TRUE(p.fe.send(CommitMsg{7}));
  ASSERT_TRUE(p.be.send(ReadyMsg{7, 0}));
  pump({&p.f, &p.b}, 5 * kMs);
  ASSERT_EQ(p.b.msgs.size(), 1u);
  EXPECT_EQ(std::get<CommitMsg>(p.b.msgs[0]).id, 7u);
  ASSERT_EQ(p.f.msgs.size(), 1u);
  EXPECT_EQ(std::get<ReadyMsg>(p.f.msgs[0]).id, 7u);
  EXPECT_EQ(p.be.last_heard(), 5 * kMs) << "a frame refreshes liveness";
}

// Inside a WriteBatch frames wait for its end and leave in one write: nothing is on
// the socket until then, everything (in order) after it.
TEST(ProtoLink, ABatchWritesItsFramesOnceAtItsEnd) {
  UpPair p;
  {
    WriteBatch batch;
    for (uint64_t id = 1; id <= 20; ++id) ASSERT_TRUE(p.fe.send(CommitMsg{id}));
    EXPECT_GT(p.fe.queued(), 0u) << "held by the batch";
    {
      WriteBatch nested;  // joins the outer one: its end writes nothing
      ASSERT_TRUE(p.fe.send(CommitMsg{21}));
    }
    EXPECT_GT(p.fe.queued(), 0u);
    int pending = 0;
    ASSERT_EQ(ioctl(p.be.fd(), FIONREAD, &pending), 0);
    EXPECT_EQ(pending, 0) << "nothing written before the batch ends";
  }
  EXPECT_EQ(p.fe.queued(), 0u);
  pump({&p.f, &p.b});
  ASSERT_EQ(p.b.msgs.size(), 21u);
  for (uint64_t i = 0; i < 21; ++i) EXPECT_EQ(std::get<CommitMsg>(p.b.msgs[i]).id, i + 1);
}

// A frame sent just before the site closes the link (a refusal, say) still goes out,
// and a link destroyed inside a batch leaves it cleanly (the batch's end does not
// touch it).
TEST(ProtoLink, CloseAndDestructionInsideABatchStillWriteWhatWasSent) {
  UpPair p;
  auto extra = std::make_unique<UpPair>();
  {
    WriteBatch batch;
    ASSERT_TRUE(p.be.send(ReadyMsg{9, 13}));
    p.be.close("refused");
    ASSERT_TRUE(extra->fe.send(CommitMsg{5}));
    extra->be.close("gone");  // the receiving side goes; the sender is destroyed next
    extra.reset();
  }
  pump({&p.f});
  ASSERT_EQ(p.f.msgs.size(), 1u);
  EXPECT_EQ(std::get<ReadyMsg>(p.f.msgs[0]).status, 13u);
}

TEST(ProtoLink, NothingCanBeSentBeforeTheHandshake) {
  Link fe(options(Role::Fe, "fe"));
  auto [x, y] = socket_pair();
  fe.adopt(std::move(x), sockaddr_in{}, 0);
  EXPECT_EQ(fe.state(), Link::State::Handshake);
  EXPECT_FALSE(fe.send(CommitMsg{1}));
}

TEST(ProtoLink, PartialWritesDeliverALargeFrameIntact) {
  UpPair p;
  int small = 4096;
  ASSERT_EQ(setsockopt(p.fe.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  HandoffMsg big{42, {}, std::string(900'000, 'r')};
  for (size_t i = 0; i < big.request.size(); ++i) big.request[i] = char('a' + i % 26);
  ASSERT_TRUE(p.fe.send(big));
  EXPECT_GT(p.fe.queued(), 0u) << "the socket cannot take 900 KB at once";
  EXPECT_TRUE(p.fe.events() & EPOLLOUT) << "waits for the socket while bytes are queued";
  pump({&p.f, &p.b});
  EXPECT_EQ(p.fe.queued(), 0u);
  EXPECT_FALSE(p.fe.events() & EPOLLOUT);
  ASSERT_EQ(p.b.msgs.size(), 1u);
  EXPECT_EQ(std::get<HandoffMsg>(p.b.msgs[0]).request, big.request);
  EXPECT_TRUE(p.fe.up() && p.be.up());
}

TEST(ProtoLink, APeerThatNeverReadsFailsTheLinkAtTheQueueBound) {
  auto fo = options(Role::Fe, "fe");
  fo.max_out = 256 * 1024;
  UpPair p(fo);
  // The BE link is never pumped again: it reads nothing from here on.
  HandoffMsg m{1, {}, std::string(16 * 1024, 'x')};
  size_t sent = 0, max_queued = 0;
  while (p.fe.send(m)) {
    max_queued = std::max(max_queued, p.fe.queued());
    ASSERT_LT(++sent, 100'000u) << "the queue never filled";
  }
  EXPECT_LE(max_queued, fo.max_out);
  EXPECT_FALSE(p.fe.up());
  EXPECT_EQ(p.fe.fd(), -1) << "the socket is closed at once";
  EXPECT_EQ(p.fe.queued(), 0u) << "and the queue freed";
  EXPECT_EQ(p.fe.tick(1), Link::kWentDown) << "the failure is reported once";
  EXPECT_EQ(p.fe.tick(2), 0u);
  EXPECT_EQ(p.fe.failure(), Link::Failure::Overflow);
  EXPECT_NE(p.fe.reason().find("does not read"), std::string::npos) << p.fe.reason();
}

TEST(ProtoLink, GarbageFailsTheLinkAsABadFrame) {
  Link be(options(Role::Be, "be1"));
  auto [x, y] = socket_pair();
  be.adopt(std::move(x), sockaddr_in{}, 0);
  ASSERT_EQ(write(y.get(), "GET / HTTP/1.1\r\n\r\n", 18), 18);
  Side s{&be};
  pump({&s});
  EXPECT_EQ(s.changes, Link::kWentDown);
  EXPECT_EQ(be.failure(), Link::Failure::BadFrame);
  EXPECT_EQ(be.state(), Link::State::Closed);
  EXPECT_TRUE(s.msgs.empty());
  char c;
  EXPECT_EQ(read(y.get(), &c, 1), 1) << "our HELLO went out before";
}

TEST(ProtoLink, APeerThatVanishesIsReportedOnce) {
  UpPair p;
  const int fd = p.be.fd();
  p.be.stop("test");
  EXPECT_EQ(fcntl(fd, F_GETFD), -1) << "stop() closes the socket";
  pump({&p.f});
  EXPECT_EQ(p.f.changes, Link::kWentUp | Link::kWentDown);
  EXPECT_EQ(p.fe.failure(), Link::Failure::PeerClosed);
  EXPECT_EQ(p.fe.state(), Link::State::Closed) << "an adopted link does not redial";
  EXPECT_EQ(p.fe.tick(10 * 1000 * kMs), 0u);
}

// A node that captured an FE's HELLO (and what followed) replays it to a BE: the BE
// never counts the link as up and sends it nothing but its own handshake; the link
// dies at the handshake deadline, or at once on the recorded AUTH.
TEST(ProtoLink, ReplayedHandshakeNeverBringsALinkUp) {
  // Capture what an FE sends on a real session.
  Link fe(options(Role::Fe, "fe")), be(options(Role::Be, "be1"));
  auto [x, y] = socket_pair();
  auto [tap, wire] = socket_pair();  // fe <-> tap ... y <-> be: we relay and record
  fe.adopt(std::move(x), sockaddr_in{}, 0);
  be.adopt(std::move(wire), sockaddr_in{}, 0);
  std::string recorded;
  Side f{&fe}, b{&be};
  for (int round = 0; round < 50 && !(fe.up() && be.up()); ++round) {
    pump({&f, &b});
    char buf[4096];
    ssize_t n;
    while ((n = recv(y.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) {  // FE -> BE
      recorded.append(buf, size_t(n));
      ASSERT_EQ(send(tap.get(), buf, size_t(n), 0), n);
    }
    while ((n = recv(tap.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0)  // BE -> FE
      ASSERT_EQ(send(y.get(), buf, size_t(n), 0), n);
  }
  ASSERT_TRUE(fe.up() && be.up());
  ASSERT_GT(recorded.size(), kHelloSize);

  for (bool hello_only : {true, false}) {
    auto o = options(Role::Be, "be1");
    o.handshake_ns = 500 * kMs;
    Link victim(o);
    auto [attacker, v] = socket_pair();
    victim.adopt(std::move(v), sockaddr_in{}, 0);
    const std::string replay = hello_only ? recorded.substr(0, kHelloSize) : recorded;
    ASSERT_EQ(write(attacker.get(), replay.data(), replay.size()), ssize_t(replay.size()));
    Side s{&victim};
    pump({&s}, 10 * kMs);
    EXPECT_FALSE(s.changes & Link::kWentUp);
    EXPECT_FALSE(victim.up());
    EXPECT_TRUE(s.msgs.empty());
    EXPECT_FALSE(victim.send(HeartbeatMsg{})) << "nothing is queued to a replayer";
    if (hello_only) {
      EXPECT_EQ(s.changes, 0u) << "waits for an answer to its challenge";
      EXPECT_EQ(victim.tick(500 * kMs), Link::kWentDown);
      EXPECT_EQ(victim.failure(), Link::Failure::Timeout);
    } else {
      EXPECT_EQ(s.changes, Link::kWentDown) << "the recorded AUTH answers another challenge";
      EXPECT_EQ(victim.failure(), Link::Failure::BadFrame);
    }
    // What the victim sent: its HELLO and at most its AUTH, nothing else (failing on the
    // recorded AUTH in the same read, it drops its own unsent AUTH).
    char buf[4096];
    const ssize_t n = recv(attacker.get(), buf, sizeof buf, MSG_DONTWAIT);
    const ssize_t hello_and_auth = ssize_t(kHelloSize + kHeaderSize + kAuthSize + kMacSize);
    if (hello_only)
      EXPECT_EQ(n, hello_and_auth);
    else
      EXPECT_TRUE(n == ssize_t(kHelloSize) || n == hello_and_auth) << n;
  }
}

TEST(ProtoLink, HandshakeDeadline) {
  auto o = options(Role::Be, "be1");
  o.handshake_ns = 500 * kMs;
  Link be(o);
  auto [x, y] = socket_pair();  // y never says anything
  be.adopt(std::move(x), sockaddr_in{}, 1000 * kMs);
  EXPECT_EQ(be.tick(1499 * kMs), 0u);
  EXPECT_EQ(be.tick(1500 * kMs), Link::kWentDown);
  EXPECT_EQ(be.failure(), Link::Failure::Timeout);
  EXPECT_EQ(be.fd(), -1);
}

TEST(ProtoLink, KeepaliveAndIdleLimit) {
  auto fo = options(Role::Fe, "fe");
  fo.keepalive_ns = 100 * kMs;
  auto bo = options(Role::Be, "be1");
  bo.idle_ns = 300 * kMs;
  UpPair p(fo, bo);
  // Up at time 0. The FE says something by itself once its keepalive period passed.
  EXPECT_EQ(p.fe.tick(99 * kMs), 0u);
  pump({&p.b}, 99 * kMs);
  EXPECT_TRUE(p.b.msgs.empty());
  EXPECT_EQ(p.fe.tick(100 * kMs), 0u);
  pump({&p.b}, 100 * kMs);
  ASSERT_EQ(p.b.msgs.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<HeartbeatMsg>(p.b.msgs[0]));
  EXPECT_EQ(p.be.tick(400 * kMs), 0u) << "heard at 100 ms";
  EXPECT_EQ(p.be.tick(401 * kMs), Link::kWentDown) << "nothing heard for 301 ms";
  EXPECT_EQ(p.be.failure(), Link::Failure::Timeout);
}

TEST(ProtoLink, BackoffDoublesWithJitterUpToItsMaximum) {
  Backoff b;
  uint64_t step = Backoff::kMinNs;
  for (int i = 0; i < 12; ++i) {
    const uint64_t d = b.next();
    EXPECT_GE(d, step / 2) << i;
    EXPECT_LE(d, step) << i;
    step = std::min(step * 2, Backoff::kMaxNs);
    EXPECT_EQ(b.step(), step);
  }
  b.reset();
  EXPECT_EQ(b.step(), Backoff::kMinNs);
}

// A loopback TCP listener on an ephemeral port.
struct Listener {
  UniqueFd fd{socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  sockaddr_in addr{};
  Listener() {
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    EXPECT_EQ(listen(fd.get(), 8), 0);
  }
  UniqueFd accept(sockaddr_in* peer = nullptr) {
    pollfd p{fd.get(), POLLIN, 0};
    poll(&p, 1, 1000);
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    UniqueFd c(accept4(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK));
    if (peer) *peer = sa;
    return c;
  }
};

TEST(ProtoLink, DialRetriesWithBackoffResetOnlyByALinkThatHeld) {
  Listener l;
  const sockaddr_in to = l.addr;
  l.fd.reset();  // nobody listens: connection refused
  Link fe(options(Role::Fe, "fe"));
  Side f{&fe};
  uint64_t now = 1000 * kMs;
  fe.dial(to, now);
  pump({&f}, now);
  f.changes |= fe.tick(now);
  EXPECT_EQ(f.changes, Link::kWentDown);
  EXPECT_EQ(fe.state(), Link::State::Idle);
  EXPECT_GE(fe.retry_at(), now + Backoff::kMinNs / 2);
  EXPECT_LE(fe.retry_at(), now + Backoff::kMinNs);
  uint64_t first_wait = fe.retry_at() - now;
  // The next failure waits longer.
  now = fe.retry_at();
  EXPECT_EQ(fe.tick(now - 1), 0u) << "not before retry_at";
  f.changes = fe.tick(now);
  pump({&f}, now);
  f.changes |= fe.tick(now);
  EXPECT_EQ(f.changes, Link::kWentDown);
  EXPECT_GE(fe.retry_at() - now, Backoff::kMinNs);  // at least half of the doubled step
  EXPECT_GE(fe.retry_at() - now + Backoff::kMinNs / 2, first_wait);

  // Someone listens on that port now: the redial connects and comes up.
  UniqueFd relisten(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(relisten.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(relisten.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0)
    GTEST_SKIP() << "the ephemeral port was taken meanwhile";
  ASSERT_EQ(listen(relisten.get(), 8), 0);
  now = fe.retry_at();
  f.changes = fe.tick(now);
  pollfd pl{relisten.get(), POLLIN, 0};
  ASSERT_EQ(poll(&pl, 1, 1000), 1);
  Link be(options(Role::Be, "be1"));
  be.adopt(UniqueFd(accept4(relisten.get(), nullptr, nullptr, SOCK_NONBLOCK)), sockaddr_in{}, now);
  Side b{&be};
  pump({&f, &b}, now);
  EXPECT_TRUE(fe.up());
  EXPECT_EQ(f.changes, Link::kWentUp);
  // Dropped as soon as it is up (the site's own decision: no kWentDown): the backoff
  // goes on doubling, as if the dial had failed.
  fe.close("test");
  EXPECT_EQ(fe.tick(now), 0u);
  EXPECT_EQ(fe.state(), Link::State::Idle);
  EXPECT_GE(fe.retry_at() - now, 2 * Backoff::kMinNs)
      << "a link dropped at once must not reset the backoff";
  // Up again, and up for Backoff::kStableNs: dropped then, it redials after the first step.
  now = fe.retry_at();
  f.changes = fe.tick(now);
  ASSERT_EQ(poll(&pl, 1, 1000), 1);
  Link be2(options(Role::Be, "be1"));
  be2.adopt(UniqueFd(accept4(relisten.get(), nullptr, nullptr, SOCK_NONBLOCK)), sockaddr_in{}, now);
  Side b2{&be2};
  pump({&f, &b2}, now);
  ASSERT_TRUE(fe.up());
  now += Backoff::kStableNs;
  fe.tick(now);
  fe.close("test");
  EXPECT_LE(fe.retry_at(), now + Backoff::kMinNs) << "a link that held resets the backoff";
  fe.redial(false);
  EXPECT_EQ(fe.state(), Link::State::Closed);
  EXPECT_EQ(fe.tick(now + 10'000 * kMs), 0u) << "no redial once turned off";
  EXPECT_EQ(fe.fd(), -1);
}

TEST(ProtoLink, DialsFromTheConfiguredSourceAddress) {
  Listener l;
  auto o = options(Role::Be, "be1");
  o.source.s_addr = htonl(0x7f000002);  // 127.0.0.2: any 127/8 address is local
  Link be(o);
  be.dial(l.addr, 0);
  sockaddr_in peer{};
  UniqueFd c = l.accept(&peer);
  ASSERT_TRUE(c.valid());
  EXPECT_EQ(ntohl(peer.sin_addr.s_addr), 0x7f000002u);
}

TEST(ProtoLink, AttachedLinkKeepsItsEpollInterestInSync) {
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  auto fo = options(Role::Fe, "fe");
  Link fe(fo), be(options(Role::Be, "be1"));
  int tag = 0;
  fe.attach(ep.get(), &tag);
  auto [x, y] = socket_pair();
  fe.adopt(std::move(x), sockaddr_in{}, 0);
  be.adopt(std::move(y), sockaddr_in{}, 0);
  Side b{&be};
  std::vector<Message> msgs;
  for (int round = 0; round < 20 && !fe.up(); ++round) {
    pump({&b});
    epoll_event ev{};
    if (epoll_wait(ep.get(), &ev, 1, 50) == 1) {
      EXPECT_EQ(ev.data.ptr, &tag);
      fe.on_events(ev.events, msgs, 0);
    }
  }
  ASSERT_TRUE(fe.up());
  epoll_event ev{};
  EXPECT_EQ(epoll_wait(ep.get(), &ev, 1, 0), 0) << "idle: no EPOLLOUT interest";
  fe.stop("test");
  EXPECT_EQ(epoll_wait(ep.get(), &ev, 1, 0), 0);
}

}  // namespace
}  // namespace tcpha::proto

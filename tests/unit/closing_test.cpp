// Closings, the end of a BE's served connection, over loopback TCP: reported closed
// only when the connection is over, unread request bytes read away instead of a
// reset, and a client that stops reading given up on after stall_ns.
#include "be/closing.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>

#include "common/clock.hpp"

namespace tcpha::be {
namespace {

constexpr uint64_t kMs = 1'000'000;

class ClosingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ep_.reset(epoll_create1(EPOLL_CLOEXEC));
    UniqueFd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ASSERT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(l.get(), 1), 0);
    ASSERT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
    client_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (client_rcvbuf_) setsockopt(client_.get(), SOL_SOCKET, SO_RCVBUF, &client_rcvbuf_, sizeof(int));
    ASSERT_EQ(connect(client_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    server_.reset(accept4(l.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    ASSERT_TRUE(server_.valid());
    Closings::Options o;
    o.stall_ns = 300 * kMs;
    o.linger_ns = 2000 * kMs;
    closings_.emplace(ep_.get(), o, [this](const ClosedReport& r) { reports_.push_back(r); });
  }

  // Runs the event loop until `done` or `ms` milliseconds have passed.
  template <class F>
  bool run_until(F done, int ms) {
    uint64_t until = monotonic_ns() + uint64_t(ms) * kMs;
    while (!done()) {
      if (monotonic_ns() > until) return false;
      epoll_event evs[8];
      int n = epoll_wait(ep_.get(), evs, 8, 20);
      uint64_t now = monotonic_ns();
      for (int i = 0; i < n; ++i) {
        EXPECT_TRUE(Closings::owns(evs[i].data.u64));
        closings_->on_event(evs[i].data.u64, now);
      }
      closings_->tick(now);
    }
    return true;
  }

  // Reads the client side to EOF; false on an error (a reset).
  bool client_reads_all(std::string& got) {
    char buf[65536];
    for (;;) {
      ssize_t n = recv(client_.get(), buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return false;
      got.append(buf, size_t(n));
    }
  }

  uint64_t count(Closings::Counter c) const { return closings_->counters()[size_t(c)].load(); }

  int client_rcvbuf_ = 0;
  UniqueFd ep_, client_, server_;
  std::optional<Closings> closings_;
  std::vector<ClosedReport> reports_;
};

TEST_F(ClosingTest, ReportsOnlyWhenTheClientHasClosedToo) {
  ASSERT_EQ(send(server_.get(), "response", 8, 0), 8);
  closings_->close(std::move(server_), {1, 2, 8, 0}, false, monotonic_ns());
  // Queued, even acknowledged, is not over: the client has not closed its side.
  EXPECT_FALSE(run_until([&] { return !reports_.empty(); }, 200));
  std::string got;
  ASSERT_TRUE(client_reads_all(got));
  EXPECT_EQ(got, "response");
  client_.reset();
  ASSERT_TRUE(run_until([&] { return !reports_.empty(); }, 2000));
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(reports_[0].control_id, 1u);
  EXPECT_EQ(reports_[0].handoff_id, 2u);
  EXPECT_EQ(count(Closings::Counter::lingered), 1u);
  EXPECT_EQ(closings_->size(), 0u);
}

TEST_F(ClosingTest, UnreadRequestBytesAreReadAwayNotReset) {
  // The client's body is still unread when the server answers and closes: a plain
  // close() would reset the connection and the client could lose the answer.
  std::string body(256 * 1024, 'b');
  size_t off = 0;
  while (off < body.size()) {
    ssize_t n = send(client_.get(), body.data() + off, body.size() - off, MSG_DONTWAIT);
    if (n <= 0) break;
    off += size_t(n);
  }
  ASSERT_GT(off, 0u);
  const std::string reply = "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(send(server_.get(), reply.data(), reply.size(), 0), ssize_t(reply.size()));
  closings_->close(std::move(server_), {}, false, monotonic_ns());
  // The rest of the body, then read the answer.
  ASSERT_TRUE(run_until([&] {
    if (off < body.size()) {
      ssize_t n = send(client_.get(), body.data() + off, body.size() - off, MSG_DONTWAIT);
      if (n > 0) off += size_t(n);
    }
    return off == body.size();
  }, 2000));
  std::string got;
  EXPECT_TRUE(client_reads_all(got)) << "reset: " << strerror(errno);
  EXPECT_EQ(got, reply);
  client_.reset();
  ASSERT_TRUE(run_until([&] { return !reports_.empty(); }, 2000));
  EXPECT_EQ(reports_[0].received, body.size());
  EXPECT_EQ(count(Closings::Counter::discarded_bytes), body.size());
}

TEST_F(ClosingTest, PeerFinConsumedElsewhereFinWait2IsOver) {
  // kStatePeerFin: the client's FIN went to the FE; this socket never sees it. Once
  // everything is acknowledged (FIN_WAIT2), the connection is over.
  ASSERT_EQ(send(server_.get(), "response", 8, 0), 8);
  closings_->close(std::move(server_), {}, true, monotonic_ns());
  ASSERT_TRUE(run_until([&] { return !reports_.empty(); }, 2000));
  EXPECT_EQ(count(Closings::Counter::lingered), 1u);
}

class StalledClosingTest : public ClosingTest {
 protected:
  void SetUp() override {
    client_rcvbuf_ = 4096;
    ClosingTest::SetUp();
  }
};

TEST_F(StalledClosingTest, AClientThatStopsReadingIsGivenUpOn) {
  std::string data(1 << 20, 'd');
  size_t off = 0;
  for (;;) {  // until the client's window and our send buffer are full
    ssize_t n = send(server_.get(), data.data() + off % data.size(), data.size() - off % data.size(),
                     MSG_DONTWAIT);
    if (n <= 0) break;
    off += size_t(n);
  }
  uint64_t t0 = monotonic_ns();
  closings_->close(std::move(server_), {}, false, t0);
  // stall_ns (300 ms) without an acknowledgement; checks run once a second.
  ASSERT_TRUE(run_until([&] { return !reports_.empty(); }, 3000));
  EXPECT_GE(monotonic_ns() - t0, 300 * kMs);
  EXPECT_EQ(count(Closings::Counter::stalled), 1u);
  EXPECT_EQ(count(Closings::Counter::lingered), 0u);
}

}  // namespace
}  // namespace tcpha::be

// The handoff sender's state machine (handoff/sender.hpp), state by state, against a
// port that records what it was asked to do: every path must leave exactly one owner.
// The target serves under a lease from the HANDOFF on (sender.hpp), so the sender never
// takes a connection back on its own before the lease is over: only a refusal does
// that at once, and abort() (which its callers call at the end of the lease).
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "handoff/sender.hpp"

namespace tcpha::handoff {
namespace {

struct FakePort : SenderPort {
  std::vector<std::string> calls;
  int forward_err = 0, export_err = 0;
  bool link_up = true, commit_ok = true;
  std::string queued = " pipelined";  // what export finds still in the receive queue

  Status forward(const tcpha_flow_key&) override {
    calls.push_back("forward");
    if (forward_err) return Error{forward_err, "forward"};
    return {};
  }
  void confirm_forward(const tcpha_flow_key&) override { calls.push_back("confirm"); }
  void release(const tcpha_flow_key&) override { calls.push_back("release"); }
  bool send_handoff(uint64_t id, const TcpState& st, const std::string& bytes) override {
    calls.push_back("handoff " + std::to_string(id) + " " + std::to_string(st.rcv_seq) + " " + bytes);
    return link_up;
  }
  bool send_commit(uint64_t id) override {
    calls.push_back("commit " + std::to_string(id));
    return commit_ok;
  }
  void send_abort(uint64_t id) override { calls.push_back("abort " + std::to_string(id)); }
  Result<TcpState> export_socket(int fd, const Endpoint&, const Endpoint&,
                                 std::string& bytes) override {
    calls.push_back("export " + std::to_string(fd));
    if (export_err) return Error{export_err, "export"};
    bytes += queued;  // as export_state: unread bytes appended
    TcpState st;
    st.rcv_seq = 1000;
    return st;
  }
  Status leave_repair(int fd) override {
    calls.push_back("leave_repair " + std::to_string(fd));
    return {};
  }
};

using Calls = std::vector<std::string>;
using Outcome = Sender::Outcome;
using State = Sender::State;

MovingConn conn() {
  MovingConn c;
  c.fd = 7;
  return c;
}

class SenderTest : public ::testing::Test {
 protected:
  // Starts an attempt that reaches Sent; the calls log is cleared afterwards.
  void sent() {
    ASSERT_EQ(s.start(port, conn(), 42, bytes), Outcome::Ok);
    ASSERT_EQ(s.state(), State::Sent);
    port.calls.clear();
  }
  FakePort port;
  Sender s;
  std::string bytes = "GET / HTTP/1.1\r\n\r\n";
};

TEST_F(SenderTest, StartForwardsExportsAndSends) {
  EXPECT_EQ(s.start(port, conn(), 42, bytes), Outcome::Ok);
  EXPECT_EQ(s.state(), State::Sent);
  EXPECT_EQ(s.id(), 42u);
  // Forward first: from then on the client's packets go to the target (which drops them
  // until its import), none to the socket being exported.
  EXPECT_EQ(port.calls, (Calls{"forward", "export 7", "handoff 42 1000 GET / HTTP/1.1\r\n\r\n pipelined"}));
  EXPECT_EQ(bytes, "GET / HTTP/1.1\r\n\r\n pipelined");
}

TEST_F(SenderTest, FullTableStopsBeforeTouchingTheSocket) {
  port.forward_err = E2BIG;
  EXPECT_EQ(s.start(port, conn(), 42, bytes), Outcome::TableFull);
  EXPECT_EQ(port.calls, (Calls{"forward"}));
  EXPECT_EQ(s.state(), State::Idle);
  port.forward_err = EIO;
  EXPECT_EQ(s.start(port, conn(), 42, bytes), Outcome::ForwardFailed);
  EXPECT_EQ(s.state(), State::Idle);
}

TEST_F(SenderTest, FailedExportReleasesTheFlow) {
  port.export_err = EPERM;
  EXPECT_EQ(s.start(port, conn(), 42, bytes), Outcome::ExportFailed);
  EXPECT_EQ(port.calls, (Calls{"forward", "export 7", "release"}));
  EXPECT_EQ(s.state(), State::Idle);
}

TEST_F(SenderTest, LinkDownAtHandoffTakesTheConnectionBack) {
  // The HANDOFF was not even queued: the target has nothing, so taking back at once is
  // safe.
  port.link_up = false;
  EXPECT_EQ(s.start(port, conn(), 42, bytes), Outcome::LinkDown);
  EXPECT_EQ(port.calls.back(), "release");
  EXPECT_EQ(port.calls[port.calls.size() - 2], "leave_repair 7");
  EXPECT_EQ(bytes, "GET / HTTP/1.1\r\n\r\n");  // the peeked bytes stay in the socket
  EXPECT_EQ(s.state(), State::Idle);
}

TEST_F(SenderTest, ReadyCommitsThenChecksTheFlow) {
  sent();
  EXPECT_EQ(s.on_ready(port, 0), Outcome::Ok);
  // No datapath change on the path to COMMIT: the flow points at the target already.
  EXPECT_EQ(port.calls, (Calls{"commit 42", "confirm"}));
  EXPECT_EQ(s.state(), State::Committed);
  // A second READY (a duplicate, or a forged one) changes nothing.
  EXPECT_EQ(s.on_ready(port, 0), Outcome::NotPending);
  EXPECT_EQ(s.abort(port, true), Outcome::NotPending);
  EXPECT_EQ(port.calls.size(), 2u);
}

TEST_F(SenderTest, RefusedReadyTakesBack) {
  sent();
  EXPECT_EQ(s.on_ready(port, ENOSPC), Outcome::Refused);
  EXPECT_EQ(port.calls, (Calls{"leave_repair 7", "release"}));
  EXPECT_EQ(bytes, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(s.state(), State::Idle);
}

TEST_F(SenderTest, CommitLostWithTheLinkWaitsForTheLease) {
  sent();
  port.commit_ok = false;
  // The target serves under its lease: taking back now would make two owners. The
  // attempt stays Sent, and the flow keeps pointing at the target.
  EXPECT_EQ(s.on_ready(port, 0), Outcome::LinkDown);
  EXPECT_EQ(port.calls, (Calls{"commit 42"}));
  EXPECT_EQ(s.state(), State::Sent);
  // The caller's deadline (the lease) passes: the target has dropped it; ours again.
  port.calls.clear();
  EXPECT_EQ(s.abort(port, true), Outcome::Ok);
  EXPECT_EQ(port.calls, (Calls{"abort 42", "leave_repair 7", "release"}));
  EXPECT_EQ(s.state(), State::Idle);
}

TEST_F(SenderTest, LeaseOverAbortsAndTakesBack) {
  sent();
  EXPECT_EQ(s.abort(port, true), Outcome::Ok);
  EXPECT_EQ(port.calls, (Calls{"abort 42", "leave_repair 7", "release"}));
  EXPECT_EQ(bytes, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(s.state(), State::Idle);
  port.calls.clear();
  EXPECT_EQ(s.abort(port, true), Outcome::NotPending);
  EXPECT_TRUE(port.calls.empty());
}

TEST_F(SenderTest, LinkLossTakesBackWithoutTellingTheTarget) {
  sent();
  EXPECT_EQ(s.abort(port, false), Outcome::Ok);
  EXPECT_EQ(port.calls, (Calls{"leave_repair 7", "release"}));
}

TEST_F(SenderTest, ReadyWhileIdleIsIgnored) {
  EXPECT_EQ(s.on_ready(port, 0), Outcome::NotPending);
  EXPECT_TRUE(port.calls.empty());
}

TEST_F(SenderTest, ATakenBackConnectionCanMoveAgain) {
  sent();
  ASSERT_EQ(s.on_ready(port, EBUSY), Outcome::Refused);
  port.calls.clear();
  EXPECT_EQ(s.start(port, conn(), 43, bytes), Outcome::Ok);
  EXPECT_EQ(s.on_ready(port, 0), Outcome::Ok);
  EXPECT_EQ(port.calls[port.calls.size() - 2], "commit 43");
}

}  // namespace
}  // namespace tcpha::handoff

namespace tcpha::handoff {
namespace {

constexpr uint64_t kMs = 1'000'000;

TEST(Lease, AddsTheHeartbeatsAgeUpToTwiceTheTimeout) {
  EXPECT_EQ(lease_ms(500, 10 * kMs, 10 * kMs), 500u);   // heard just now
  EXPECT_EQ(lease_ms(500, 10 * kMs, 90 * kMs + 1), 581u); // 80 ms and a bit: rounded up
  EXPECT_EQ(lease_ms(500, 0, 5000 * kMs), 1000u);       // capped
  EXPECT_EQ(lease_ms(500, 20 * kMs, 10 * kMs), 500u);   // a stamp after now: no age
}

TEST(Lease, EndsBeforeTheSenderMayTakeBack) {
  // The target's end leaves a margin: an eighth of the lease, or two of its ticks.
  EXPECT_EQ(lease_end(1000 * kMs, 800, 50 * kMs), 1000 * kMs + 700 * kMs);
  EXPECT_EQ(lease_end(1000 * kMs, 400, 50 * kMs), 1000 * kMs + 300 * kMs);
  // The sender takes back lease_ms after it sent the HANDOFF, which is after it heard
  // the heartbeat at base: whatever the delays, the target's end comes first.
  const uint64_t base = 1000 * kMs, heard = base + 3 * kMs, sent = heard + 170 * kMs;
  const uint32_t l = lease_ms(500, heard, sent);
  EXPECT_LT(lease_end(base, l, 50 * kMs), sent + uint64_t(l) * kMs);
  // Too short to leave anything: 0 (the target refuses).
  EXPECT_EQ(lease_end(base, 100, 50 * kMs), 0u);
}

}  // namespace
}  // namespace tcpha::handoff

// The failover probe against a real Linux TCP stack (issue 13): a backup that never
// saw the server's responses sends the client one old byte from the VIP and learns
// from the client kernel's duplicate ACK how much of the response it has (ack) and
// where its own stream is (seq); then it imports the socket from that answer and the
// connection goes on. Runs over loopback in a private network namespace: lo's
// frames reach an AF_PACKET tap like a veth's (each once as outgoing, once as
// received; drain() keeps the received one), and the addresses 127.0.0.1 (the
// "VIP", the server) and 127.0.0.2 (the client) keep the two directions apart.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "failover/held.hpp"
#include "failover/sockets.hpp"
#include "handoff/tcp_state.hpp"

using namespace tcpha;
using namespace tcpha::failover;

namespace {

bool enter_private_netns() {
  if (geteuid() != 0) return false;
  if (unshare(CLONE_NEWNET) != 0) return false;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  bool ok = ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  close(s);
  return ok;
}

bool in_netns() {
  static bool ok = enter_private_netns();
  return ok;
}

void set_sysctl(const char* path, const char* value) {
  std::ofstream f(path);
  f << value;
}

uint32_t addr(const char* dotted) {
  in_addr a{};
  inet_pton(AF_INET, dotted, &a);
  return a.s_addr;
}

const std::string kRequest = "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n";
constexpr size_t kResponse = 100000;

// Copies of the frames' fields (their payloads point into drain()'s buffer).
struct Seen {
  Segment seg;
  size_t payload = 0;
};

std::vector<Seen> capture(int tap, int wait_ms) {
  std::vector<Seen> out;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  do {
    pollfd p{tap, POLLIN, 0};
    if (wait_ms > 0) poll(&p, 1, 20);
    drain(tap, [&](const Segment& s) {
      Seen x{s, s.payload.size()};
      x.seg.payload = {};
      out.push_back(x);
    });
  } while (std::chrono::steady_clock::now() < until);
  return out;
}

std::string describe(const Segment& s) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "seq=%u ack=%u win=%u%s%s%s%s ts=%s tsval=%u tsecr=%u", s.seq,
                s.ack, s.window, s.has_ack ? " ACK" : "", s.rst ? " RST" : "", s.fin ? " FIN" : "",
                s.syn ? " SYN" : "", s.has_ts ? "yes" : "no", s.tsval, s.tsecr);
  return buf;
}

class ProbeTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!in_netns()) GTEST_SKIP() << "needs root (raw sockets, TCP_REPAIR, a private netns)";
    set_sysctl("/proc/sys/net/ipv4/tcp_timestamps", GetParam() ? "1" : "0");
    lo_ = int(if_nametoindex("lo"));
    ASSERT_GT(lo_, 0);

    lst_ = UniqueFd(socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = vip_;
    ASSERT_EQ(bind(lst_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(lst_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    ASSERT_EQ(listen(lst_.get(), 8), 0);
    cli_ = UniqueFd(socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in c{};
    c.sin_family = AF_INET;
    c.sin_addr.s_addr = client_;
    ASSERT_EQ(bind(cli_.get(), reinterpret_cast<sockaddr*>(&c), sizeof c), 0);
    ASSERT_EQ(connect(cli_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    srv_ = UniqueFd(accept(lst_.get(), nullptr, nullptr));
    ASSERT_TRUE(srv_.valid());
    len = sizeof local_;
    getsockname(srv_.get(), reinterpret_cast<sockaddr*>(&local_), &len);
    len = sizeof peer_;
    getpeername(srv_.get(), reinterpret_cast<sockaddr*>(&peer_), &len);

    // The client's request, read by the server: the FE's snapshot is taken here, as
    // at a handoff (export and back; the FE would close its socket instead).
    ASSERT_EQ(send(cli_.get(), kRequest.data(), kRequest.size(), 0), ssize_t(kRequest.size()));
    std::string got(kRequest.size(), '\0');
    ASSERT_EQ(recv(srv_.get(), got.data(), got.size(), MSG_WAITALL), ssize_t(got.size()));
    std::string already;
    auto st = handoff::export_state(srv_.get(), Endpoint::v4(local_.sin_addr.s_addr, local_.sin_port),
                                    Endpoint::v4(peer_.sin_addr.s_addr, peer_.sin_port), already);
    ASSERT_TRUE(st) << st.error().message();
    ASSERT_TRUE(handoff::leave_repair(srv_.get()));
    snapshot_ = *st;
    ASSERT_EQ(already, "");  // all read: the snapshot's rcv_seq is just after the request
    snapshot_.rcv_seq -= uint32_t(kRequest.size());
    EXPECT_EQ(bool(snapshot_.options & handoff::kOptTimestamps), GetParam());

    // The response, all of it received by the client.
    std::string body(kResponse, 'r');
    std::thread writer([&] {
      size_t off = 0;
      while (off < body.size()) {
        ssize_t n = send(srv_.get(), body.data() + off, body.size() - off, 0);
        if (n <= 0) break;
        off += size_t(n);
      }
    });
    std::string in(kResponse, '\0');
    ASSERT_EQ(recv(cli_.get(), in.data(), in.size(), MSG_WAITALL), ssize_t(kResponse));
    writer.join();
    for (int i = 0; i < 1000; ++i) {
      int outq = 0;
      ioctl(srv_.get(), SIOCOUTQ, &outq);
      if (outq == 0) break;
      usleep(1000);
    }
    client_end_ = snapshot_.rcv_seq + uint32_t(kRequest.size());
    server_end_ = snapshot_.snd_seq + uint32_t(kResponse);

    auto tap = open_answer_socket(lo_, vip_);
    ASSERT_TRUE(tap) << tap.error().message();
    tap_ = std::move(*tap);
    auto to_client = open_answer_socket(lo_, client_);
    ASSERT_TRUE(to_client) << to_client.error().message();
    to_client_ = std::move(*to_client);
    auto raw = open_probe_socket();
    ASSERT_TRUE(raw) << raw.error().message();
    raw_ = std::move(*raw);
    usleep(20000);
    capture(tap_.get(), 0);  // leftovers (the export's window probe and its answer)
    capture(to_client_.get(), 0);
  }

  // The answers from the client to the VIP's port after sending `probe`.
  std::vector<Seen> probe(const std::string& packet, int wait_ms = 200) {
    std::vector<Seen> out;
    if (auto s = send_probe(raw_.get(), packet); !s) {
      ADD_FAILURE() << s.error().message();
      return out;
    }
    const Held any(0, "", snapshot_, "");
    for (const Seen& x : capture(tap_.get(), wait_ms)) {
      Segment s = x.seg;
      std::string payload(x.payload, 'p');
      s.payload = payload;
      if (is_answer(any, s)) out.push_back(x);
    }
    return out;
  }

  // The frames the server's kernel sent to the client (the probe itself excluded).
  std::vector<Seen> server_frames(const std::string& packet, int wait_ms) {
    std::vector<Seen> out;
    auto parsed =
        parse_frame(reinterpret_cast<const uint8_t*>((std::string(14, '\0') + packet).data()),
                    packet.size() + 14);
    for (const Seen& x : capture(to_client_.get(), wait_ms))
      if (!(parsed && x.seg.seq == parsed->seq && x.payload == 1)) out.push_back(x);
    return out;
  }

  // The backup's guard's stand-in: nothing reaches the VIP's port while no socket
  // is there (else the listener would answer the client's segments with RST). Taps
  // see frames before it.
  bool guard(bool on) {
    const std::string port = std::to_string(ntohs(local_.sin_port));
    const std::string cmd =
        on ? "nft add table ip probe_guard && nft add chain ip probe_guard in "
             "'{ type filter hook input priority 0; }' && nft add rule ip probe_guard in ip "
             "daddr 127.0.0.1 tcp dport " +
                 port + " drop"
           : "nft delete table ip probe_guard 2>/dev/null";
    guarded_ = on;
    return std::system(cmd.c_str()) == 0;
  }
  void TearDown() override {
    if (guarded_) guard(false);
  }

  static ResponseSize sizes() {
    return [](std::string_view s) -> std::optional<std::pair<size_t, uint64_t>> {
      if (s.substr(0, kRequest.size()) != kRequest) return std::nullopt;
      return std::pair<size_t, uint64_t>{kRequest.size(), kResponse};
    };
  }

  const uint32_t vip_ = addr("127.0.0.1"), client_ = addr("127.0.0.2");
  int lo_ = 0;
  UniqueFd lst_, cli_, srv_, tap_, to_client_, raw_;
  sockaddr_in local_{}, peer_{};
  handoff::TcpState snapshot_;
  uint32_t client_end_ = 0, server_end_ = 0;
  bool guarded_ = false;
};

bool have_nft() { return std::system("nft -v >/dev/null 2>&1") == 0; }

// The backup holds the request (no ACK copy seen): the probe's byte is the one
// before the response, long acknowledged and out of the client's window.
TEST_P(ProbeTest, ClientAnswersAnOldByteWithItsPosition) {
  Held h(1, "p", snapshot_, kRequest);
  const std::string packet = build_probe(h);
  auto answers = probe(packet);
  ASSERT_EQ(answers.size(), 1u) << "the client's kernel answers once";
  const Segment& a = answers[0].seg;
  std::cout << "[ answer   ] old byte, ts=" << GetParam() << ": " << describe(a)
            << " payload=" << answers[0].payload << " (expected ack " << server_end_ << " seq "
            << client_end_ << ")\n";
  EXPECT_TRUE(a.has_ack);
  EXPECT_FALSE(a.rst);
  EXPECT_EQ(a.ack, server_end_) << "everything the client received";
  EXPECT_EQ(a.seq, client_end_) << "the client's snd_nxt";
  EXPECT_EQ(answers[0].payload, 0u);
  EXPECT_EQ(a.has_ts, GetParam());

  auto plan = plan_takeover(h, a, 1);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->skip, kResponse);
  EXPECT_EQ(plan->requests, kRequest);

  // A second probe is answered too (not rate-limited).
  auto again = probe(packet);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].seg.ack, server_end_);
}

// The backup saw the client's ACK of the whole response and trimmed the request:
// the probe's byte is the last one the client received (rcv_nxt - 1, in window).
TEST_P(ProbeTest, ClientAnswersItsLastByteWithItsPosition) {
  Held h(1, "p", snapshot_, kRequest);
  Segment ack_copy;
  ack_copy.client_addr = client_;
  ack_copy.vip_addr = vip_;
  ack_copy.client_port = peer_.sin_port;
  ack_copy.vip_port = local_.sin_port;
  ack_copy.seq = client_end_;
  ack_copy.ack = server_end_;
  ack_copy.has_ack = true;
  h.add(ack_copy, sizes());
  ASSERT_EQ(h.stream(), "");
  ASSERT_EQ(h.response_seq(), server_end_);

  auto answers = probe(build_probe(h));
  ASSERT_EQ(answers.size(), 1u);
  const Segment& a = answers[0].seg;
  std::cout << "[ answer   ] last byte, ts=" << GetParam() << ": " << describe(a) << "\n";
  EXPECT_TRUE(a.has_ack);
  EXPECT_FALSE(a.rst);
  EXPECT_EQ(a.ack, server_end_);
  EXPECT_EQ(a.seq, client_end_);
  auto plan = plan_takeover(h, a, 1);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->skip, 0u);
  EXPECT_EQ(plan->requests, "");
}

// The server's socket is still alive and gets the client's duplicate ACK: it must
// not answer it (nothing to retransmit, nothing new acknowledged).
TEST_P(ProbeTest, LiveServerIgnoresTheClientsDuplicateAck) {
  Held h(1, "p", snapshot_, kRequest);
  const std::string packet = build_probe(h);
  ASSERT_EQ(probe(packet).size(), 1u);
  auto sent = server_frames(packet, 300);
  for (const Seen& x : sent) std::cout << "[ server   ] " << describe(x.seg) << "\n";
  EXPECT_TRUE(sent.empty()) << "the server's kernel reacted to the duplicate ACK";
}

// The whole takeover: the server's socket disappears silently (as with a dead
// primary), a new one is imported from the plan, and the client talks to it.
TEST_P(ProbeTest, ImportFromThePlanResumesTheConnection) {
  Held h(1, "p", snapshot_, kRequest);
  auto answers = probe(build_probe(h));
  ASSERT_EQ(answers.size(), 1u);
  auto plan = plan_takeover(h, answers[0].seg, 1);
  ASSERT_TRUE(plan) << plan.error().message();

  ASSERT_TRUE(handoff::enter_repair(srv_.get()));
  srv_.reset();  // silent: repair mode
  auto fd = handoff::import_state_consumed(plan->state, plan->requests.size());
  ASSERT_TRUE(fd) << fd.error().message();
  ASSERT_TRUE(handoff::activate(fd->get()));

  const std::string more = "more bytes from the backup";
  ASSERT_EQ(send(fd->get(), more.data(), more.size(), 0), ssize_t(more.size()));
  std::string got(more.size(), '\0');
  pollfd p{cli_.get(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 3000), 1) << "the client never got the backup's bytes";
  ASSERT_EQ(recv(cli_.get(), got.data(), got.size(), MSG_WAITALL), ssize_t(got.size()));
  EXPECT_EQ(got, more);

  const std::string next = "GET /next HTTP/1.1\r\n\r\n";
  ASSERT_EQ(send(cli_.get(), next.data(), next.size(), 0), ssize_t(next.size()));
  std::string req(next.size(), '\0');
  pollfd q{fd->get(), POLLIN, 0};
  ASSERT_EQ(poll(&q, 1, 3000), 1) << "the backup's socket never got the next request";
  ASSERT_EQ(recv(fd->get(), req.data(), req.size(), MSG_WAITALL), ssize_t(req.size()));
  EXPECT_EQ(req, next);
}

// The client sends its next request after the primary died: no copy of it exists
// (the FE's datapath forwards the flow's packets to the backup as they are once the
// primary is FAILED), and the backup's guard drops it for want of a socket; but its
// tap sees it. Without it the answer's seq is past the held stream (ENODATA); with
// the tap's segment added the takeover serves it.
TEST_P(ProbeTest, ClientDataCaughtOnTheTapBeforeTheImport) {
  if (std::system("nft -v >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "needs nft (the guard's stand-in)";
  Held h(1, "p", snapshot_, kRequest);
  Segment ack_copy;
  ack_copy.seq = client_end_;
  ack_copy.ack = server_end_;
  ack_copy.has_ack = true;
  h.add(ack_copy, sizes());
  ASSERT_EQ(h.stream(), "");

  ASSERT_TRUE(guard(true));
  ASSERT_TRUE(handoff::enter_repair(srv_.get()));
  srv_.reset();  // the primary is gone, silently

  const std::string next = "GET /next HTTP/1.1\r\n\r\n";
  ASSERT_EQ(send(cli_.get(), next.data(), next.size(), 0), ssize_t(next.size()));
  usleep(50000);
  std::vector<std::string> data;  // the client's segments with payload, caught on the tap
  std::vector<Segment> segs;
  drain(tap_.get(), [&](const Segment& s) {
    if (s.client_port != peer_.sin_port || s.payload.empty()) return;
    data.emplace_back(s.payload);
    segs.push_back(s);
  });
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0], next);

  auto answers = probe(build_probe(h));
  ASSERT_EQ(answers.size(), 1u);
  const Segment& a = answers[0].seg;
  EXPECT_EQ(a.seq, client_end_ + uint32_t(next.size()));
  auto gap = plan_takeover(h, a, 1);
  ASSERT_FALSE(gap);
  EXPECT_EQ(gap.error().err, ENODATA) << gap.error().message();

  segs[0].payload = data[0];
  h.add(segs[0], sizes());
  auto plan = plan_takeover(h, a, 1);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->requests, next);
  EXPECT_EQ(plan->skip, 0u);

  auto fd = handoff::import_state_consumed(plan->state, plan->requests.size());
  ASSERT_TRUE(fd) << fd.error().message();
  ASSERT_TRUE(guard(false));
  ASSERT_TRUE(handoff::activate(fd->get()));
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(send(fd->get(), response.data(), response.size(), 0), ssize_t(response.size()));
  std::string got(response.size(), '\0');
  pollfd p{cli_.get(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 3000), 1) << "the client never got the backup's response";
  ASSERT_EQ(recv(cli_.get(), got.data(), got.size(), MSG_WAITALL), ssize_t(got.size()));
  EXPECT_EQ(got, response);
  // The client's stream goes on where the backup's socket expects it.
  const std::string third = "GET /third HTTP/1.1\r\n\r\n";
  ASSERT_EQ(send(cli_.get(), third.data(), third.size(), 0), ssize_t(third.size()));
  std::string req(third.size(), '\0');
  pollfd q{fd->get(), POLLIN, 0};
  ASSERT_EQ(poll(&q, 1, 3000), 1);
  ASSERT_EQ(recv(fd->get(), req.data(), req.size(), MSG_WAITALL), ssize_t(req.size()));
  EXPECT_EQ(req, third);
}

// The primary dies in the middle of a large response the client reads slowly: the
// answer's ack says how much of it the client has (bytes in its receive queue
// count); the backup's socket sends the rest and the client gets the whole response
// byte-exact.
TEST_P(ProbeTest, MidResponseTakeoverDeliversTheRestByteExact) {
  if (!have_nft()) GTEST_SKIP() << "needs nft (the guard's stand-in)";
  const std::string big_req = "GET /big HTTP/1.1\r\n\r\n";
  std::string big(4 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + (i * 7 + i / 4093) % 26);
  ResponseSize rs = [&](std::string_view st) -> std::optional<std::pair<size_t, uint64_t>> {
    if (st.substr(0, kRequest.size()) == kRequest)
      return std::pair<size_t, uint64_t>{kRequest.size(), kResponse};
    if (st.substr(0, big_req.size()) == big_req)
      return std::pair<size_t, uint64_t>{big_req.size(), big.size()};
    return std::nullopt;
  };
  Held h(1, "p", snapshot_, kRequest);
  Segment copy;
  copy.seq = client_end_;
  copy.ack = server_end_;
  copy.has_ack = true;
  copy.payload = big_req;
  h.add(copy, rs);
  ASSERT_EQ(h.stream(), big_req);

  int small = 64 * 1024;
  setsockopt(srv_.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(cli_.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_EQ(send(cli_.get(), big_req.data(), big_req.size(), 0), ssize_t(big_req.size()));
  std::string got_req(big_req.size(), '\0');
  ASSERT_EQ(recv(srv_.get(), got_req.data(), got_req.size(), MSG_WAITALL), ssize_t(big_req.size()));
  // The primary writes until the client's window and its own buffer are full.
  size_t written = 0;
  for (int idle = 0; idle < 20 && written < big.size();) {
    ssize_t n = send(srv_.get(), big.data() + written, big.size() - written, MSG_DONTWAIT);
    if (n > 0) {
      written += size_t(n);
      idle = 0;
    } else {
      ++idle;
      usleep(5000);
    }
  }
  ASSERT_LT(written, big.size()) << "the client's buffers took the whole response";
  // The client reads a little, so its position is nowhere special.
  std::string received(1000, '\0');
  ASSERT_EQ(recv(cli_.get(), received.data(), received.size(), MSG_WAITALL), 1000);
  usleep(50000);
  ASSERT_TRUE(guard(true));
  ASSERT_TRUE(handoff::enter_repair(srv_.get()));
  srv_.reset();  // the primary dies with bytes unsent and unacknowledged
  capture(tap_.get(), 0);

  auto answers = probe(build_probe(h));
  ASSERT_EQ(answers.size(), 1u);
  const Segment& a = answers[0].seg;
  std::cout << "[ answer   ] mid-response, ts=" << GetParam() << ": " << describe(a)
            << " (written by the primary " << written << ")\n";
  auto plan = plan_takeover(h, a, 1);
  ASSERT_TRUE(plan) << plan.error().message();
  std::cout << "[ plan     ] skip " << plan->skip << " of " << big.size() << "\n";
  EXPECT_EQ(plan->requests, big_req);
  EXPECT_GE(plan->skip, 1000u);
  EXPECT_LE(plan->skip, written);
  EXPECT_EQ(a.seq, client_end_ + uint32_t(big_req.size()));

  auto fd = handoff::import_state_consumed(plan->state, plan->requests.size());
  ASSERT_TRUE(fd) << fd.error().message();
  ASSERT_TRUE(guard(false));
  ASSERT_TRUE(handoff::activate(fd->get()));
  const int nfd = fd->get();
  std::thread writer([&] {
    size_t off = plan->skip;
    while (off < big.size()) {
      pollfd p{nfd, POLLOUT, 0};
      if (poll(&p, 1, 5000) <= 0) break;
      ssize_t n = send(nfd, big.data() + off, big.size() - off, MSG_DONTWAIT);
      if (n > 0)
        off += size_t(n);
      else if (n < 0 && errno != EAGAIN)
        break;
    }
  });
  std::string rest(big.size() - received.size(), '\0');
  size_t have = 0;
  while (have < rest.size()) {
    pollfd p{cli_.get(), POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) break;
    ssize_t n = recv(cli_.get(), rest.data() + have, rest.size() - have, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) break;
    if (n > 0) have += size_t(n);
  }
  if (have < rest.size()) {
    tcp_info ni{}, ci{};
    socklen_t l = sizeof ni;
    getsockopt(nfd, IPPROTO_TCP, TCP_INFO, &ni, &l);
    l = sizeof ci;
    getsockopt(cli_.get(), IPPROTO_TCP, TCP_INFO, &ci, &l);
    std::cout << "[ stalled  ] have " << have << " skip " << plan->skip << " snd_wnd "
              << plan->state.snd_wnd << " new: state " << int(ni.tcpi_state) << " unacked "
              << ni.tcpi_unacked << " retrans " << ni.tcpi_total_retrans << " snd_wnd "
              << ni.tcpi_snd_wnd << " backoff " << int(ni.tcpi_backoff) << " probes "
              << int(ni.tcpi_probes) << "; client: rcv_space " << ci.tcpi_rcv_space
              << " rcv_ssthresh " << ci.tcpi_rcv_ssthresh << "\n";
  }
  writer.join();
  ASSERT_EQ(have, rest.size()) << "the client stalled";
  EXPECT_TRUE(received + rest == big) << "the response is not byte-exact";
}

// No socket on the client any more (aborted: SO_LINGER 0): its kernel answers RST.
TEST_P(ProbeTest, GoneClientAnswersRst) {
  Held h(1, "p", snapshot_, kRequest);
  linger l{1, 0};
  ASSERT_EQ(setsockopt(cli_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
  cli_.reset();
  usleep(20000);
  capture(tap_.get(), 0);  // the abort's own RST
  auto answers = probe(build_probe(h));
  for (const Seen& x : answers) std::cout << "[ frame    ] " << describe(x.seg) << "\n";
  ASSERT_EQ(answers.size(), 1u);
  const Segment& a = answers[0].seg;
  std::cout << "[ answer   ] gone client, ts=" << GetParam() << ": " << describe(a) << "\n";
  EXPECT_TRUE(a.rst);
  EXPECT_EQ(a.seq, client_end_) << "RFC 793: an RST to an ACK segment takes its ack number";
  auto plan = plan_takeover(h, a, 1);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().err, ECONNRESET);
}

// A client that closed normally: its socket lingers in FIN_WAIT2 (the server acked
// the FIN) and answers with its position, the FIN counted; the backup, which did not
// see that FIN, refuses (ENODATA) rather than resume a half-closed stream wrong.
TEST_P(ProbeTest, ClosedClientInFinWait2AnswersWithItsFin) {
  Held h(1, "p", snapshot_, kRequest);
  cli_.reset();
  usleep(20000);
  capture(tap_.get(), 0);  // the FIN
  auto answers = probe(build_probe(h));
  for (const Seen& x : answers) std::cout << "[ frame    ] " << describe(x.seg) << "\n";
  ASSERT_EQ(answers.size(), 1u);
  const Segment& a = answers[0].seg;
  std::cout << "[ answer   ] FIN_WAIT2 client, ts=" << GetParam() << ": " << describe(a) << "\n";
  EXPECT_FALSE(a.rst);
  EXPECT_EQ(a.seq, client_end_ + 1) << "the FIN";
  EXPECT_EQ(a.ack, server_end_);
  auto plan = plan_takeover(h, a, 1);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().err, ENODATA);

  // Had the backup seen the FIN's copy, the same answer would make a plan.
  Segment fin;
  fin.seq = client_end_;
  fin.fin = true;
  h.add(fin, sizes());
  auto with_fin = plan_takeover(h, a, 1);
  ASSERT_TRUE(with_fin) << with_fin.error().message();
  EXPECT_TRUE(with_fin->state.flags & handoff::kStatePeerFin);
}

// The answer socket's filter takes only IPv4 TCP to the VIP. Frames are injected on
// lo through a packet socket of their own.
TEST(ProbeSockets, TheAnswerSocketTakesItsFramesOnly) {
  if (!in_netns()) GTEST_SKIP() << "needs root (packet sockets, a private netns)";
  const int lo = int(if_nametoindex("lo"));
  const uint32_t vip = addr("127.0.0.1");
  auto answers = open_answer_socket(lo, vip);
  ASSERT_TRUE(answers) << answers.error().message();
  UniqueFd inject(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(inject.valid());

  // A client segment to the VIP: a probe built the other way round.
  handoff::TcpState st;
  st.local_addr = {addr("127.0.0.9"), 0, 0, 0};
  st.local_port = htons(40000);
  st.peer_addr = {vip, 0, 0, 0};
  st.peer_port = htons(80);
  st.rcv_seq = 5000;
  st.snd_seq = 9001;
  const std::string to_vip = build_probe(Held(1, "p", st, "req"));
  st.peer_addr = {addr("127.0.0.8"), 0, 0, 0};
  const std::string elsewhere = build_probe(Held(1, "p", st, "req"));
  std::string udp = to_vip;
  udp[9] = 17;

  auto send_frame = [&](uint16_t ethertype, const std::string& packet) {
    std::string f(14, '\0');
    f[12] = char(ethertype >> 8);
    f[13] = char(ethertype);
    f += packet;
    sockaddr_ll a{};
    a.sll_family = AF_PACKET;
    a.sll_ifindex = lo;
    a.sll_halen = 6;
    ASSERT_EQ(
        sendto(inject.get(), f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a),
        ssize_t(f.size()))
        << strerror(errno);
  };
  send_frame(0x88B5, to_vip);  // not IPv4
  send_frame(0x0800, to_vip);
  send_frame(0x0800, elsewhere);
  send_frame(0x0800, udp);

  std::vector<Segment> got;
  std::vector<std::string> payloads;  // the segment's payload points into a reused buffer
  for (int i = 0; i < 100 && got.empty(); ++i) {
    drain(answers->get(), [&](const Segment& s) {
      got.push_back(s);
      payloads.emplace_back(s.payload);
    });
    if (got.empty()) usleep(1000);
  }
  usleep(20000);  // anything else would have come by now
  drain(answers->get(), [&](const Segment& s) { got.push_back(s); });
  ASSERT_EQ(got.size(), 1u) << "only IPv4 TCP to the VIP";
  EXPECT_EQ(got[0].vip_addr, vip);
  EXPECT_EQ(got[0].client_port, htons(40000));
  EXPECT_EQ(got[0].seq, 9000u);
  EXPECT_EQ(got[0].ack, 5003u);
  EXPECT_EQ(payloads[0].size(), 1u) << "a probe carries one byte";
}

INSTANTIATE_TEST_SUITE_P(Timestamps, ProbeTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "On" : "Off"; });

}  // namespace

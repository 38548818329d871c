#pragma once
// One control link: a TCP connection carrying a proto::Session, with everything every
// link site needs and used to copy (FE worker -> BE agent, BE registration -> FE
// membership): nonblocking connect, receive and send on bounded buffers, a handshake
// deadline, liveness (the time of the last frame heard, an optional idle limit and
// keepalive), and for links we dial, reconnecting with one backoff policy.
//
// It fits a level-triggered epoll loop: attach() it to the loop's epoll set and it keeps
// its own interest (EPOLLIN, EPOLLOUT while bytes wait) in sync; the loop passes the
// events to on_events() and calls tick() now and then. A poll loop uses fd() and
// events() instead. Sites keep their own per-link bookkeeping; on_events() and tick()
// tell them when the link came up or went down (kWentUp, kWentDown) and why (reason()).
//
// Bounds: the receive side buffers at most one frame (the session checks each frame's
// header first: before authentication only the handshake's sizes pass, after it each
// type's largest payload); the send side fails the link once more than max_out bytes
// wait (a peer that stopped reading), instead of growing without bound.
#include <netinet/in.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "proto/control.hpp"

namespace tcpha::proto {

// Reconnect delays of every link we dial: from kMinNs doubling to kMaxNs, each drawn
// between half and all of the current step so that links which failed together (all
// workers' links to one BE) do not retry in lockstep.
class Backoff {
 public:
  // A dialed link that stayed up this long starts its backoff over when it ends. One
  // that ends sooner (a peer, or this site, that drops it as soon as it is up: the
  // wrong id, no ARP entry for the peer) keeps doubling it: such a peer is not
  // redialled twenty times a second for ever (each of its ends logs every time).
  static constexpr uint64_t kStableNs = 1'000'000'000;
  static constexpr uint64_t kMinNs = 50'000'000, kMaxNs = 2'000'000'000;
  uint64_t next();  // the delay before the next attempt; doubles the step
  void reset() { step_ = kMinNs; }
  uint64_t step() const { return step_; }

 private:
  uint64_t step_ = kMinNs;
};

// The registration link (BE registration -> FE membership) has no traffic of its own
// once joined: both sides send a keepalive at least this often and give the link up
// after this much silence (a half-open link, a vanished or restarted peer).
inline constexpr uint64_t kRegistrationKeepaliveNs = 1'000'000'000;
inline constexpr uint64_t kRegistrationIdleNs = 6'000'000'000;

struct LinkOptions {
  std::array<uint8_t, 32> key{};
  Role role = Role::Fe;
  std::string node_id;
  size_t max_out = size_t{4} << 20;       // bytes queued to send; more fails the link
  uint64_t handshake_ns = 3'000'000'000;  // adopt/dial -> established, or the link fails
  uint64_t idle_ns = 0;       // established and no frame heard for this long: fails (0 = never)
  uint64_t keepalive_ns = 0;  // established and nothing sent for this long: a HEARTBEAT (0 = never)
  in_addr source{};           // dial from this local address (0: the kernel chooses)
};

class Link;

// Frames sent on this thread while a WriteBatch lives are queued and written when it
// ends (or at flush()), one send() per link for all of them: an event loop opens one per
// round, so that a FE worker handing 20 connections to one back-end in one round, or a
// back-end answering a burst of HANDOFFs, writes each link once (fewer syscalls and
// segments, and the receiver wakes once). It also keeps the sender from being
// preempted in the middle of a handoff by the receiver it wakes: the write, and the
// wake-up, come after the round's work. Nested batches join the outer one.
class WriteBatch {
 public:
  WriteBatch();
  ~WriteBatch();
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;
  void flush();  // writes what is queued now; the batch stays open

 private:
  friend class Link;
  std::vector<Link*> dirty_;
  bool outer_;  // the batch that writes (false: nested in another)
};

class Link {
 public:
  enum class State : uint8_t { Idle, Connecting, Handshake, Up, Closed };
  enum class Failure : uint8_t { None, PeerClosed, SocketError, BadFrame, Timeout, Overflow };
  // Bits returned by on_events() and tick(). Both may be set (up, then a bad frame).
  static constexpr unsigned kWentUp = 1, kWentDown = 2;
  static constexpr size_t kReadBudget = 256 * 1024;  // per on_events(): fairness in the loop

  explicit Link(LinkOptions o);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Keeps the socket registered in `epfd` with data.ptr = tag, from now on.
  void attach(int epfd, void* tag);

  // An accepted socket (made nonblocking here): sends our HELLO, starts the handshake
  // deadline. A link that fails afterwards is Closed for good.
  void adopt(UniqueFd fd, const sockaddr_in& peer, uint64_t now);
  // Connects to `to` now and, until stop(), again after every failure with Backoff.
  void dial(const sockaddr_in& to, uint64_t now);

  // Handles readiness of fd() (epoll or poll bits; Linux gives them the same values).
  // Appends the messages received to `msgs`: they may come with kWentUp (the first
  // ones) and with kWentDown (frames that verified before a bad one).
  unsigned on_events(uint32_t events, std::vector<Message>& msgs, uint64_t now);
  // Deadlines, keepalive and redial; reports a failure that happened inside send().
  unsigned tick(uint64_t now);

  // Queues one frame and sends what the socket takes (inside a WriteBatch: when the
  // batch ends). False when the link is not up, or when it failed now (overflow, send
  // error): then kWentDown follows from the next tick() or on_events(); a write that
  // fails at the batch's end reports the same way.
  bool send(const Message& m);

  // The site's own decision to drop the link (no kWentDown follows). A dialed link
  // redials after the backoff; stop() ends it for good.
  void close(const std::string& why);
  void stop(const std::string& why);
  // Whether a dialed link reconnects after failures (on by dial()); turning it back on
  // reconnects a link that stopped at once (at the next tick()). No effect on a link
  // that was never dialed.
  void redial(bool on);

  State state() const { return state_; }
  bool up() const { return state_ == State::Up; }
  int fd() const { return fd_.get(); }
  uint32_t events() const;  // what to wait for now: 0 without a socket
  const std::string& peer_id() const { return session_.peer_id(); }
  const sockaddr_in& peer() const { return peer_; }
  uint64_t last_heard() const { return last_heard_; }  // time of the last frame (or up)
  uint64_t retry_at() const { return retry_at_; }
  size_t queued() const { return out_.size() - out_off_; }
  Failure failure() const { return failure_; }  // of the last kWentDown
  const std::string& reason() const { return reason_; }

 private:
  void connect_now();
  void begin_handshake();
  unsigned receive(std::vector<Message>& msgs);
  void flush();
  void write_out();  // flush, overflow check and epoll interest (after send or a batch)
  void fail(Failure f, std::string why);
  void shut(std::string why);
  void sync_interest();
  unsigned take_pending();

  LinkOptions opt_;
  Session session_;
  UniqueFd fd_;
  State state_ = State::Idle;
  sockaddr_in peer_{};
  bool dialing_ = false;
  Backoff backoff_;
  std::string in_, out_;
  size_t out_off_ = 0;  // bytes of out_ already sent (erased in bulk, not per send)
  uint64_t now_ = 0;    // of the last on_events()/tick()
  uint64_t deadline_ = 0, retry_at_ = 0, last_heard_ = 0, last_sent_ = 0;
  uint64_t up_at_ = 0;  // when the handshake completed
  Failure failure_ = Failure::None;
  std::string reason_;
  unsigned pending_ = 0;  // kWentDown from inside send(), reported by the next call
  int epfd_ = -1;
  void* tag_ = nullptr;
  uint32_t registered_ = 0;  // interest in epfd_; 0 = not registered
  bool batched_ = false;     // in the thread's WriteBatch's dirty list
  friend class WriteBatch;
};

}  // namespace tcpha::proto

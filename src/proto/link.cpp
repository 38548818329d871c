// The control link (design: link.hpp).
#include "proto/link.hpp"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

namespace tcpha::proto {
namespace {

// on_events() takes poll's bits as well as epoll's.
static_assert(POLLIN == EPOLLIN && POLLOUT == EPOLLOUT && POLLERR == EPOLLERR &&
              POLLHUP == EPOLLHUP && POLLRDHUP == EPOLLRDHUP);

constexpr uint64_t kMs = 1'000'000;

// Frames are small and latency-bound (a handoff waits for READY): no Nagle delay.
void tune(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::string errno_str(const char* what, int err) {
  return std::string(what) + ": " + strerror(err);
}

}  // namespace

uint64_t Backoff::next() {
  const uint32_t ms = uint32_t(step_ / kMs);
  const uint64_t delay = (ms / 2 + randombytes_uniform(ms - ms / 2 + 1)) * kMs;
  step_ = std::min(step_ * 2, kMaxNs);
  return delay;
}

Link::Link(LinkOptions o) : opt_(std::move(o)), session_(opt_.key, opt_.role, opt_.node_id) {}

namespace {
thread_local WriteBatch* t_batch = nullptr;  // the outermost open batch of this thread
}

WriteBatch::WriteBatch() : outer_(t_batch == nullptr) {
  if (outer_) t_batch = this;
}

WriteBatch::~WriteBatch() {
  if (!outer_) return;
  flush();
  t_batch = nullptr;
}

void WriteBatch::flush() {
  if (!outer_) return;
  // A write may fail a link, which only marks it (kWentDown comes from its next call):
  // no link leaves the list while it is walked.
  auto dirty = std::move(dirty_);
  dirty_.clear();
  for (Link* l : dirty) {
    l->batched_ = false;
    l->write_out();
  }
}

Link::~Link() {
  dialing_ = false;
  if (batched_) {
    flush();
    if (t_batch) std::erase(t_batch->dirty_, this);
  }
  shut("link destroyed");
}

void Link::attach(int epfd, void* tag) {
  epfd_ = epfd;
  tag_ = tag;
  sync_interest();
}

void Link::adopt(UniqueFd fd, const sockaddr_in& peer, uint64_t now) {
  shut("replaced");
  now_ = now;
  dialing_ = false;
  peer_ = peer;
  fd_ = std::move(fd);
  const int fl = fcntl(fd_.get(), F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd_.get(), F_SETFL, fl | O_NONBLOCK);
  tune(fd_.get());
  session_ = Session(opt_.key, opt_.role, opt_.node_id);
  deadline_ = now + opt_.handshake_ns;
  begin_handshake();
  sync_interest();
}

void Link::dial(const sockaddr_in& to, uint64_t now) {
  shut("redial");
  now_ = now;
  peer_ = to;
  dialing_ = true;
  backoff_.reset();
  connect_now();
}

void Link::redial(bool on) {
  if (on && peer_.sin_family != AF_INET) return;  // never dialed: nowhere to go
  dialing_ = on;
  if (on && state_ == State::Closed) {
    state_ = State::Idle;
    retry_at_ = now_;
  } else if (!on && state_ == State::Idle) {
    state_ = State::Closed;
  }
}

void Link::connect_now() {
  session_ = Session(opt_.key, opt_.role, opt_.node_id);
  deadline_ = now_ + opt_.handshake_ns;
  fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd_.valid()) return fail(Failure::SocketError, errno_str("socket", errno));
  tune(fd_.get());
  if (opt_.source.s_addr != 0) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr = opt_.source;
    if (bind(fd_.get(), reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0)
      return fail(Failure::SocketError, errno_str("bind to the source address", errno));
  }
  if (connect(fd_.get(), reinterpret_cast<const sockaddr*>(&peer_), sizeof peer_) == 0) {
    begin_handshake();
  } else if (errno == EINPROGRESS) {
    state_ = State::Connecting;
  } else {
    return fail(Failure::SocketError, errno_str("connect", errno));
  }
  sync_interest();
}

void Link::begin_handshake() {
  state_ = State::Handshake;
  session_.start(out_);
  flush();
}

uint32_t Link::events() const {
  if (!fd_.valid()) return 0;
  if (state_ == State::Connecting) return EPOLLOUT;
  return EPOLLIN | EPOLLRDHUP | (queued() ? uint32_t(EPOLLOUT) : 0u);
}

unsigned Link::on_events(uint32_t events, std::vector<Message>& msgs, uint64_t now) {
  now_ = now;
  unsigned r = 0;
  if (state_ == State::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      fail(Failure::SocketError, errno_str("connect", err ? err : ECONNREFUSED));
      return take_pending();
    }
    if (!(events & EPOLLOUT)) return take_pending();
    begin_handshake();
  }
  if (fd_.valid() && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) r |= receive(msgs);
  if (fd_.valid()) flush();
  sync_interest();
  return r | take_pending();
}

unsigned Link::receive(std::vector<Message>& msgs) {
  unsigned r = 0;
  size_t budget = kReadBudget;
  while (budget > 0 && fd_.valid()) {
    // Into a scratch buffer, then appended: growing in_ by 64 KiB before each recv()
    // zero-filled 64 KiB per call, twice per wake-up (the read and the EAGAIN), on the
    // handoff's path.
    thread_local std::array<char, 65536> scratch;
    const size_t want = std::min<size_t>(budget, scratch.size());
    const ssize_t n = recv(fd_.get(), scratch.data(), want, MSG_DONTWAIT);
    if (n > 0) in_.append(scratch.data(), size_t(n));
    if (n == 0) {
      fail(Failure::PeerClosed, "closed by the peer");
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        fail(Failure::SocketError, errno_str("recv", errno));
      break;
    }
    budget -= size_t(n);
    const uint64_t frames = session_.frames_received();
    Status st = session_.feed(in_, msgs, out_);
    if (session_.frames_received() != frames) last_heard_ = now_;
    if (state_ == State::Handshake && session_.established()) {
      state_ = State::Up;
      up_at_ = now_;
      last_heard_ = last_sent_ = now_;
      r |= kWentUp;
    }
    if (!st) {
      fail(Failure::BadFrame, "bad frame: " + st.error().message());
      break;
    }
    if (size_t(n) < want) break;  // the socket is empty: no EAGAIN round trip
  }
  return r;
}

void Link::flush() {
  while (fd_.valid() && out_off_ < out_.size()) {
    const ssize_t n = ::send(fd_.get(), out_.data() + out_off_, out_.size() - out_off_,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_off_ += size_t(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return fail(Failure::SocketError, errno_str("send", n < 0 ? errno : EPIPE));
    }
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ >= 65536 && out_off_ * 2 >= out_.size()) {
    out_.erase(0, out_off_);  // in bulk: a slow reader does not make every send quadratic
    out_off_ = 0;
  }
}

bool Link::send(const Message& m) {
  if (state_ != State::Up) return false;
  if (!session_.send(m, out_)) return false;
  last_sent_ = now_;
  if (t_batch) {
    if (!batched_) {
      batched_ = true;
      t_batch->dirty_.push_back(this);
    }
    if (queued() <= opt_.max_out) return true;
  }
  write_out();
  return fd_.valid();
}

void Link::write_out() {
  flush();
  if (fd_.valid() && queued() > opt_.max_out)
    fail(Failure::Overflow, "the peer does not read: " + std::to_string(queued()) +
                                " bytes queued, limit " + std::to_string(opt_.max_out));
  if (fd_.valid()) sync_interest();
}

unsigned Link::tick(uint64_t now) {
  now_ = now;
  switch (state_) {
    case State::Idle:
      if (dialing_ && now >= retry_at_) connect_now();
      break;
    case State::Connecting:
    case State::Handshake:
      if (now >= deadline_)
        fail(Failure::Timeout,
             "no handshake within " + std::to_string(opt_.handshake_ns / kMs) + " ms");
      break;
    case State::Up:
      if (opt_.idle_ns && now - last_heard_ > opt_.idle_ns)
        fail(Failure::Timeout,
             "nothing heard for " + std::to_string((now - last_heard_) / kMs) + " ms");
      else if (opt_.keepalive_ns && now - last_sent_ >= opt_.keepalive_ns)
        send(HeartbeatMsg{now, 0, 0, 0});
      break;
    case State::Closed:
      break;
  }
  return take_pending();
}

// Frames a batch still holds go out first, as far as the socket takes them (what
// send() did before batches: a refusal sent just before closing still arrives).
void Link::close(const std::string& why) {
  if (batched_) flush();
  pending_ = 0;  // the site knows: no kWentDown for this
  shut(why);
}

void Link::stop(const std::string& why) {
  if (batched_) flush();
  dialing_ = false;
  pending_ = 0;
  shut(why);
}

void Link::fail(Failure f, std::string why) {
  failure_ = f;
  shut(std::move(why));
  pending_ |= kWentDown;
}

void Link::shut(std::string why) {
  if (fd_.valid() && registered_) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd_.get(), nullptr);
    registered_ = 0;
  }
  const bool was_up = state_ == State::Up;
  const bool had = fd_.valid();  // Connecting, Handshake and Up hold a socket
  fd_.reset();
  std::string().swap(in_);  // a dead link keeps no megabyte buffers
  std::string().swap(out_);
  out_off_ = 0;
  if (!had) return;
  reason_ = std::move(why);
  if (dialing_) {
    if (was_up && now_ - up_at_ >= Backoff::kStableNs) backoff_.reset();
    state_ = State::Idle;
    retry_at_ = now_ + backoff_.next();
  } else {
    state_ = State::Closed;
  }
}

void Link::sync_interest() {
  if (epfd_ < 0 || !fd_.valid()) return;
  const uint32_t want = events();
  if (want == registered_) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.ptr = tag_;
  if (epoll_ctl(epfd_, registered_ ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd_.get(), &ev) == 0)
    registered_ = want;
}

unsigned Link::take_pending() { return std::exchange(pending_, 0u); }

}  // namespace tcpha::proto

#include "be/relay.hpp"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "be/relay_takeover.hpp"
#include "common/net.hpp"
#include "handoff/tcp_state.hpp"
#include "http/forwarded.hpp"
#include "http/response.hpp"

namespace tcpha::be {
namespace {

constexpr int kRoundsPerTurn = 8;   // up to 8 pipes' worth per turn, then the others'
constexpr size_t kSparePipes = 64;  // empty pipes kept to skip pipe2+F_SETPIPE_SZ
constexpr uint64_t kWarnEveryNs = 1'000'000'000;
constexpr uint64_t kAckCheckNs = 1'000'000'000;  // send timeouts are tens of seconds
constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

// Route mode: the head at the front of `in` is held for good (its connection ends
// after the response under way); see Relays::settle.
constexpr int kHoldVerdict = -2;
constexpr uint64_t kTagBit = uint64_t{1} << 63;  // see Relays::owns()
constexpr uint64_t kWakeTag = kTagBit;           // connection tags: id << 1 | side, id >= 1

bool transient(int err) { return err == EAGAIN || err == EINTR; }

// Closing with a zero linger time sends RST instead of FIN: how a reset on one side
// is passed on to the other.
void close_with_reset(UniqueFd& fd) {
  if (!fd.valid()) return;
  linger l{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  fd.reset();
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace

std::string make_proxy_v2(const Endpoint& client, const Endpoint& server) {
  static constexpr char kSignature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                          '\n', 'Q',  'U',  'I',  'T',  '\n'};
  const bool v6 = client.is_v6();
  const size_t alen = v6 ? 16 : 4;
  std::string h(kSignature, sizeof kSignature);
  h += char(0x21);              // version 2, command PROXY
  h += char(v6 ? 0x21 : 0x11);  // AF_INET6 or AF_INET, SOCK_STREAM
  h += '\0';
  h += char(2 * alen + 4);  // address block length, big-endian: 12 or 36
  auto raw = [&h](const void* p, size_t n) { h.append(static_cast<const char*>(p), n); };
  raw(client.addr.data(), alen);  // addresses and ports are already in network order
  raw(server.addr.data(), alen);
  raw(&client.port, 2);
  raw(&server.port, 2);
  return h;
}

// One relayed connection. Response direction: upstream -> pipe -> client (splice).
// Request direction: client -> to_upstream -> upstream, through user space.
struct Relays::Conn {
  uint64_t id = 0, control_id = 0, handoff_id = 0;
  Endpoint local{}, peer{};  // the client socket's (from the imported state)
  UniqueFd client, upstream, pipe_r, pipe_w;
  size_t pipe_cap = 0;
  size_t in_pipe = 0;                     // response bytes spliced in, not yet out to the client
  std::string to_upstream;                // PROXY header, then request bytes not yet written
  std::optional<http::ForwardedFor> xff;  // with x_forwarded_for: rewrites request heads
  std::string client_addr;                // for xff
  // An upgrade request has been passed on and the upstream's answer is not known yet:
  // the client's bytes after it wait in `held` (and in its socket), since whether
  // they are HTTP depends on that answer (101: no longer HTTP; anything else: it is).
  bool upgrade_pending = false;
  std::string held;
  size_t to_upstream_off = 0;
  bool connected = false;  // upstream connect() completed
  // Edge-triggered readiness: set by an event, cleared by EAGAIN, so that pump()
  // makes no system call that is bound to fail.
  bool client_in = true, client_out = true;  // the request waits in the receive queue
  bool upstream_in = false, upstream_out = false;
  bool client_eof = false;     // read the client's FIN
  bool upstream_eof = false;   // read the upstream's FIN
  bool upstream_shut = false;  // passed the client's FIN on to the upstream
  bool client_shut = false;    // passed the upstream's FIN on to the client
  bool peer_fin = false;       // the client's FIN follows the bytes in its receive queue
  bool bad_request = false;    // read_client failed on framing, not on the socket
  uint64_t sent = 0, received = 0;
  uint64_t connect_deadline = 0, last_progress = 0;
  // Send timeout: tcpi_bytes_acked when last looked at, when it last grew, and when
  // to look next.
  uint64_t acked = 0, ack_progress = 0, next_ack_check = 0;

  // Multi-handoff (route mode, route != null): the client's bytes wait in `in` until
  // framed; each head is routed before it goes on, and `resp` follows where the
  // server's responses end, so that the connection can leave between two of them.
  HttpConn* route = nullptr;
  std::string in;
  enum class Req : uint8_t { Head, Body, Chunked, Tunnel } req = Req::Head;
  uint64_t body_left = 0;
  std::optional<http::ChunkedScanner> chunked;
  // The head at the front of `in` is not passed on: RelayRouting::kMove, or the status
  // the relay answers it with (then verdict_close: the connection closes after the
  // answer, and verdict_len: the head's length), or kHoldVerdict (never passed on).
  // kServe: none pending.
  int verdict = RelayRouting::kServe;
  bool verdict_close = false;
  size_t verdict_len = 0;
  bool serve_next = false;    // a refused move: the next head goes on without routing
  bool upgrade_wait = false;  // an upgrade request went on: its answer decides what follows
  bool close_after_reply = false;
  std::string reply;  // the relay's own answer, once every response before it is out
  size_t reply_off = 0;
  uint64_t heads_passed = 0;  // on this upstream connection
  bool peek_big = false;      // the last look found an incomplete head in 16 KiB
  http::ResponseFramer resp;

  // Failover takeover (Relays::start with skip): the held requests are walked one by
  // one, each response's length learned with a HEAD, until the one the client has only
  // part of; its rest is asked for again (Range, or the whole response when the client
  // is inside its head) and passed on past the framer (`left` bytes). Then `rest`, the
  // held bytes after it, goes on as if the client had just sent them.
  struct Resume {
    enum class Phase : uint8_t { Learn, Again, Range, Body } phase = Phase::Learn;
    std::string rest;       // held bytes, from the request being walked on
    size_t req_len = 0;     // that request's length (GET or HEAD: its head)
    bool head_method = false;
    bool ranged = false;    // the client asked for a range itself (Range or If-Range)
    uint64_t skip = 0;      // bytes of its response the client has
    uint64_t body_off = 0;  // Range: the first body byte asked for
    uint64_t left = 0;      // Body: bytes of it still to pass on
    resume::ResponseHead learned;
  };
  std::unique_ptr<Resume> resume;
  bool resumed = false;  // the client had response bytes at the takeover: an error resets it

  size_t pending_upstream() const { return to_upstream.size() - to_upstream_off; }
};

Relays::Relays(const RelayOptions& opts, ClosedFn closed, Closings* closing)
    : opts_(opts), closed_(std::move(closed)), closing_(closing) {}

Relays::~Relays() = default;

Result<std::unique_ptr<Relays>> Relays::create(const RelayOptions& opts, ClosedFn closed,
                                               int epoll_fd, Closings* closing) {
  // splice() into a socket the client has reset raises SIGPIPE, and unlike send()
  // it takes no MSG_NOSIGNAL: the error must come back as EPIPE instead of ending
  // the process.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGPIPE, &ign, nullptr) != 0) return sys_error("sigaction(SIGPIPE)");
  std::unique_ptr<Relays> r(new Relays(opts, std::move(closed), closing));
  r->ep_ = epoll_fd;
  r->wake_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!r->wake_.valid()) return sys_error("eventfd");
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = kWakeTag;
  if (epoll_ctl(r->ep_, EPOLL_CTL_ADD, r->wake_.get(), &e) != 0)
    return sys_error("epoll_ctl(eventfd)");
  return r;
}

Status Relays::open_pipe(Conn& c) {
  if (!spare_pipes_.empty()) {
    c.pipe_r = std::move(spare_pipes_.back()[0]);
    c.pipe_w = std::move(spare_pipes_.back()[1]);
    spare_pipes_.pop_back();
  } else {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return sys_error("pipe2");
    c.pipe_r.reset(p[0]);
    c.pipe_w.reset(p[1]);
    // The pipe is the only buffer of the response direction: its size bounds the
    // bytes in flight per connection. Failure (pipe-max-size, per-user pipe limits)
    // leaves the default 64 KiB, which only costs throughput.
    if (fcntl(c.pipe_w.get(), F_SETPIPE_SZ, int(opts_.pipe_bytes)) < 0)
      warn("relay: F_SETPIPE_SZ " + std::to_string(opts_.pipe_bytes) + ": " + strerror(errno));
  }
  int cap = fcntl(c.pipe_w.get(), F_GETPIPE_SZ);
  c.pipe_cap = cap > 0 ? size_t(cap) : 65536;
  return {};
}

void Relays::start(UniqueFd client, const Endpoint& local, const Endpoint& peer,
                   uint64_t control_id, uint64_t handoff_id, bool peer_fin, uint64_t now_ns,
                   HttpConn* route, std::string bytes, uint64_t skip) {
  inc(Counter::relayed);
  if (!routing_.route) route = nullptr;
  const size_t n = bytes.size();
  if (skip > 0) {
    // A takeover: the held bytes wait in the resume state, the client's socket is not
    // read until they are all passed on (its later bytes come after them).
    Conn* c = admit(std::move(client), local, peer, control_id, handoff_id, peer_fin, now_ns,
                    route, std::string());
    if (!c) return;
    c->received += n;
    c->resumed = true;
    c->resume = std::make_unique<Conn::Resume>();
    c->resume->rest = std::move(bytes);
    c->resume->skip = skip;
    if (resume_next(*c) == Resumed::Failed) {
      inc(Counter::resume_failed);
      finish(*c, End::UpstreamError, now_ns);
      return;
    }
    pump(*c, now_ns);
    return;
  }
  // Route mode frames them like any bytes read (in); otherwise they go to the upstream
  // after the PROXY header, through the X-Forwarded-For filter when it is on.
  Conn* c = admit(std::move(client), local, peer, control_id, handoff_id, peer_fin, now_ns, route,
                  route ? std::move(bytes) : std::string());
  if (!c) return;
  c->received += n;
  if (!route && n > 0) {
    if (c->xff) {
      if (!feed_client(*c, bytes)) {
        finish(*c, End::BadRequest, now_ns);
        return;
      }
    } else {
      c->to_upstream += bytes;
    }
  }
  pump(*c, now_ns);
}

void Relays::adopt(HttpConn& route, UniqueFd client, const Endpoint& local, const Endpoint& peer,
                   std::string bytes, bool peer_fin, uint64_t control_id, uint64_t handoff_id,
                   uint64_t now_ns) {
  inc(Counter::taken_back);
  // Called from the agent's move machinery, maybe from inside pump(): the connection
  // gets its turn from the event loop.
  if (Conn* c = admit(std::move(client), local, peer, control_id, handoff_id, peer_fin, now_ns,
                      &route, std::move(bytes)))
    again(*c);
}

// Sets up a relayed connection: socket options, the PROXY header, the pipe, the
// upstream connection (under way). Null when that failed (the connection has ended).
Relays::Conn* Relays::admit(UniqueFd client, const Endpoint& local, const Endpoint& peer,
                            uint64_t control_id, uint64_t handoff_id, bool peer_fin,
                            uint64_t now_ns, HttpConn* route, std::string bytes) {
  auto owned = std::make_unique<Conn>();
  Conn& c = *owned;
  c.id = next_id_++;
  c.local = local;
  c.peer = peer;
  c.control_id = control_id;
  c.handoff_id = handoff_id;
  c.client = std::move(client);
  c.peer_fin = peer_fin;
  c.route = route;
  c.in = std::move(bytes);
  c.last_progress = now_ns;
  c.connect_deadline = now_ns + opts_.connect_timeout_ns;
  conns_.emplace(c.id, std::move(owned));

  // splice() honours the socket's O_NONBLOCK, not only SPLICE_F_NONBLOCK: a
  // blocking client socket would stall every relay behind one slow client.
  fcntl(c.client.get(), F_SETFL, O_RDWR | O_NONBLOCK);
  // The response is spliced in pipe-sized pieces, each pushed at once: Nagle would
  // hold a response's short tail until the previous segment is acknowledged.
  int one = 1;
  setsockopt(c.client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // The imported connection's own addresses (its TCP state's 4-tuple): the client's,
  // wherever the connection was accepted or moved from, and the VIP.
  if (opts_.proxy_protocol == 2) c.to_upstream = make_proxy_v2(peer, local);
  if (opts_.x_forwarded_for) {
    c.client_addr = peer.addr_str();  // an IPv6 one bare, as nginx's $remote_addr
    // Route mode frames the requests itself and adds the line as it passes heads on.
    if (!c.route) c.xff.emplace(c.client_addr, opts_.limits);
  }
  if (auto s = open_pipe(c); !s) {  // out of descriptors: as bad as a refusing upstream
    warn("relay: " + s.error().message());
    finish(c, End::Refused, now_ns);
    return nullptr;
  }
  const SocketAddress& up = opts_.upstream;
  c.upstream.reset(socket(up.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  // A unix socket connects or fails at once; EAGAIN there means a full listen
  // backlog, which is a refusal like ECONNREFUSED.
  if (!c.upstream.valid() ||
      (connect(c.upstream.get(), up.get(), up.length) != 0 && errno != EINPROGRESS)) {
    warn("relay: connect to upstream " + up.text + ": " + strerror(errno));
    finish(c, End::Refused, now_ns);
    return nullptr;
  }
  // Requests are small and each one waits for its answer: send them at once.
  if (up.family() == AF_INET)
    setsockopt(c.upstream.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  epoll_event e{};
  e.events = kEvents;
  e.data.u64 = kTagBit | c.id << 1;
  epoll_ctl(ep_, EPOLL_CTL_ADD, c.client.get(), &e);
  e.data.u64 = kTagBit | c.id << 1 | 1;
  epoll_ctl(ep_, EPOLL_CTL_ADD, c.upstream.get(), &e);
  return &c;
}

// Edge-triggered events will not repeat for bytes already waiting: the connection
// gets another turn after the others had theirs.
void Relays::again(Conn& c) {
  if (again_.empty()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(wake_.get(), &one, sizeof one);
  }
  again_.push_back(c.id);
}

void Relays::warn(const std::string& msg) {
  // An upstream that is down fails every connection: one line per second, not per
  // connection.
  uint64_t now = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count());
  if (now - last_warn_ns_ < kWarnEveryNs) {
    ++warn_suppressed_;
    return;
  }
  if (warn_suppressed_)
    spdlog::warn("{} ({} more since the last such line)", msg, warn_suppressed_);
  else
    spdlog::warn("{}", msg);
  warn_suppressed_ = 0;
  last_warn_ns_ = now;
}

void Relays::on_event(uint64_t tag, uint32_t ev, uint64_t now_ns) {
  if (tag == kWakeTag) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = read(wake_.get(), &v, sizeof v);
    std::vector<uint64_t> ids;
    ids.swap(again_);
    for (uint64_t id : ids)
      if (auto it = conns_.find(id); it != conns_.end()) pump(*it->second, now_ns);
    return;
  }
  // The other socket's event in this batch may have ended the connection already.
  auto it = conns_.find((tag & ~kTagBit) >> 1);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  bool upstream_side = tag & 1;
  // Errors and hangups count as readiness both ways: the next call reports them.
  bool in = ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
  bool out = ev & (EPOLLOUT | EPOLLHUP | EPOLLERR);
  (upstream_side ? c.upstream_in : c.client_in) |= in;
  (upstream_side ? c.upstream_out : c.client_out) |= out;
  if (upstream_side && !c.connected) {
    if (int err = socket_error(c.upstream.get())) {
      warn("relay: connect to upstream " + opts_.upstream.text + ": " + strerror(err));
      finish(c, End::Refused, now_ns);
      return;
    }
    if (!(ev & EPOLLOUT)) return;
    c.connected = true;
  } else if (ev & EPOLLERR) {
    // An error on a socket pump() would not touch now (e.g. a reset while the
    // relay waits on the other side) still ends the connection.
    if (socket_error(upstream_side ? c.upstream.get() : c.client.get()) != 0) {
      finish(c, upstream_side ? End::UpstreamError : End::ClientError, now_ns);
      return;
    }
  }
  pump(c, now_ns);
}

// Moves bytes both ways until nothing more can move, passing FINs on once their
// direction is drained. Returns false when the connection has ended (c is gone).
bool Relays::pump(Conn& c, uint64_t now_ns) {
  for (int round = 0; round < kRoundsPerTurn; ++round) {
    bool moved = false;
    // Client -> buffer, while the buffer has room: a full buffer (upstream not
    // writable) stops reading the client, whose window then closes.
    if (!read_client(c, moved)) {
      finish(c, c.bad_request ? End::BadRequest : End::ClientError, now_ns);
      return false;
    }
    // Route mode: complete requests that may go on, from `in` to the buffer.
    if (c.route) {
      const size_t before = c.in.size();
      if (!frame_requests(c)) {
        finish(c, End::BadRequest, now_ns);
        return false;
      }
      moved |= c.in.size() != before;
    }
    // Buffer -> upstream (the PROXY header first: it is at the buffer's front).
    if (c.connected && c.upstream_out && c.pending_upstream() > 0) {
      ssize_t n = send(c.upstream.get(), c.to_upstream.data() + c.to_upstream_off,
                       c.pending_upstream(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        // Short write: the send buffer is full and EPOLLOUT will say when it is not.
        if (size_t(n) < c.pending_upstream()) c.upstream_out = false;
        c.to_upstream_off += size_t(n);
        if (c.to_upstream_off == c.to_upstream.size()) {
          c.to_upstream.clear();
          c.to_upstream_off = 0;
        }
        inc(Counter::bytes_to_upstream, uint64_t(n));
        moved = true;
      } else if (n < 0 && !transient(errno)) {
        finish(c, End::UpstreamError, now_ns);
        return false;
      } else if (n < 0) {
        c.upstream_out = false;
      }
    }
    if (c.connected && c.client_eof && c.pending_upstream() == 0 && c.in.empty() &&
        !c.upstream_shut) {
      shutdown(c.upstream.get(), SHUT_WR);
      c.upstream_shut = true;
    }
    // Upstream -> pipe, while the pipe has room: a full pipe (client not writable)
    // stops reading the upstream, whose window then closes.
    if (c.connected && c.upstream_in && !c.upstream_eof && c.in_pipe < c.pipe_cap &&
        c.upgrade_pending) {
      if (!resolve_upgrade(c)) {
        finish(c, End::BadRequest, now_ns);
        return false;
      }
      if (!c.upgrade_pending) moved = true;
    }
    if (c.resume && c.resume->phase != Conn::Resume::Phase::Body) {
      // A takeover: the upstream's answers to what the relay asked itself.
      if (c.connected && c.upstream_in) {
        switch (resume_read(c)) {
          case Resumed::Failed:
            inc(Counter::resume_failed);
            finish(c, End::UpstreamError, now_ns);
            return false;
          case Resumed::Wait:
            break;
          case Resumed::Again:
          case Resumed::Body:
            moved = true;
            break;
        }
      }
    } else if (c.connected && c.upstream_in && !c.upstream_eof && c.in_pipe < c.pipe_cap &&
               !c.upgrade_pending) {
      size_t room = c.pipe_cap - c.in_pipe;
      Peek look = Peek::Go;
      // Route mode: no further than the end of the responses framed so far (looking
      // at the next head or chunk line when there are none), so that the relay knows
      // when the response before a request that moves is complete. A resumed response
      // was not framed: its length is known.
      if (c.resume) {
        room = size_t(std::min<uint64_t>(room, c.resume->left));
      } else if (c.route && !c.resp.unframed()) {
        if (c.resp.credit() == 0) look = peek_response(c);
        if (!c.resp.unframed()) room = size_t(std::min<uint64_t>(room, c.resp.credit()));
      }
      if (look == Peek::Failed) {
        finish(c, End::UpstreamError, now_ns);
        return false;
      }
      if (look == Peek::Again) moved = true;
      if (look == Peek::Go && room > 0) {
        ssize_t n = splice(c.upstream.get(), nullptr, c.pipe_w.get(), nullptr, room,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          c.in_pipe += size_t(n);
          if (c.resume) {
            c.resume->left -= uint64_t(n);
            if (c.resume->left == 0 && !resume_end(c)) {
              finish(c, End::BadRequest, now_ns);
              return false;
            }
          } else if (c.route && !c.resp.unframed()) {
            c.resp.passed(uint64_t(n));
          }
          moved = true;
        } else if (n == 0 && c.resume) {
          inc(Counter::resume_failed);  // the server closed before the resumed response ended
          finish(c, End::UpstreamError, now_ns);
          return false;
        } else if (n == 0) {
          c.upstream_eof = moved = true;
        } else if (!transient(errno)) {
          finish(c, End::UpstreamError, now_ns);
          return false;
        } else if (c.in_pipe == 0) {
          // With bytes in the pipe, EAGAIN may mean a full pipe rather than an empty
          // socket: only an empty pipe proves the socket has nothing.
          c.upstream_in = false;
        }
      }
    }
    // Pipe -> client.
    if (c.client_out && c.in_pipe > 0) {
      ssize_t n = splice(c.pipe_r.get(), nullptr, c.client.get(), nullptr, c.in_pipe,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        if (size_t(n) < c.in_pipe) c.client_out = false;  // send buffer full, as above
        c.in_pipe -= size_t(n);
        c.sent += uint64_t(n);
        inc(Counter::bytes_to_client, uint64_t(n));
        moved = true;
      } else if (n < 0 && !transient(errno)) {
        finish(c, End::ClientError, now_ns);
        return false;
      } else if (n < 0) {
        c.client_out = false;
      }
    }
    if (c.route && !settle(c, moved, now_ns)) return false;
    // (An answer of the relay's own still to send goes first.)
    if (c.upstream_eof && c.in_pipe == 0 && !c.client_shut && c.reply.empty()) {
      mark_client(c);
      shutdown(c.client.get(), SHUT_WR);
      c.client_shut = true;
    }
    // Route mode: after the server's FIN nothing the client sends can be answered
    // (requests still buffered were not passed on).
    if (c.client_shut && (c.upstream_shut || (c.route && c.upstream_eof))) {
      finish(c, End::Graceful, now_ns);
      return false;
    }
    if (!moved) return true;
    c.last_progress = now_ns;
  }
  again(c);
  return true;
}

// Reads what the client sent into to_upstream (through the X-Forwarded-For framing
// when on), or in route mode into `in`. False when the connection must end:
// c.bad_request says whether for framing or for a socket error.
bool Relays::read_client(Conn& c, bool& moved) {
  if (!c.client_in || c.client_eof || c.upgrade_pending || c.resume) return true;
  // Route mode holds up to a whole head (the parser's limit) unframed.
  const size_t limit =
      c.route ? std::max(opts_.request_buffer, opts_.limits.max_head + 1) : opts_.request_buffer;
  if (c.route ? c.in.size() >= limit : c.pending_upstream() >= limit) return true;
  if (!c.route && c.to_upstream_off) {
    c.to_upstream.erase(0, c.to_upstream_off);
    c.to_upstream_off = 0;
  }
  char buf[16384];
  size_t room = std::min(sizeof buf, limit - (c.route ? c.in.size() : c.to_upstream.size()));
  ssize_t n = recv(c.client.get(), buf, room, MSG_DONTWAIT);
  if (n > 0) {
    if (c.route) {
      c.in.append(buf, size_t(n));
    } else {
      if (c.xff && !feed_client(c, std::string_view(buf, size_t(n)))) return false;
      if (!c.xff) c.to_upstream.append(buf, size_t(n));
    }
    c.received += uint64_t(n);
    moved = true;
    // A short read emptied the receive queue; bytes arriving later raise a new
    // edge. Saves the recv() that would only say EAGAIN (one per request).
    if (size_t(n) < room) c.client_in = false;
  } else if (n == 0) {
    c.client_eof = moved = true;
  } else if (!transient(errno)) {
    return false;
  } else {
    c.client_in = false;
  }
  // The client's FIN was consumed before the handoff: an empty receive queue is EOF.
  if (!c.client_in && c.peer_fin && !c.client_eof) c.client_eof = moved = true;
  return true;
}

// Route mode: moves the complete requests at the front of `in` to to_upstream (with
// the X-Forwarded-For line when on), asking the router about each head first. Stops
// at a head the router sends elsewhere or that the relay answers itself (c.verdict),
// after an upgrade request until its answer is known, while an answer of the relay's
// own is unsent, and when the buffer is full. False when a chunked body cannot be
// framed.
bool Relays::frame_requests(Conn& c) {
  using Req = Conn::Req;
  if (c.to_upstream_off) {
    c.to_upstream.erase(0, c.to_upstream_off);
    c.to_upstream_off = 0;
  }
  while (!c.in.empty() && c.pending_upstream() < opts_.request_buffer) {
    switch (c.req) {
      case Req::Tunnel:  // switched protocols: no longer HTTP
        c.to_upstream += c.in;
        c.in.clear();
        return true;
      case Req::Body: {
        const size_t n = size_t(std::min<uint64_t>(c.body_left, c.in.size()));
        c.to_upstream.append(c.in, 0, n);
        c.in.erase(0, n);
        c.body_left -= n;
        if (!c.body_left) c.req = Req::Head;
        break;
      }
      case Req::Chunked: {
        const http::ParseResult r = c.chunked->feed(c.in);
        if (r.status == http::ParseStatus::Error) {
          spdlog::debug("relay: a chunked request body not framed ({}): connection reset",
                        r.reason);
          return false;
        }
        c.to_upstream.append(c.in, 0, r.consumed);
        c.in.erase(0, r.consumed);
        if (r.status == http::ParseStatus::Complete) {
          c.chunked.reset();
          c.req = Req::Head;
        }
        break;
      }
      case Req::Head: {
        if (c.verdict != RelayRouting::kServe || c.upgrade_wait || !c.reply.empty()) return true;
        http::Request req;
        const http::ParseResult r = http::parse_request(c.in, req, opts_.limits);
        if (r.status == http::ParseStatus::NeedMore) return true;
        if (r.status == http::ParseStatus::Error) {
          // Answered like the FE answers a first request it cannot parse, once every
          // response before it is out; then the connection closes.
          spdlog::debug("relay: request not framed ({} {})", r.http_status, r.reason);
          c.verdict = r.http_status;
          c.verdict_close = true;
          c.verdict_len = 0;
          return true;
        }
        int v = RelayRouting::kServe;
        if (c.serve_next)  // a move refused: this one goes on without routing
          c.serve_next = false;
        else
          v = routing_.route(*c.route, req);
        if (v != RelayRouting::kServe) {
          c.verdict = v;
          // As the built-in server: a request answered here whose body would have to
          // be skipped, or that asks to close, closes the connection after the answer.
          c.verdict_close = !req.keep_alive || req.chunked || req.content_length.value_or(0) > 0;
          c.verdict_len = req.head_len;
          return true;
        }
        pass_head(c, req);
        break;
      }
    }
  }
  return true;
}

// Route mode: the head at the front of `in` goes on (with the X-Forwarded-For line
// before its blank line when on), and the response framer expects its answer.
void Relays::pass_head(Conn& c, const http::Request& req) {
  if (opts_.x_forwarded_for && !c.client_addr.empty()) {
    c.to_upstream.append(c.in, 0, req.head_len - 2);
    c.to_upstream += "X-Forwarded-For: ";
    c.to_upstream += c.client_addr;
    c.to_upstream += "\r\n\r\n";
    inc(Counter::forwarded_for);
  } else {
    c.to_upstream.append(c.in, 0, req.head_len);
  }
  c.resp.expect(req.method == "HEAD");
  ++c.heads_passed;
  c.upgrade_wait = req.upgrade;
  const bool chunked = req.chunked;
  const uint64_t length = req.content_length.value_or(0);
  c.in.erase(0, req.head_len);  // req's views end here
  if (chunked) {
    c.chunked.emplace(opts_.limits);
    c.req = Conn::Req::Chunked;
  } else {
    c.body_left = length;
    c.req = length ? Conn::Req::Body : Conn::Req::Head;
  }
}

// Route mode: looks at the server's next bytes (a response head, a chunk line) when
// the framed ones are all passed on.
Relays::Peek Relays::peek_response(Conn& c) {
  // 16 KiB holds nearly every head; a longer one is looked at again with 64 KiB, the
  // framer's limit (beyond it the stream is unframed).
  const size_t cap = c.peek_big ? 65536 : 16384;
  if (peek_.size() < 65536) peek_.resize(65536);
  const ssize_t n = recv(c.upstream.get(), peek_.data(), cap, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) {
    c.upstream_eof = true;
    return Peek::Again;
  }
  if (n < 0) {
    if (!transient(errno)) return Peek::Failed;
    c.upstream_in = false;
    return Peek::Wait;
  }
  switch (c.resp.feed(std::string_view(peek_.data(), size_t(n)))) {
    case http::ResponseFramer::Step::Framed:
      c.peek_big = false;
      return Peek::Go;
    case http::ResponseFramer::Step::Unframed:
      return Peek::Go;
    case http::ResponseFramer::Step::NeedMore:
      break;
  }
  if (size_t(n) == cap && !c.peek_big) {
    c.peek_big = true;
    return Peek::Again;
  }
  c.upstream_in = false;  // the rest of the head raises a new edge
  return Peek::Wait;
}

// Route mode, after bytes moved: what waits on the responses before it. An upgrade
// request's answer decides whether the client's later bytes are HTTP; a request for
// another back-end leaves with the connection (hand_over) once every response before
// it is out; one the relay answers itself is answered then. False when the connection
// has left or ended.
bool Relays::settle(Conn& c, bool& moved, uint64_t now_ns) {
  constexpr int kServe = RelayRouting::kServe, kMove = RelayRouting::kMove, kHold = kHoldVerdict;
  if (c.upgrade_wait) {
    if (c.resp.switched()) {
      c.upgrade_wait = false;
      c.req = Conn::Req::Tunnel;
      inc(Counter::upgrades);
      moved = true;
    } else if (c.resp.unframed() || c.resp.outstanding() == 0) {
      c.upgrade_wait = false;
      inc(Counter::upgrades_declined);
      moved = true;
    }
  }
  if (c.verdict != kServe && c.verdict != kHold && c.resp.unframed()) {
    // Where the response before this request ends is not known: the connection
    // cannot move, nor can the relay answer in order. Counted once per request.
    if (c.verdict == kMove) inc(Counter::moves_refused);
    if (c.resp.until_close()) {
      // That response ends when the server closes: nothing after it is answered on
      // this connection, and a request passed on now would only be reset by the
      // closing server. It stays unanswered: the client gets the response, then the
      // connection closes (and asks again on a new one, as HTTP has it).
      c.verdict = kHold;
      return true;
    }
    // Switched protocols, or bytes the relay did not ask for: the request goes to
    // our server, as before multi-handoff. One the relay cannot frame goes nowhere.
    if (c.verdict_len == 0) {
      finish(c, End::BadRequest, now_ns);
      return false;
    }
    c.verdict = kServe;
    c.serve_next = moved = true;
    return true;
  }
  const bool quiet =
      c.resp.idle() && c.in_pipe == 0 && (c.pending_upstream() == 0 || c.heads_passed == 0);
  if (c.verdict != kServe && quiet) {
    if (c.verdict == kMove) {
      hand_over(c);
      return false;
    }
    c.close_after_reply = c.verdict_close || c.upstream_eof;
    c.reply = http::simple_reply(c.verdict, c.close_after_reply);
    c.reply_off = 0;
    if (c.close_after_reply)
      c.in.clear();
    else
      c.in.erase(0, c.verdict_len);
    c.verdict = kServe;
    inc(Counter::answered_here);
    moved = true;
  }
  if (!c.reply.empty() && c.client_out) {
    const ssize_t n = send(c.client.get(), c.reply.data() + c.reply_off,
                           c.reply.size() - c.reply_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.reply_off += size_t(n);
      c.sent += uint64_t(n);
      inc(Counter::bytes_to_client, uint64_t(n));
      moved = true;
      if (c.reply_off < c.reply.size()) c.client_out = false;
    } else if (n < 0 && !transient(errno)) {
      finish(c, End::ClientError, now_ns);
      return false;
    } else if (n < 0) {
      c.client_out = false;
    }
    if (c.reply_off == c.reply.size()) {
      c.reply.clear();
      c.reply_off = 0;
      if (c.close_after_reply) {
        finish(c, End::Graceful, now_ns);
        return false;
      }
    }
  }
  return true;
}

namespace {
template <class C>
bool idle_route(const C& c) {
  return c.route && !c.resume && c.verdict == RelayRouting::kServe && c.reply.empty() && c.in.empty() &&
         c.req == C::Req::Head && !c.upgrade_wait && c.resp.idle() && c.in_pipe == 0 &&
         c.pending_upstream() == 0 && !c.client_eof && !c.peer_fin && !c.upstream_eof;
}
}  // namespace

std::vector<HttpConn*> Relays::idle_routes() const {
  std::vector<HttpConn*> out;
  for (auto& [id, c] : conns_)
    if (idle_route(*c)) out.push_back(c->route);
  return out;
}

bool Relays::release(HttpConn& route) {
  for (auto& [id, c] : conns_)
    if (c->route == &route) {
      if (!idle_route(*c)) return false;
      hand_over(*c);
      return true;
    }
  return false;
}

// Route mode: every response before the request at the front of `in` is complete and
// in the client's socket. The server's connection closes (it answered everything it
// was sent: a FIN); the client's socket and the unanswered bytes go to the agent,
// which moves them (or gives them back: adopt()).
void Relays::hand_over(Conn& c) {
  inc(Counter::moved_away);
  c.upstream.reset();  // closing also removes it from the epoll set
  if (c.pipe_r.valid() && spare_pipes_.size() < kSparePipes)
    spare_pipes_.push_back({std::move(c.pipe_r), std::move(c.pipe_w)});
  epoll_ctl(ep_, EPOLL_CTL_DEL, c.client.get(), nullptr);
  UniqueFd client = std::move(c.client);
  std::string bytes = std::move(c.in);
  HttpConn& route = *c.route;
  const bool fin = c.client_eof || c.peer_fin;
  conns_.erase(c.id);  // c is gone
  routing_.move(route, std::move(client), std::move(bytes), fin);
}

// Appends `in` to to_upstream with X-Forwarded-For lines. When an upgrade request
// ends inside `in`, only the bytes up to its end go on; the rest is held until the
// upstream has answered it (resolve_upgrade).
bool Relays::feed_client(Conn& c, std::string_view in) {
  uint64_t heads = c.xff->requests();
  std::optional<http::ForwardedFor> before;
  if (!c.xff->tunnel()) before = *c.xff;  // to find where an upgrade request ends
  size_t out0 = c.to_upstream.size();
  http::ParseResult r = c.xff->feed(in, c.to_upstream);
  if (r.status != http::ParseStatus::Error && before && c.xff->tunnel()) {
    // The framing switched to pass-through inside `in`. Tunnel is final, so the
    // shortest prefix that switches it is found by bisection on copies (upgrade
    // requests are rare; a read is at most 16 KiB).
    size_t lo = 0, hi = in.size();  // not switched after in[0, lo), switched after in[0, hi)
    while (hi - lo > 1) {
      size_t mid = lo + (hi - lo) / 2;
      http::ForwardedFor probe = *before;
      std::string sink;
      probe.feed(in.substr(0, mid), sink);
      (probe.tunnel() ? hi : lo) = mid;
    }
    c.to_upstream.resize(out0);
    c.xff = std::move(before);
    r = c.xff->feed(in.substr(0, hi), c.to_upstream);
    c.held.assign(in.substr(hi));
    c.upgrade_pending = true;
  }
  inc(Counter::forwarded_for, c.xff->requests() - heads);
  if (r.status == http::ParseStatus::Error) {
    spdlog::debug("relay: request {} not framed ({} {}): connection reset", c.xff->requests() + 1,
                  r.http_status, r.reason);
    c.bad_request = true;
    return false;
  }
  return true;
}

// With an upgrade pending, looks at the upstream's next bytes before they are
// spliced: "HTTP/1.x 101" switches the connection to pass-through; anything else
// (another status, or bytes of an earlier response) keeps it HTTP, framed with
// X-Forwarded-For, so that no later request can skip the header by merely asking
// for an upgrade. False when the held bytes cannot be framed.
bool Relays::resolve_upgrade(Conn& c) {
  static constexpr std::string_view kHttp = "HTTP/1.";
  char head[12];
  ssize_t n = recv(c.upstream.get(), head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && transient(errno)) {
    c.upstream_in = false;  // nothing yet: wait for the next edge
    return true;
  }
  std::string_view got(head, n > 0 ? size_t(n) : 0);
  bool prefix = n > 0 && got.substr(0, std::min(got.size(), kHttp.size())) ==
                             kHttp.substr(0, std::min(got.size(), kHttp.size()));
  if (n > 0 && n < ssize_t(sizeof head) && prefix) {
    c.upstream_in = false;  // a status line in pieces: wait for the rest
    return true;
  }
  c.upgrade_pending = false;
  std::string held = std::move(c.held);
  c.held.clear();
  if (n == ssize_t(sizeof head) && prefix && got.substr(8) == " 101") {
    inc(Counter::upgrades);
    c.to_upstream += held;  // the framing is in pass-through already
    return true;
  }
  inc(Counter::upgrades_declined);
  c.xff.emplace(c.client_addr, opts_.limits);
  return held.empty() || feed_client(c, held);
}

void Relays::finish(Conn& c, End how, uint64_t now_ns) {
  int status = how == End::Timeout                                ? 504
               : how == End::Refused || how == End::UpstreamError ? 502
                                                                  : 0;
  bool linger = false;  // the client's socket goes to closing_ (FIN, lingering close)
  switch (how) {
    case End::Graceful:
      linger = true;
      break;
    case End::Idle:  // FIN both ways
      if (c.upstream.valid()) shutdown(c.upstream.get(), SHUT_WR);
      inc(Counter::idle_closed);
      linger = true;
      break;
    case End::Revoked:  // the client socket is in repair mode: closing it is silent
      close_with_reset(c.upstream);
      c.client.reset();
      break;
    case End::ClientError:
    case End::BadRequest:
    case End::SendTimeout:
      // A request the relay cannot frame: the server must not get it without the
      // header, and the responses already under way cannot be followed by a 400
      // whose place in the stream the relay does not know. Both sides are reset.
      inc(how == End::ClientError  ? Counter::client_resets
          : how == End::BadRequest ? Counter::bad_requests
                                   : Counter::send_timeouts);
      close_with_reset(c.upstream);
      mark_client(c);
      close_with_reset(c.client);
      break;
    case End::Refused:
    case End::Timeout:
    case End::UpstreamError:
      inc(how == End::Refused   ? Counter::upstream_refused
          : how == End::Timeout ? Counter::upstream_timeouts
                                : Counter::upstream_resets);
      close_with_reset(c.upstream);
      if (c.sent > 0 || c.client_shut || c.resumed) {
        mark_client(c);
        close_with_reset(c.client);  // mid-response: the client must see it was cut
        break;
      }
      {
        // Nothing was sent yet, so the reply fits the empty send buffer in one call.
        // The lingering close keeps unread request bytes from resetting it away.
        std::string reply = http::simple_reply(status, true);
        ssize_t n = send(c.client.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          c.sent += uint64_t(n);
          inc(Counter::bytes_to_client, uint64_t(n));
        }
        linger = true;
      }
      break;
  }
  if (c.in_pipe == 0 && c.pipe_r.valid() && spare_pipes_.size() < kSparePipes)
    spare_pipes_.push_back({std::move(c.pipe_r), std::move(c.pipe_w)});
  // Closing the sockets also removes them from the epoll set.
  ClosedReport r{c.control_id, c.handoff_id, c.sent, c.received, c.local, c.peer};
  UniqueFd client;
  bool peer_fin = c.client_eof;
  if (linger && c.client.valid()) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.client.get(), nullptr);  // closing_ adds it with its tag
    client = std::move(c.client);
  }
  HttpConn* route = c.route;
  conns_.erase(c.id);
  if (route && routing_.forget) routing_.forget(*route);
  if (client.valid()) {
    if (opts_.mark_done) mark_done(client.get());  // closing_ sends the FIN
    closing_->close(std::move(client), r, peer_fin, now_ns);
  }
  else
    closed_(r);
}

void Relays::revoke(uint64_t control_id, uint64_t handoff_id, uint64_t now_ns) {
  for (auto& [id, c] : conns_) {
    if (c->control_id != control_id || c->handoff_id != handoff_id) continue;
    (void)handoff::enter_repair(c->client.get());
    finish(*c, End::Revoked, now_ns);
    return;
  }
}

size_t Relays::fence(uint64_t now_ns) {
  std::vector<uint64_t> ids;
  for (auto& [id, c] : conns_) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    (void)handoff::enter_repair(it->second->client.get());
    finish(*it->second, End::Revoked, now_ns);
  }
  return ids.size();
}

// Response bytes wait in the pipe for a client that takes none: true once it has
// acknowledged nothing for send_timeout_ns (looked at once a second: TCP_INFO).
bool Relays::stalled_client(Conn& c, uint64_t now_ns) {
  if (!opts_.send_timeout_ns || c.in_pipe == 0 || c.client_out) {
    c.next_ack_check = 0;  // not waiting on the client: start afresh next time
    return false;
  }
  if (now_ns < c.next_ack_check) return false;
  uint64_t acked = tcp_bytes_acked(c.client.get());
  bool first = c.next_ack_check == 0;
  c.next_ack_check = now_ns + kAckCheckNs;
  if (first || acked != c.acked) {
    c.acked = acked;
    c.ack_progress = now_ns;
    return false;
  }
  return now_ns - c.ack_progress > opts_.send_timeout_ns;
}

void Relays::tick(uint64_t now_ns) {
  std::vector<std::pair<uint64_t, End>> due;
  for (auto& [id, c] : conns_) {
    if (!c->connected && now_ns >= c->connect_deadline)
      due.emplace_back(id, End::Timeout);
    else if (now_ns - c->last_progress > opts_.idle_timeout_ns)
      due.emplace_back(id, End::Idle);
    else if (stalled_client(*c, now_ns))
      due.emplace_back(id, End::SendTimeout);
  }
  for (auto [id, how] : due) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    if (how == End::Timeout)
      warn("relay: upstream " + opts_.upstream.text + " did not accept within " +
           std::to_string(opts_.connect_timeout_ns / 1'000'000) + " ms");
    finish(*it->second, how, now_ns);
  }
}

void Relays::mark_client(Conn& c) {
  if (opts_.mark_done && c.client.valid()) mark_done(c.client.get());
}

// Failover takeover: the request at the front of the held bytes, when the client has
// bytes of its response (skip > 0), is asked again as a HEAD with the same header
// fields, whose answer tells its response's length (resume_read). Failed: the client
// has bytes of a request the backup does not hold whole.
Relays::Resumed Relays::resume_next(Conn& c) {
  Conn::Resume& r = *c.resume;
  if (r.skip == 0) return resume_end(c) ? Resumed::Again : Resumed::Failed;
  http::Request req;
  const http::ParseResult p = http::parse_request(r.rest, req, opts_.limits);
  // Only GET and HEAD come here (resume::check_held); one that asks to close would
  // close the upstream connection after the HEAD.
  if (p.status != http::ParseStatus::Complete || (req.method != "GET" && req.method != "HEAD") ||
      !req.keep_alive)
    return Resumed::Failed;
  r.req_len = p.consumed;
  r.head_method = req.method == "HEAD";
  r.ranged = req.header("Range") || req.header("If-Range");
  std::string xff;
  if (opts_.x_forwarded_for && !c.client_addr.empty())
    xff = "X-Forwarded-For: " + c.client_addr + "\r\n";
  c.to_upstream += resume::rewrite_head(std::string_view(r.rest).substr(0, r.req_len), "HEAD", xff);
  r.phase = Conn::Resume::Phase::Learn;
  return Resumed::Again;
}

// Failover takeover: the upstream's answer to the relay's own request, looked at whole
// before anything of it goes to the client. Failed: it cannot be resumed (the client is
// reset: never wrong bytes).
Relays::Resumed Relays::resume_read(Conn& c) {
  using Phase = Conn::Resume::Phase;
  Conn::Resume& r = *c.resume;
  if (peek_.size() < 65536) peek_.resize(65536);
  const ssize_t n = recv(c.upstream.get(), peek_.data(), 65536, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return Resumed::Failed;
  if (n < 0) {
    if (!transient(errno)) return Resumed::Failed;
    c.upstream_in = false;
    return Resumed::Wait;
  }
  resume::ResponseHead h;
  switch (resume::parse_response_head(std::string_view(peek_.data(), size_t(n)), h)) {
    case resume::Parse::Error:
      return Resumed::Failed;
    case resume::Parse::NeedMore:
      c.upstream_in = false;  // the rest raises a new edge
      return Resumed::Wait;
    case resume::Parse::Complete:
      break;
  }
  // Bytes dropped here are ones the client has (or the relay's own HEAD and 206 heads).
  auto consume = [&](size_t len) { return recv(c.upstream.get(), peek_.data(), len, MSG_DONTWAIT) == ssize_t(len); };
  std::string xff;
  if (opts_.x_forwarded_for && !c.client_addr.empty())
    xff = "X-Forwarded-For: " + c.client_addr + "\r\n";
  const std::string_view head = std::string_view(r.rest).substr(0, r.req_len);
  switch (r.phase) {
    case Phase::Learn: {
      if (!consume(h.head_len)) return Resumed::Failed;
      const auto len = resume::response_length(h, r.head_method);
      if (!len) return Resumed::Failed;  // chunked or close-delimited: no offset to resume at
      r.learned = h;
      if (r.skip >= *len) {  // the client has all of it
        r.skip -= *len;
        r.rest.erase(0, r.req_len);
        return resume_next(c);
      }
      if (r.skip < h.head_len) {
        // Inside the head: the same request again, whose head must come out the same.
        c.to_upstream += resume::rewrite_head(head, r.head_method ? "HEAD" : "GET", xff);
        r.phase = Phase::Again;
        return Resumed::Again;
      }
      // Inside the body: the rest of it, only if it is still the same representation.
      const std::string& validator =
          !h.etag.empty() && !h.etag.starts_with("W/") ? h.etag : h.last_modified;
      if (h.status != 200 || r.ranged || validator.empty()) return Resumed::Failed;
      r.body_off = r.skip - h.head_len;
      c.to_upstream += resume::rewrite_head(head, "GET",
                                            xff + "Range: bytes=" + std::to_string(r.body_off) +
                                                "-\r\nIf-Range: " + validator + "\r\n");
      r.phase = Phase::Range;
      return Resumed::Again;
    }
    case Phase::Again:
      if (!resume::same_head(r.learned, h) || !consume(size_t(r.skip))) return Resumed::Failed;
      r.left = *resume::response_length(h, r.head_method) - r.skip;
      break;
    case Phase::Range:
      if (!resume::partial_matches(r.learned, h, r.body_off) || !consume(h.head_len))
        return Resumed::Failed;
      r.left = *h.content_length;
      break;
    case Phase::Body:
      return Resumed::Failed;  // not called then
  }
  r.phase = Phase::Body;
  inc(Counter::resumed);
  return Resumed::Body;
}

// The resumed response is all passed on: the held bytes after it go on as if the
// client had just sent them, and the client's socket is read again. False when they
// cannot be framed (x_forwarded_for).
bool Relays::resume_end(Conn& c) {
  std::string rest = std::move(c.resume->rest);
  rest.erase(0, c.resume->phase == Conn::Resume::Phase::Body ? c.resume->req_len : 0);
  c.resume.reset();
  c.client_in = true;  // bytes may have come meanwhile, without a new edge
  if (rest.empty()) return true;
  if (c.route) {
    c.in.insert(0, rest);
    return true;
  }
  if (c.xff) return feed_client(c, rest);
  c.to_upstream += rest;
  return true;
}

void Relays::for_each(const std::function<void(int fd, uint64_t handoff_id)>& f) const {
  for (const auto& [id, c] : conns_) f(c->client.get(), c->handoff_id);
}

}  // namespace tcpha::be

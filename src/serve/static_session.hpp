#pragma once
// One client connection served by the built-in static server: buffers requests,
// answers them in order with a response head and the file's body (sent from the file
// mapped, or by sendfile() when it fits one pipe: write_pending says why), keeps the
// connection alive when the client asks. Used by the BE for handed-off connections
// and by the FE when it serves a request itself (local node). Socket-level only: the
// caller owns the fd and the epoll registration.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>

#include "common/fd.hpp"
#include "common/mapping.hpp"
#include "http/request.hpp"
#include "serve/file_cache.hpp"

namespace tcpha::serve {

class StaticSession {
 public:
  // What the caller should wait for next. Move: the next request belongs elsewhere
  // (the router said so); it is still buffered (buffered()), no response is under
  // way, and the session waits until the caller moves the connection or calls
  // refuse_next().
  enum class Want { Read, Write, Close, Move };

  // Routes each complete request before it is answered (multi-handoff): kServe to
  // answer it here, kMove to stop before it (Want::Move), or an HTTP status to answer
  // it with that error and keep the connection (404: no rule matches; 503: no member
  // of its group is usable). Without a router every request is served here.
  static constexpr int kServe = 0, kMove = -1;
  using Router = std::function<int(const http::Request&)>;
  void set_router(Router r) { router_ = std::move(r); }
  // Called once per request answered here (not for one that moves), with the status
  // and the bytes the response will have: the access log.
  using Answered = std::function<void(const http::Request&, int status, uint64_t bytes)>;
  void set_on_answer(Answered a) { answered_ = std::move(a); }
  // The bytes read and not answered yet: the request the router wanted moved and
  // whatever was pipelined after it. They travel with the connection.
  std::string& buffered() { return in_; }

  // `cache` (may be null) must outlive the session.
  StaticSession(int docroot_fd, std::string server_name, FileCache* cache = nullptr)
      : docroot_fd_(docroot_fd), server_name_(std::move(server_name)), cache_(cache) {}

  // Bytes already read from the client (the FE's request head) go in first.
  void preload(std::string bytes) { in_ = std::move(bytes); bytes_received_ += in_.size(); }

  // Reads what is available, answers every complete request it can without blocking.
  Want on_readable(int fd);
  // Continues a response that hit EAGAIN, then serves further buffered requests.
  Want on_writable(int fd);

  // The client's FIN came before the bytes now in the socket's receive queue (it was
  // consumed before a handoff, handoff::kStatePeerFin): answer what is queued, then
  // close, as if EOF had been read after it.
  void set_peer_fin() { peer_closed_ = true; }

  // Failover takeover (docs/failover.md): the client already has the first n bytes of
  // the responses to the buffered requests (sent by the back-end that died). They are
  // generated again and not sent; a request whose response is at least partly skipped
  // is answered here without asking the router (it was answered here before).
  void skip_output(uint64_t n) { skip_ = n; }
  // Failover: the socket is marked done (common/net.hpp mark_done) before the FIN of a
  // response that closes the connection, so that the back-end's egress guard lets it out.
  void set_mark_done(bool on) { mark_done_ = on; }
  bool marked_done() const { return marked_done_; }  // it did (the owner need not again)
  uint64_t skipping() const { return skip_; }

  // No response under way and no buffered request bytes: safe to close (drain).
  bool idle() const { return !responding_ && in_.empty(); }
  // Bytes of a request that is not complete yet, and no response under way: what a
  // header timeout measures.
  bool partial_request() const { return !responding_ && !in_.empty(); }
  // Whether the client's FIN has been seen (read, or set_peer_fin()).
  bool peer_closed() const { return peer_closed_; }
  // The last Want::Close came from a failed read or write (reset, EPIPE), not from the
  // end of the conversation: nothing more can be delivered.
  bool failed() const { return failed_; }

  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  uint64_t requests() const { return requests_; }
  uint64_t bad_requests() const { return bad_requests_; }

 private:
  Want serve(int fd);
  enum class Plan { None, Planned, Move };
  Plan plan_next();
  enum class Io { Done, Again, Failed };
  Io write_pending(int fd);
  void apply_skip();

  static constexpr size_t kMaxBuffered = 65536;  // pipelined bytes kept per connection
  static constexpr uint64_t kMapAbove = 65536;     // sendfile()'s pipe: bigger bodies are mapped

  int docroot_fd_;
  std::string server_name_;
  FileCache* cache_;
  Router router_;
  Answered answered_;
  std::shared_ptr<const std::string> cached_;  // body from the cache, when it had it
  Mapping mapped_;  // else the file mapped, when mmap() allowed it (else sendfile())
  std::string in_;
  std::string out_;         // response head (+ small inline body) still to send
  UniqueFd file_;
  off_t file_off_ = 0;
  uint64_t file_left_ = 0;
  uint64_t skip_ = 0;  // skip_output()
  bool mark_done_ = false;
  bool marked_done_ = false;
  bool responding_ = false;
  bool close_after_ = false;
  bool peer_closed_ = false;
  bool failed_ = false;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0, requests_ = 0, bad_requests_ = 0;
};

}  // namespace tcpha::serve

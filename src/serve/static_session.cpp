#include "serve/static_session.hpp"

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/net.hpp"
#include "serve/static_files.hpp"

namespace tcpha::serve {

StaticSession::Want StaticSession::on_readable(int fd) {
  char buf[16384];
  while (in_.size() < kMaxBuffered) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      in_.append(buf, size_t(n));
      bytes_received_ += uint64_t(n);
      continue;
    }
    if (n == 0) {
      peer_closed_ = true;
    } else if (errno != EAGAIN) {
      failed_ = true;
      return Want::Close;
    }
    break;
  }
  return serve(fd);
}

StaticSession::Want StaticSession::on_writable(int fd) { return serve(fd); }

StaticSession::Want StaticSession::serve(int fd) {
  for (;;) {
    if (!responding_) {
      switch (plan_next()) {
        case Plan::None:
          // Nothing complete to answer. A client that closed its side is done; one that
          // filled the buffer without completing a request was answered 431 by the parser.
          return peer_closed_ ? Want::Close : Want::Read;
        case Plan::Move:
          return Want::Move;
        case Plan::Planned:
          break;
      }
    }
    switch (write_pending(fd)) {
      case Io::Again:
        return Want::Write;
      case Io::Failed:
        failed_ = true;
        return Want::Close;
      case Io::Done:
        responding_ = false;
        if (close_after_) {
          if (mark_done_ && !marked_done_) {
            mark_done(fd);
            marked_done_ = true;
          }
          shutdown(fd, SHUT_WR);
          return Want::Close;
        }
        break;
    }
  }
}

StaticSession::Plan StaticSession::plan_next() {
  if (in_.empty()) return Plan::None;
  http::Request req;
  auto r = http::parse_request(in_, req);
  if (r.status == http::ParseStatus::NeedMore) return Plan::None;
  int verdict = kServe;
  if (r.status == http::ParseStatus::Complete && router_ && skip_ == 0) verdict = router_(req);
  if (verdict == kMove) return Plan::Move;
  if (verdict != kServe) {
    // Routed nowhere (404, 503), like the FE answers a first request; the connection
    // stays unless the request has a body we would have to skip or asks to close.
    bool has_body = req.content_length.value_or(0) > 0 || req.chunked;
    close_after_ = has_body || !req.keep_alive;
    out_ = http::simple_reply(verdict, close_after_);
    if (answered_) answered_(req, verdict, out_.size());
    in_.erase(0, r.consumed);
    ++requests_;
  } else if (r.status == http::ParseStatus::Error) {
    ++bad_requests_;
    out_ = http::simple_reply(r.http_status, true);
    if (answered_) answered_(req, r.http_status, out_.size());
    close_after_ = true;
    in_.clear();
  } else {
    // GET and HEAD carry no body; for other methods (answered 405) the connection
    // closes after the reply rather than guessing where their body ends.
    auto reply = plan_static_reply(docroot_fd_, req, server_name_, time(nullptr));
    if (answered_)
      answered_(req, reply.status, reply.head.size() + reply.inline_body.size() + reply.length);
    bool has_body = req.content_length.value_or(0) > 0 || req.chunked;
    in_.erase(0, r.consumed);
    out_ = std::move(reply.head);
    out_ += reply.inline_body;
    file_ = std::move(reply.file);
    file_off_ = reply.offset;
    file_left_ = reply.length;
    cached_.reset();
    struct stat st {};
    if (cache_ && file_left_ > 0 && fstat(file_.get(), &st) == 0) {
      cached_ = cache_->get(file_.get(), st);
      // The file changed since the reply was planned: stream it (and fail cleanly).
      if (cached_ && cached_->size() < uint64_t(file_off_) + file_left_) cached_.reset();
    }
    // Only a body sendfile() would move in pieces is mapped (write_pending says why);
    // a smaller one goes in one piece, and a mapping would cost more than it saves.
    // A mapping that cannot be made leaves the body to sendfile().
    if (!cached_ && file_left_ > kMapAbove)
      mapped_ = Mapping(size_t(uint64_t(file_off_) + file_left_), PROT_READ, MAP_SHARED, file_.get());
    close_after_ = reply.close || has_body;
    ++requests_;
  }
  responding_ = true;
  if (skip_) apply_skip();
  return Plan::Planned;
}

// The response just planned starts with bytes the client has: drop them from the head,
// then from the body (a file offset). The head is generated again: its Date may differ
// from the one sent, but never its length (IMF-fixdate is fixed width).
void StaticSession::apply_skip() {
  const size_t head = size_t(std::min<uint64_t>(skip_, out_.size()));
  out_.erase(0, head);
  skip_ -= head;
  const uint64_t body = std::min<uint64_t>(skip_, file_left_);
  file_off_ += off_t(body);
  file_left_ -= body;
  skip_ -= body;
}

StaticSession::Io StaticSession::write_pending(int fd) {
  while (!out_.empty()) {
    ssize_t n = send(fd, out_.data(), out_.size(),
                     MSG_NOSIGNAL | MSG_DONTWAIT | (file_left_ ? MSG_MORE : 0));
    if (n < 0) return errno == EAGAIN ? Io::Again : Io::Failed;
    out_.erase(0, size_t(n));
    bytes_sent_ += uint64_t(n);
  }
  // A body from memory (the cache, or the file mapped) goes in one send() per wake-up,
  // which queues as much as the socket takes while holding it: the client's ACKs that
  // arrive meanwhile are taken together and the stack sends full-size segments.
  // sendfile() feeds the socket a pipe (64 KiB) at a time and lets go of it between
  // pieces; each ACK then releases a little window at once and the connection settles
  // into trains of one full and one single-MSS packet (a third of all packets of a
  // 1 MB response over IPv6 on the bench): copying from the page cache costs less than
  // those packets do. docs/ipv6.md has the figures.
  const char* mem = cached_ ? cached_->data() : reinterpret_cast<const char*>(mapped_.data());
  const uint64_t mem_size = cached_ ? cached_->size() : mapped_.size();
  while (mem && file_left_ > 0) {
    size_t len = size_t(std::min<uint64_t>(file_left_, mem_size - uint64_t(file_off_)));
    ssize_t n = send(fd, mem + file_off_, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    // EFAULT: the mapped file was truncated under us; the promised length cannot be kept.
    if (n < 0) return errno == EAGAIN ? Io::Again : Io::Failed;
    file_off_ += n;
    file_left_ -= uint64_t(n);
    bytes_sent_ += uint64_t(n);
  }
  while (file_left_ > 0) {
    size_t chunk = size_t(std::min<uint64_t>(file_left_, uint64_t(1) << 30));
    ssize_t n = sendfile(fd, file_.get(), &file_off_, chunk);
    if (n < 0) return errno == EAGAIN ? Io::Again : Io::Failed;
    if (n == 0) return Io::Failed;  // the file shrank: the promised length cannot be kept
    file_left_ -= uint64_t(n);
    bytes_sent_ += uint64_t(n);
  }
  file_.reset();
  cached_.reset();
  mapped_.reset();
  return Io::Done;
}

}  // namespace tcpha::serve

#pragma once
// X-Forwarded-For insertion into a client's request stream, for the back-end relay
// (`x_forwarded_for = true`): every request head on the connection, not only the
// first, gets one more header line naming the client, and nothing else changes.
//
// To find every head, the stream is framed exactly as a server would frame it:
// parse_request() for heads (the same strict parser the FE uses: anything it refuses
// ends the connection, since a head we cannot frame could hide a request that would
// reach the server without the header), Content-Length or ChunkedScanner for bodies.
// After a request asking to switch protocols (Upgrade + Connection: upgrade) the
// rest of the stream is passed through untouched: it may not be HTTP any more.
//
// The header is added as a line of its own before the blank line. A client's own
// X-Forwarded-For lines stay in front of it, so the combined list (RFC 9110 5.3) ends
// with the address the relay saw, which is the entry a server should trust.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/request.hpp"

namespace tcpha::http {

class ForwardedFor {
 public:
  // client: the address to add, e.g. "10.200.0.2".
  explicit ForwardedFor(std::string_view client, const Limits& lim = {});

  // Appends to `out` the bytes of `in` to send on, with the header inserted in each
  // complete head. A head split across calls is held back (at most lim.max_head
  // bytes) until it is complete. NeedMore: all of `in` was taken. Error: the stream
  // cannot be framed; http_status says why (400, 414, 431, 501, 505), and nothing
  // after the bytes already appended may be sent.
  ParseResult feed(std::string_view in, std::string& out);

  uint64_t requests() const { return requests_; }  // heads rewritten so far
  bool tunnel() const { return state_ == State::Tunnel; }

 private:
  enum class State { Head, Body, Chunked, Tunnel, Failed };
  ParseResult fail(const ParseResult& r);

  Limits lim_;
  std::string line_;  // "X-Forwarded-For: <client>\r\n"
  State state_ = State::Head;
  std::string head_;        // bytes of an incomplete head
  uint64_t body_left_ = 0;  // Content-Length bytes still to pass on
  std::optional<ChunkedScanner> chunked_;
  bool upgrade_next_ = false;  // tunnel once the current request's body is passed on
  uint64_t requests_ = 0;
  ParseResult error_{ParseStatus::Error};
};

}  // namespace tcpha::http

#pragma once
// Finds where each response ends in a server's response stream, for the back-end
// relay (multi-handoff in relay mode, docs/relay.md): before a keep-alive connection
// may move to another back-end, the response to the previous request must be
// complete, and the relay splices response bytes without reading them.
//
// The framer therefore only looks at the bytes that carry framing: a response head
// (status line and header fields), a chunk-size line, the CRLF after chunk data, the
// trailer section. Everything else (Content-Length bodies, chunk data) becomes
// credit: bytes the caller may pass on unseen. The caller shows the stream's next
// bytes (e.g. recv with MSG_PEEK) whenever the credit is used up.
//
// A response is framed by the request it answers (RFC 9112 6.3): none after HEAD,
// none for 1xx, 204 and 304; a 1xx other than 101 is followed by the real response;
// then Transfer-Encoding ending in chunked, or Content-Length. A response that ends
// only when the server closes (neither, or another transfer coding), a switch of
// protocols (101), a response nobody asked for, or bytes that are not a response make
// the stream unframed: from then on it is passed through as it comes, and the
// connection cannot move (unframed()).
#include <cstdint>
#include <deque>
#include <string_view>

namespace tcpha::http {

class ResponseFramer {
 public:
  static constexpr uint64_t kUnbounded = UINT64_MAX;

  // max_head: a response head (or trailer section) longer than this is not framed.
  explicit ResponseFramer(size_t max_head = 65536) : max_head_(max_head) {}

  // One more request was passed on to the server; head_method: it was HEAD.
  void expect(bool head_method);

  // Bytes the caller may pass on without showing them (kUnbounded once unframed).
  uint64_t credit() const { return unframed_ ? kUnbounded : walked_ - pos_; }
  // The caller passed n bytes on (n <= credit()).
  void passed(uint64_t n);

  enum class Step {
    Framed,    // credit() > 0: pass that much on, then show the bytes after it
    NeedMore,  // an incomplete head or line: show the stream again once more arrived
    Unframed,  // see above; credit() is kUnbounded from now on
  };
  // Shows the stream's next bytes: the ones after everything credited so far. Call
  // only with credit() == 0; `next` may end anywhere.
  Step feed(std::string_view next);

  bool unframed() const { return unframed_; }
  bool switched() const { return switched_; }  // unframed by a 101 (Switching Protocols)
  // Unframed by a response that ends when the server closes: nothing after it can be
  // answered on this connection.
  bool until_close() const { return until_close_; }
  // Requests whose response has not been passed on completely.
  uint64_t outstanding() const { return expected_ - completed_; }
  // Every response asked for is complete and passed on: the connection may move.
  bool idle() const { return !unframed_ && outstanding() == 0 && walked_ == pos_; }
  uint64_t completed() const { return completed_; }

 private:
  enum class State { Head, ChunkSize, ChunkEnd, Trailers };
  Step unframe(bool switched, bool until_close);
  void response_ends() { ends_.push_back(walked_); }

  size_t max_head_;
  State state_ = State::Head;
  bool unframed_ = false, switched_ = false, until_close_ = false;
  uint64_t pos_ = 0;     // stream bytes passed on
  uint64_t walked_ = 0;  // stream bytes framed (pos_ + credit)
  uint64_t expected_ = 0, completed_ = 0;
  size_t trailer_len_ = 0;
  std::deque<bool> methods_;   // per response not yet framed: its request was HEAD
  std::deque<uint64_t> ends_;  // stream offsets where framed responses end
};

}  // namespace tcpha::http

#include "http/response_framer.hpp"

#include <algorithm>
#include <optional>

#include "http/text.hpp"

namespace tcpha::http {
namespace {

constexpr size_t kMaxChunkLine = 4096;  // chunk size with extensions

struct Head {
  int status = 0;
  std::optional<uint64_t> length;
  bool transfer_coding = false;  // any Transfer-Encoding
  bool chunked = false;          // ... whose last coding is chunked
};

// Status line and the fields that frame the body; false when it is not a response
// head this framer can trust (then the stream is unframed).
bool parse_head(std::string_view h, Head& out) {
  // "HTTP/1.x SSS" then " reason" or nothing.
  if (h.size() < 12 || h.substr(0, 7) != "HTTP/1." || h[7] < '0' || h[7] > '9' || h[8] != ' ')
    return false;
  for (size_t i = 9; i < 12; ++i)
    if (h[i] < '0' || h[i] > '9') return false;
  out.status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  size_t eol = h.find("\r\n");
  if (eol == std::string_view::npos || (eol > 12 && h[12] != ' ')) return false;
  h.remove_prefix(eol + 2);
  while (!h.empty()) {
    eol = h.find("\r\n");
    if (eol == std::string_view::npos) return false;
    std::string_view line = h.substr(0, eol);
    h.remove_prefix(eol + 2);
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    const std::string_view name = line.substr(0, colon), value = trim_ows(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 18) return false;
      uint64_t n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + uint64_t(c - '0');
      }
      if (out.length && *out.length != n) return false;  // conflicting lengths
      out.length = n;
    } else if (iequals(name, "transfer-encoding")) {
      out.transfer_coding = true;
      // The last coding of the (combined) list decides.
      std::string_view last = value;
      if (const size_t comma = value.rfind(','); comma != std::string_view::npos)
        last = trim_ows(value.substr(comma + 1));
      out.chunked = iequals(last, "chunked");
    }
  }
  return true;
}

}  // namespace

void ResponseFramer::expect(bool head_method) {
  ++expected_;
  methods_.push_back(head_method);
}

void ResponseFramer::passed(uint64_t n) {
  pos_ += n;
  while (!ends_.empty() && ends_.front() <= pos_) {
    ends_.pop_front();
    ++completed_;
  }
}

ResponseFramer::Step ResponseFramer::unframe(bool switched, bool until_close) {
  unframed_ = true;
  switched_ = switched;
  until_close_ = until_close;
  return Step::Unframed;
}

ResponseFramer::Step ResponseFramer::feed(std::string_view next) {
  if (unframed_) return Step::Unframed;
  // i: where walked_ lies in `next` (the caller shows the bytes from pos_ == walked_).
  uint64_t i = walked_ - pos_;
  // Bytes that cannot be framed: the responses before them are passed on first, so
  // that the stream becomes unframed exactly where they start.
  bool bad = false, sw = false, cd = false;
  while (i < next.size()) {
    const std::string_view rest = next.substr(size_t(i));
    switch (state_) {
      case State::Head: {
        if (methods_.empty()) {
          bad = true;
          goto out;
        }  // bytes nobody asked for
        const size_t end = rest.substr(0, max_head_).find("\r\n\r\n");
        if (end == std::string_view::npos) {
          if (rest.size() >= max_head_) {
            bad = true;
            goto out;
          }
          // Not a response at all: no need to wait for a blank line that may not come.
          const std::string_view start = rest.substr(0, 7);
          if (start != std::string_view("HTTP/1.").substr(0, start.size())) {
            bad = true;
            goto out;
          }
          goto out;
        }
        Head h;
        if (!parse_head(rest.substr(0, end + 4), h)) {
          bad = true;
          goto out;
        }
        if (h.status == 101) {  // a 101, then the new protocol's bytes
          bad = sw = true;
          goto out;
        }
        const bool interim = h.status < 200;  // the response to the same request follows
        const bool no_body = interim || methods_.front() || h.status == 204 || h.status == 304;
        // Neither a length nor chunked last: the body ends when the server closes.
        if (!no_body && (h.transfer_coding ? !h.chunked : !h.length)) {
          bad = cd = true;
          goto out;
        }
        walked_ += end + 4;
        i += end + 4;
        if (interim) break;
        methods_.pop_front();
        if (no_body) {
          response_ends();
        } else if (h.transfer_coding) {
          state_ = State::ChunkSize;
        } else {
          walked_ += *h.length;
          i += *h.length;
          response_ends();
        }
        break;
      }
      case State::ChunkSize: {
        const size_t eol = rest.substr(0, kMaxChunkLine).find("\r\n");
        if (eol == std::string_view::npos) {
          if (rest.size() >= kMaxChunkLine) {
            bad = true;
            goto out;
          }
          goto out;
        }
        uint64_t size = 0;
        size_t digits = 0;
        while (digits < eol && digits < 15) {
          const char c = rest[digits];
          const int v = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
          if (v < 0) break;
          size = size * 16 + uint64_t(v);
          ++digits;
        }
        // After the digits: the line's end, or whitespace / extensions.
        if (digits == 0 ||
            (digits < eol && rest[digits] != ';' && rest[digits] != ' ' && rest[digits] != '\t')) {
          bad = true;
          goto out;
        }
        walked_ += eol + 2;
        i += eol + 2;
        if (size == 0) {
          state_ = State::Trailers;
          trailer_len_ = 0;
        } else {
          walked_ += size;
          i += size;
          state_ = State::ChunkEnd;
        }
        break;
      }
      case State::ChunkEnd:
        if (rest.size() < 2) {
          if (rest[0] != '\r') {
            bad = true;
            goto out;
          }
          goto out;
        }
        if (rest.substr(0, 2) != "\r\n") {
          bad = true;
          goto out;
        }
        walked_ += 2;
        i += 2;
        state_ = State::ChunkSize;
        break;
      case State::Trailers: {
        const size_t eol = rest.find("\r\n");
        const size_t len = eol == std::string_view::npos ? rest.size() : eol + 2;
        if (trailer_len_ + len > max_head_) {
          bad = true;
          goto out;
        }
        if (eol == std::string_view::npos) goto out;
        trailer_len_ += len;
        walked_ += len;
        i += len;
        if (eol == 0) {  // the blank line: the response is complete
          response_ends();
          state_ = State::Head;
        }
        break;
      }
    }
  }
out:
  if (walked_ > pos_) return Step::Framed;
  return bad ? unframe(sw, cd) : Step::NeedMore;
}

}  // namespace tcpha::http

#pragma once
// Failover in relay mode (issue 13; docs/relay.md, "Failover"): the pure rules a
// backup follows when it takes over a relayed connection whose primary died. The
// client has `skip` bytes of the response to the first held request; the backup learns
// each held response's length from its own upstream (a HEAD with the request's own
// header fields), skips the responses the client has whole, and resumes the one in
// progress: the rest of its head by asking again (the head must come out the same),
// the rest of its body by a Range request validated with If-Range and the 206's
// Content-Range. Only GET and HEAD are ever asked again: anything else may have been
// executed already, and the client is reset instead.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/request.hpp"

namespace tcpha::be::resume {

// What the takeover needs of a response head.
struct ResponseHead {
  int status = 0;
  size_t head_len = 0;  // through the blank line
  std::optional<uint64_t> content_length;
  bool chunked = false;  // a Transfer-Encoding (its end is not known in advance)
  std::string etag, last_modified;
  // Content-Range "bytes first-last/total" (206 only).
  std::optional<uint64_t> range_first, range_last, range_total;
};

enum class Parse { Complete, NeedMore, Error };
// Parses the response head at the front of `s` (a status line "HTTP/1.x NNN ...",
// header fields, a blank line). Error: not a response head, or no end in max_head bytes.
Parse parse_response_head(std::string_view s, ResponseHead& out, size_t max_head = 65536);

// Bytes of the whole response (head and body), or nullopt when its end is not known
// from the head (chunked, or no Content-Length). head_method: it answers a HEAD.
std::optional<uint64_t> response_length(const ResponseHead& h, bool head_method);

// Whether the held client stream may be served again by a backup: 0, or EPERM when a
// complete request in it is not GET or HEAD or carries a body (it may have been
// executed upstream already: never a second time), EPROTO when it cannot be parsed.
// An incomplete request at the end was never passed on: it is served normally later.
int check_held(std::string_view held, const http::Limits& lim = {});

// `head` (a complete request head as the client sent it) with its method replaced and
// `extra` (whole header lines, each ending in CRLF) added before the blank line. Range
// and If-Range lines of the client's are kept (the caller refuses such requests when
// it would add its own).
std::string rewrite_head(std::string_view head, std::string_view method, std::string_view extra);

// The backup's Range answer is the rest of the body the primary was sending: a 206
// whose Content-Range starts at body_off and ends at the learned length, with the same
// validator (ETag, else Last-Modified) as the learned head.
bool partial_matches(const ResponseHead& learned, const ResponseHead& got, uint64_t body_off);

// The backup's answer to the same request again has the same head (Date aside): the
// status, length, validators and head length the learned one has.
bool same_head(const ResponseHead& learned, const ResponseHead& got);

}  // namespace tcpha::be::resume

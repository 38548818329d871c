#include "be/relay_takeover.hpp"

#include <cerrno>
#include <charconv>

#include "http/text.hpp"

namespace tcpha::be::resume {
namespace {

std::optional<uint64_t> number(std::string_view s) {
  uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// "bytes first-last/total"
bool content_range(std::string_view v, ResponseHead& out) {
  if (v.size() < 6 || !http::iequals(v.substr(0, 6), "bytes ")) return false;
  v.remove_prefix(6);
  const size_t dash = v.find('-'), slash = v.find('/');
  if (dash == v.npos || slash == v.npos || slash < dash) return false;
  out.range_first = number(v.substr(0, dash));
  out.range_last = number(v.substr(dash + 1, slash - dash - 1));
  out.range_total = number(v.substr(slash + 1));
  return out.range_first && out.range_last && out.range_total;
}

}  // namespace

Parse parse_response_head(std::string_view s, ResponseHead& out, size_t max_head) {
  out = ResponseHead{};
  const size_t end = s.find("\r\n\r\n");
  if (end == s.npos || end + 4 > max_head) {
    if (s.size() >= max_head) return Parse::Error;
    // Not even the start of a status line: no point waiting.
    constexpr std::string_view kHttp = "HTTP/1.";
    if (s.substr(0, std::min(s.size(), kHttp.size())) != kHttp.substr(0, std::min(s.size(), kHttp.size())))
      return Parse::Error;
    return Parse::NeedMore;
  }
  out.head_len = end + 4;
  std::string_view head = s.substr(0, end + 2);
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  // "HTTP/1.x NNN" then a reason (maybe empty)
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' '))
    return Parse::Error;
  auto code = number(status_line.substr(9, 3));
  if (!code || *code < 100 || *code > 999) return Parse::Error;
  out.status = int(*code);
  head.remove_prefix(eol + 2);
  while (!head.empty()) {
    eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    const size_t colon = line.find(':');
    if (colon == line.npos || colon == 0) return Parse::Error;
    std::string_view name = line.substr(0, colon), value = http::trim_ows(line.substr(colon + 1));
    if (http::iequals(name, "Content-Length")) {
      auto n = number(value);
      // Two different lengths: the framing is ambiguous (RFC 9112 6.3).
      if (!n || (out.content_length && *out.content_length != *n)) return Parse::Error;
      out.content_length = n;
    } else if (http::iequals(name, "Transfer-Encoding")) {
      out.chunked = true;
    } else if (http::iequals(name, "ETag")) {
      out.etag = value;
    } else if (http::iequals(name, "Last-Modified")) {
      out.last_modified = value;
    } else if (http::iequals(name, "Content-Range")) {
      if (!content_range(value, out)) return Parse::Error;
    }
  }
  return Parse::Complete;
}

std::optional<uint64_t> response_length(const ResponseHead& h, bool head_method) {
  if (head_method || h.status == 204 || h.status == 304 || (h.status >= 100 && h.status < 200))
    return h.head_len;
  if (h.chunked || !h.content_length) return std::nullopt;
  return h.head_len + *h.content_length;
}

int check_held(std::string_view held, const http::Limits& lim) {
  while (!held.empty()) {
    http::Request req;
    const http::ParseResult r = http::parse_request(held, req, lim);
    if (r.status == http::ParseStatus::NeedMore) return 0;
    if (r.status == http::ParseStatus::Error) return EPROTO;
    if ((req.method != "GET" && req.method != "HEAD") || req.chunked ||
        req.content_length.value_or(0) > 0 || req.upgrade)
      return EPERM;
    held.remove_prefix(r.consumed);
  }
  return 0;
}

std::string rewrite_head(std::string_view head, std::string_view method, std::string_view extra) {
  const size_t sp = head.find(' ');
  std::string out;
  out.reserve(head.size() + extra.size() + method.size());
  out += method;
  out += head.substr(sp, head.size() - 2 - sp);  // without the blank line's CRLF
  out += extra;
  out += "\r\n";
  return out;
}

bool partial_matches(const ResponseHead& learned, const ResponseHead& got, uint64_t body_off) {
  if (learned.status != 200 || !learned.content_length || got.status != 206 || got.chunked)
    return false;
  const uint64_t total = *learned.content_length;
  if (!got.range_first || *got.range_first != body_off || !got.range_total ||
      *got.range_total != total || !got.range_last || *got.range_last + 1 != total ||
      got.content_length != total - body_off)
    return false;
  // If-Range sent the strong validator when there was one: the 206 must carry it too.
  if (!learned.etag.empty()) return got.etag == learned.etag;
  return !learned.last_modified.empty() && got.last_modified == learned.last_modified;
}

bool same_head(const ResponseHead& learned, const ResponseHead& got) {
  return learned.status == got.status && learned.head_len == got.head_len &&
         learned.content_length == got.content_length && learned.chunked == got.chunked &&
         learned.etag == got.etag && learned.last_modified == got.last_modified;
}

}  // namespace tcpha::be::resume

#include "http/request.hpp"

#include <algorithm>
#include <cstdint>

#include "http/text.hpp"

namespace tcpha::http {
namespace {

// RFC 9110 5.6.2 token characters, as a table: the parser tests every head byte.
constexpr std::array<bool, 256> kTchar = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = is_alpha(c) || is_digit(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  return t;
}();
bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }

// Target: visible ASCII except '#' (a fragment is never sent).
bool is_target_char(char c) { return c > 0x20 && c < 0x7f && c != '#'; }
// Field value: VCHAR, obs-text, SP, HTAB; no other CTL (CR, LF, NUL, DEL...).
bool is_value_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}
// Host: reg-name / IP-literal / IPv4 with an optional port (RFC 3986 3.2.2).
bool is_host_char(char c) {
  return is_alpha(c) || is_digit(c) ||
         std::string_view("-._~!$&'()*+,;=%:[]").find(c) != std::string_view::npos;
}

ParseResult fail(int status, size_t pos, const char* reason) {
  return {ParseStatus::Error, 0, status, pos, reason};
}
// Used inside the parser for "this line is fine so far but unfinished" / "line done".
ParseResult more() { return {ParseStatus::NeedMore}; }
ParseResult ok() { return {ParseStatus::Complete}; }

// Sets path, query and (for absolute-form) the authority; `at` = target offset in buf.
ParseResult classify_target(Request& r, size_t at, std::string_view& authority) {
  std::string_view t = r.target;
  if (t == "*") {
    if (r.method != "OPTIONS") return fail(400, at, "'*' target outside OPTIONS");
    r.path = t;
    return ok();
  }
  if (t.front() != '/') {
    size_t s = 0;
    while (s < t.size() && (is_alpha(t[s]) || (s > 0 && (is_digit(t[s]) || t[s] == '+' ||
                                                         t[s] == '-' || t[s] == '.'))))
      ++s;
    if (t.substr(s, 3) != "://" ||
        !(iequals(t.substr(0, s), "http") || iequals(t.substr(0, s), "https")))
      return fail(400, at, "request target is neither origin-form nor http(s) absolute-form");
    // An empty path means "/" (RFC 9112 3.2.2: "http://h?q" asks for "/?q"). The
    // second slash of "://" is one, and keeps every field a view into the buffer.
    const std::string_view root = t.substr(s + 2, 1);
    t.remove_prefix(s + 3);
    size_t end = t.find_first_of("/?");
    authority = t.substr(0, end);
    if (authority.empty() || !std::all_of(authority.begin(), authority.end(), is_host_char))
      return fail(400, at, "bad authority in absolute-form target");
    t.remove_prefix(std::min(end, t.size()));
    if (t.empty() || t.front() == '?') {
      r.path = root;
      r.query = t.empty() ? t : t.substr(1);
      return ok();
    }
  }
  size_t q = t.find('?');
  r.path = t.substr(0, q);
  r.query = q == std::string_view::npos ? t.substr(t.size()) : t.substr(q + 1);
  return ok();
}

// Checks the request line in buf[start, end) (CRLF excluded). An unfinished line
// (`complete` false) is checked as far as it goes, so garbage is refused early.
ParseResult parse_request_line(std::string_view buf, size_t start, size_t end, bool complete,
                               Request& r, std::string_view& authority) {
  size_t p = start;
  while (p < end && is_tchar(buf[p])) ++p;
  if (p == end) return complete ? fail(400, p, "request line without target") : more();
  if (p == start || buf[p] != ' ') return fail(400, p, "bad method");
  r.method = buf.substr(start, p - start);

  size_t t = ++p;
  while (p < end && is_target_char(buf[p])) ++p;
  if (p == end) return complete ? fail(400, p, "request line without version") : more();
  if (p == t || buf[p] != ' ') return fail(400, p, "bad request target");
  r.target = buf.substr(t, p - t);
  if (auto c = classify_target(r, t, authority); c.status == ParseStatus::Error) return c;

  // "HTTP/" DIGIT "." DIGIT, compared byte by byte so a partial version is judged too.
  constexpr std::string_view kShape = "HTTP/d.d";
  size_t v = ++p;
  for (; p < end; ++p) {
    size_t i = p - v;
    if (i >= kShape.size()) return fail(400, p, "junk after HTTP version");
    if (kShape[i] == 'd' ? !is_digit(buf[p]) : buf[p] != kShape[i])
      return fail(400, p, "bad HTTP version");
  }
  if (!complete) return more();
  if (p - v != kShape.size()) return fail(400, p, "bad HTTP version");
  if (buf[v + 5] != '1' || buf[v + 7] > '1') return fail(505, v, "HTTP version not supported");
  r.version_minor = buf[v + 7] - '0';
  return ok();
}

// Checks one header line in buf[start, end), possibly unfinished, and on completion
// stores it (the caller applies its meaning).
ParseResult parse_header_line(std::string_view buf, size_t start, size_t end, bool complete,
                              Header& h) {
  size_t p = start;
  while (p < end && is_tchar(buf[p])) ++p;
  if (p == end) return complete ? fail(400, p, "header line without colon") : more();
  if (buf[p] != ':')
    return fail(400, p, is_ows(buf[p]) ? "whitespace before colon" : "bad header name");
  if (p == start) return fail(400, p, "empty header name");
  for (size_t q = p + 1; q < end; ++q)
    if (!is_value_char(buf[q])) return fail(400, q, "control character in header value");
  if (!complete) return more();
  h = {buf.substr(start, p - start), trim_ows(buf.substr(p + 1, end - p - 1))};
  return ok();
}

// Per-head state that does not belong in Request.
struct HeadState {
  bool host_seen = false, te_seen = false, conn_close = false, conn_keep_alive = false;
  bool conn_upgrade = false, upgrade_seen = false;
};

ParseResult apply_header(Request& r, HeadState& st, const Header& h, size_t pos) {
  if (iequals(h.name, "host")) {
    if (st.host_seen) return fail(400, pos, "duplicate Host");
    if (!std::all_of(h.value.begin(), h.value.end(), is_host_char))
      return fail(400, pos, "bad Host");
    st.host_seen = true;
    r.host = h.value;
  } else if (iequals(h.name, "content-length")) {
    // Duplicates are refused even when equal: two framings are a smuggling signal.
    if (r.content_length) return fail(400, pos, "duplicate Content-Length");
    if (st.te_seen) return fail(400, pos, "Content-Length with Transfer-Encoding");
    if (h.value.empty()) return fail(400, pos, "empty Content-Length");
    uint64_t n = 0;
    for (char c : h.value) {
      if (!is_digit(c)) return fail(400, pos, "bad Content-Length");
      if (n > (uint64_t{INT64_MAX} - (c - '0')) / 10)
        return fail(400, pos, "Content-Length overflow");
      n = n * 10 + (c - '0');
    }
    r.content_length = n;
  } else if (iequals(h.name, "transfer-encoding")) {
    if (r.version_minor == 0) return fail(400, pos, "Transfer-Encoding in HTTP/1.0");
    if (r.content_length) return fail(400, pos, "Transfer-Encoding with Content-Length");
    if (st.te_seen || !iequals(h.value, "chunked"))
      return fail(501, pos, "unsupported Transfer-Encoding");
    st.te_seen = true;
    r.chunked = true;
  } else if (iequals(h.name, "connection")) {
    for (std::string_view v = h.value; !v.empty();) {
      size_t comma = v.find(',');
      std::string_view opt = trim_ows(v.substr(0, comma));
      st.conn_close |= iequals(opt, "close");
      st.conn_keep_alive |= iequals(opt, "keep-alive");
      st.conn_upgrade |= iequals(opt, "upgrade");
      v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    }
  } else if (iequals(h.name, "upgrade")) {
    st.upgrade_seen = true;
  }
  return ok();
}

// A line of the head: [pos, end) without its CRLF. A line cut short by a bare LF
// (end = the LF) is judged like an unfinished one first, so an earlier bad byte is
// reported at the same place whether or not the LF has arrived yet.
struct Line {
  size_t end;
  bool complete, bare_lf;
};

Line find_line(std::string_view view, size_t pos) {
  size_t lf = view.find('\n', pos);
  if (lf == std::string_view::npos) {
    size_t end = view.size();
    if (end > pos && view[end - 1] == '\r') --end;  // its LF may be next
    return {end, false, false};
  }
  if (lf == pos || view[lf - 1] != '\r') return {lf, false, true};
  return {lf - 1, true, false};
}

// The verdict on a line's content, or "bare LF" when the content is fine so far.
ParseResult line_verdict(const ParseResult& content, const Line& ln) {
  if (content.status == ParseStatus::NeedMore && ln.bare_lf) return fail(400, ln.end, "bare LF");
  return content;
}

ParseResult parse_head(std::string_view buf, std::string_view view, Request& r, const Limits& lim) {
  size_t pos = 0;
  // RFC 9112 2.2: ignore empty lines before the request line (left over after a body).
  while (pos < view.size() && view[pos] == '\r') {
    if (pos + 1 == view.size()) return more();
    if (view[pos + 1] != '\n') return fail(400, pos, "bare CR");
    pos += 2;
  }
  if (pos == view.size()) return more();
  if (view[pos] == '\n') return fail(400, pos, "bare LF");

  std::string_view authority;
  Line ln = find_line(view, pos);
  if (ln.end - pos > lim.max_request_line) {
    // Judge the part within the limit first, so garbage gets 400 whatever its length.
    auto c = parse_request_line(buf, pos, pos + lim.max_request_line, false, r, authority);
    return c.status == ParseStatus::Error
               ? c
               : fail(414, pos + lim.max_request_line, "request line too long");
  }
  auto c = line_verdict(parse_request_line(buf, pos, ln.end, ln.complete, r, authority), ln);
  if (c.status != ParseStatus::Complete) return c;
  pos = ln.end + 2;

  HeadState st;
  const size_t max_headers = std::min(lim.max_headers, r.headers.size());
  for (;;) {
    if (pos == view.size()) return more();
    if (view[pos] == '\r') {
      if (pos + 1 == view.size()) return more();
      if (view[pos + 1] != '\n') return fail(400, pos, "bare CR");
      r.head_len = pos + 2;
      break;
    }
    if (is_ows(view[pos])) return fail(400, pos, "obsolete line folding");
    if (r.header_count == max_headers) return fail(431, pos, "too many headers");
    ln = find_line(view, pos);
    Header& h = r.headers[r.header_count];
    c = line_verdict(parse_header_line(buf, pos, ln.end, ln.complete, h), ln);
    if (c.status != ParseStatus::Complete) return c;
    if (auto a = apply_header(r, st, h, pos); a.status == ParseStatus::Error) return a;
    ++r.header_count;
    pos = ln.end + 2;
  }

  if (r.version_minor == 1 && !st.host_seen) return fail(400, pos, "HTTP/1.1 request without Host");
  if (!authority.empty()) r.host = authority;
  r.keep_alive = !st.conn_close && (r.version_minor == 1 || st.conn_keep_alive);
  r.upgrade = st.conn_upgrade && st.upgrade_seen;
  return {ParseStatus::Complete, r.head_len};
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (size_t i = 0; i < header_count; ++i)
    if (iequals(headers[i].name, name)) return headers[i].value;
  return std::nullopt;
}

std::optional<std::string_view> Request::cookie(std::string_view name) const {
  for (size_t i = 0; i < header_count; ++i) {
    if (!iequals(headers[i].name, "cookie")) continue;
    // cookie-string = cookie-pair *( ";" SP cookie-pair ), tolerant of missing spaces.
    for (std::string_view v = headers[i].value; !v.empty();) {
      size_t semi = v.find(';');
      std::string_view pair = trim_ows(v.substr(0, semi));
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && trim_ows(pair.substr(0, eq)) == name)
        return trim_ows(pair.substr(eq + 1));
      v = semi == std::string_view::npos ? std::string_view() : v.substr(semi + 1);
    }
  }
  return std::nullopt;
}

ParseResult parse_request(std::string_view buf, Request& out, const Limits& lim) {
  out.method = out.target = out.path = out.query = out.host = {};
  out.version_minor = 1;
  out.header_count = 0;
  out.content_length.reset();
  out.chunked = false;
  out.keep_alive = true;
  out.upgrade = false;
  out.head_len = 0;

  // Only the first max_head bytes can hold a valid head; judging just those keeps the
  // verdict for a longer buffer consistent with the verdict for its prefixes.
  std::string_view view = buf.substr(0, std::min(buf.size(), lim.max_head));
  ParseResult r = parse_head(buf, view, out, lim);
  if (r.status == ParseStatus::NeedMore && buf.size() > lim.max_head)
    return fail(431, lim.max_head, "request head too large");
  return r;
}

std::optional<uint64_t> request_length(const Request& req) {
  if (req.chunked) return std::nullopt;
  return req.head_len + req.content_length.value_or(0);
}

ChunkedScanner::ChunkedScanner(const Limits& lim)
    : max_line_(lim.max_request_line), max_trailers_(lim.max_head) {}

ParseResult ChunkedScanner::fail(int status, size_t pos, const char* reason) {
  state_ = State::Failed;
  error_ = http::fail(status, scanned_ + pos, reason);
  return error_;
}

ParseResult ChunkedScanner::feed(std::string_view data) {
  if (state_ == State::Done) return {ParseStatus::Complete, 0};
  if (state_ == State::Failed) return error_;
  for (size_t i = 0; i < data.size(); ++i) {
    const char c = data[i];
    if (state_ >= State::TrailerStart && ++trailer_len_ > max_trailers_)
      return fail(431, i, "trailer section too large");
    if ((state_ == State::Size || state_ == State::SizeBws || state_ == State::Ext) &&
        ++line_len_ > max_line_)
      return fail(400, i, "chunk-size line too long");
    switch (state_) {
      case State::Size:
        if (auto u = static_cast<unsigned char>(c);
            is_digit(u) || ((u | 0x20) >= 'a' && (u | 0x20) <= 'f')) {
          if (chunk_ > (uint64_t{INT64_MAX} >> 4)) return fail(400, i, "chunk size overflow");
          chunk_ = chunk_ * 16 + (is_digit(u) ? u - '0' : (u | 0x20) - 'a' + 10);
          ++digits_;
          continue;
        }
        if (digits_ == 0) return fail(400, i, "bad chunk size");
        if (c == '\r')
          state_ = State::SizeLf;
        else if (c == ';')
          state_ = State::Ext;
        else if (is_ows(c))
          state_ = State::SizeBws;
        else
          return fail(400, i, "bad chunk size");
        break;
      case State::SizeBws:  // RFC 9112 7.1.1: BWS allowed only before ';'
        if (c == ';')
          state_ = State::Ext;
        else if (!is_ows(c))
          return fail(400, i, "bad chunk extension");
        break;
      case State::Ext:
        if (c == '\r')
          state_ = State::SizeLf;
        else if (!is_value_char(c))
          return fail(400, i, "control character in chunk extension");
        break;
      case State::SizeLf:
        if (c != '\n') return fail(400, i, "bare CR after chunk size");
        state_ = chunk_ == 0 ? State::TrailerStart : State::Data;
        break;
      case State::Data: {
        uint64_t take = std::min<uint64_t>(chunk_, data.size() - i);
        chunk_ -= take;
        i += take - 1;
        if (chunk_ == 0) state_ = State::DataCr;
        break;
      }
      case State::DataCr:
        if (c != '\r') return fail(400, i, "chunk data longer than its size");
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (c != '\n') return fail(400, i, "bare CR after chunk data");
        state_ = State::Size;
        digits_ = line_len_ = 0;
        break;
      case State::TrailerStart:
        if (c == '\r')
          state_ = State::FinalLf;
        else if (is_tchar(c))
          state_ = State::TrailerName;
        else
          return fail(400, i, is_ows(c) ? "obsolete line folding in trailer" : "bad trailer field");
        break;
      case State::TrailerName:
        if (c == ':')
          state_ = State::TrailerValue;
        else if (!is_tchar(c))
          return fail(400, i, "bad trailer field name");
        break;
      case State::TrailerValue:
        if (c == '\r')
          state_ = State::TrailerLf;
        else if (!is_value_char(c))
          return fail(400, i, "control character in trailer field");
        break;
      case State::TrailerLf:
        if (c != '\n') return fail(400, i, "bare CR in trailer");
        state_ = State::TrailerStart;
        break;
      case State::FinalLf:
        if (c != '\n') return fail(400, i, "bare CR at end of body");
        state_ = State::Done;
        scanned_ += i + 1;
        return {ParseStatus::Complete, i + 1};
      case State::Done:
      case State::Failed:
        break;  // unreachable: handled before the loop
    }
  }
  scanned_ += data.size();
  return {ParseStatus::NeedMore, data.size()};
}

}  // namespace tcpha::http

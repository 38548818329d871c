#include "serve/static_files.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>

#include "http/text.hpp"

namespace tcpha::serve {

using http::format_http_date;
using http::iequals;
using http::is_digit;
using http::is_ows;
using http::parse_http_date;
using http::reason_phrase;
using http::Request;
using http::trim_ows;

namespace {

struct Ctx {
  const Request& req;
  std::string_view server;
  time_t now;
};

std::string start_head(const Ctx& c, int status) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  if (!c.server.empty()) h.append("Server: ").append(c.server).append("\r\n");
  h += "Date: " + format_http_date(c.now) + "\r\n";
  return h;
}

void finish_head(const Ctx& c, StaticReply& r) {
  if (!c.req.keep_alive) {
    r.head += "Connection: close\r\n";
    r.close = true;
  } else if (c.req.version_minor == 0) {
    r.head += "Connection: keep-alive\r\n";  // HTTP/1.0 closes unless told otherwise
  }
  r.head += "\r\n";
}

// A reply with a short text body; `extra` holds ready-made header lines.
StaticReply text_reply(const Ctx& c, int status, std::string_view extra = {}) {
  StaticReply r;
  r.status = status;
  std::string body = std::to_string(status) + " " + reason_phrase(status) + "\n";
  r.head = start_head(c, status);
  r.head.append(extra);
  r.head += "Content-Type: text/plain; charset=utf-8\r\n";
  r.head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (c.req.method != "HEAD") r.inline_body = std::move(body);
  finish_head(c, r);
  return r;
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
  return -1;
}

// nullopt for a bad %xx escape or a decoded NUL (which would cut the file name short).
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

enum class Segments { Plain, DotSegment, Hidden };

// A ".." segment is malformed (clients remove dot segments); "." is harmless and
// ignored. Any other segment that starts with '.' names a hidden file (.git, .env,
// .htpasswd), which a docroot often holds by accident and which is never published.
// /.well-known/ (RFC 8615) is the exception: it exists to be fetched.
Segments classify_segments(std::string_view path) {
  Segments verdict = Segments::Plain;
  bool first = true;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = std::min(path.find('/', start), path.size());
    std::string_view seg = path.substr(start, slash - start);
    start = slash + 1;
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") return Segments::DotSegment;
    if (seg.front() == '.' && !(first && seg == ".well-known")) verdict = Segments::Hidden;
    first = false;
  }
  return verdict;
}

// The Location of the trailing-slash redirect for `raw_path` (as sent, percent-encoded).
// It must stay a path on this server: "//evil.example/" (or "/\evil.example/", which
// browsers read the same way) would be a protocol-relative URL, an open redirect. So
// leading slashes collapse to one and a backslash is sent encoded.
std::string directory_location(std::string_view raw_path, std::string_view query) {
  std::string loc = "/";
  for (char ch : raw_path.substr(std::min(raw_path.find_first_not_of('/'), raw_path.size()))) {
    if (ch == '\\')
      loc += "%5C";
    else
      loc += ch;
  }
  loc += '/';
  if (!query.empty()) loc.append("?").append(query);
  return loc;
}

// Opens `rel` strictly beneath the docroot; 0 or an errno.
int open_beneath(int dirfd, const std::string& rel, UniqueFd& out) {
  open_how how = {};
  // O_NONBLOCK: opening a FIFO must not block the event loop (it is refused later).
  how.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a concurrent rename or mount raced the ".." check; the kernel asks to retry.
  for (int attempt = 0; attempt < 4; ++attempt) {
    long fd = syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how);
    if (fd >= 0) {
      out.reset(static_cast<int>(fd));
      return 0;
    }
    if (errno != EAGAIN) return errno;
  }
  return EAGAIN;
}

int status_for_errno(int e) {
  switch (e) {
    case ENOENT:
    case ENOTDIR:
      return 404;
    case EACCES:
    case EPERM:
    case EXDEV:  // a symlink or ".." leading out of the docroot
    case ELOOP:
      return 403;
    case ENAMETOOLONG:
      return 414;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EAGAIN:
      return 503;
    default:
      return 500;
  }
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c) || v > (UINT64_MAX - (c - '0')) / 10) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

enum class RangeKind { Ignore, Satisfiable, Unsatisfiable };

// One "bytes=" range (RFC 9110 14.1.2) against a file of `size` bytes.
RangeKind parse_range(std::string_view v, uint64_t size, uint64_t& first, uint64_t& len) {
  if (v.size() < 6 || !iequals(v.substr(0, 6), "bytes=")) return RangeKind::Ignore;
  v = trim_ows(v.substr(6));
  size_t dash = v.find('-');
  if (dash == std::string_view::npos || v.find(',') != std::string_view::npos)
    return RangeKind::Ignore;
  std::string_view a = v.substr(0, dash), b = v.substr(dash + 1);
  if (a.empty()) {  // "-n": the last n bytes
    auto n = parse_u64(b);
    if (!n) return RangeKind::Ignore;
    if (*n == 0 || size == 0) return RangeKind::Unsatisfiable;
    len = std::min(*n, size);
    first = size - len;
    return RangeKind::Satisfiable;
  }
  auto lo = parse_u64(a);
  auto hi = b.empty() ? std::optional<uint64_t>(UINT64_MAX) : parse_u64(b);
  if (!lo || !hi || *hi < *lo) return RangeKind::Ignore;
  if (*lo >= size) return RangeKind::Unsatisfiable;
  first = *lo;
  len = std::min(*hi, size - 1) - first + 1;
  return RangeKind::Satisfiable;
}

// If-None-Match with weak comparison (RFC 9110 13.1.2); a malformed list matches nothing.
bool etag_list_matches(std::string_view list, std::string_view etag) {
  if (trim_ows(list) == "*") return true;
  for (size_t i = 0; i < list.size();) {
    if (list[i] == ',' || is_ows(list[i])) {
      ++i;
      continue;
    }
    if (list.substr(i, 2) == "W/") i += 2;
    if (i >= list.size() || list[i] != '"') return false;
    size_t close = list.find('"', i + 1);
    if (close == std::string_view::npos) return false;
    if (list.substr(i, close - i + 1) == etag) return true;
    i = close + 1;
  }
  return false;
}

// If-Range (RFC 9110 13.1.5): the range applies only while the validator still
// matches strongly; a weak ETag never does.
bool if_range_allows(const Request& req, std::string_view etag, std::string_view last_modified) {
  auto v = req.header("If-Range");
  if (!v) return true;
  std::string_view s = trim_ows(*v);
  return s.starts_with('"') ? s == etag : s == last_modified;
}

std::string hex(uint64_t v) {
  char buf[17];
  int n = 0;
  do buf[16 - n++] = "0123456789abcdef"[v & 15];
  while ((v >>= 4) != 0);
  return std::string(buf + 17 - n, n);
}

}  // namespace

std::string_view content_type_for(std::string_view name) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"json", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"svg", "image/svg+xml"},
      {"ico", "image/x-icon"},
      {"pdf", "application/pdf"},
  };
  size_t dot = name.rfind('.');
  if (dot != std::string_view::npos && name.find('/', dot) == std::string_view::npos) {
    std::string_view ext = name.substr(dot + 1);
    for (const auto& [e, type] : kTypes)
      if (iequals(ext, e)) return type;
  }
  return "application/octet-stream";
}

StaticReply plan_static_reply(int docroot_fd, const Request& req, std::string_view server_name,
                              time_t now) {
  const Ctx c{req, server_name, now};
  if (req.method != "GET" && req.method != "HEAD")
    return text_reply(c, 405, "Allow: GET, HEAD\r\n");

  auto path = percent_decode(req.path);
  if (!path || !path->starts_with('/')) return text_reply(c, 400);
  switch (classify_segments(*path)) {
    case Segments::Plain:
      break;
    case Segments::DotSegment:
      return text_reply(c, 400);
    case Segments::Hidden:
      return text_reply(c, 404);  // as if absent: existence is not confirmed either
  }
  size_t first_char = path->find_first_not_of('/');
  std::string rel = first_char == std::string::npos ? "." : path->substr(first_char);

  UniqueFd fd;
  struct stat st;
  if (int e = open_beneath(docroot_fd, rel, fd)) return text_reply(c, status_for_errno(e));
  if (fstat(fd.get(), &st) != 0) return text_reply(c, 500);
  if (S_ISDIR(st.st_mode)) {
    if (!path->ends_with('/')) {
      return text_reply(c, 301, "Location: " + directory_location(req.path, req.query) + "\r\n");
    }
    rel = (rel == "." ? "" : rel) + "index.html";
    if (int e = open_beneath(docroot_fd, rel, fd)) return text_reply(c, status_for_errno(e));
    if (fstat(fd.get(), &st) != 0) return text_reply(c, 500);
    if (S_ISDIR(st.st_mode)) return text_reply(c, 404);
  }
  if (!S_ISREG(st.st_mode)) return text_reply(c, 403);

  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // RFC 9110 8.8.2.1: never claim a modification time in the future.
  const std::string last_modified = format_http_date(std::min<time_t>(st.st_mtim.tv_sec, now));
  // Appended piece by piece: GCC 12 at -O3 reports a false -Wrestrict overlap for
  // `"\"" + hex(...) + ...` (operator+(const char*, string&&) inlined into insert()).
  std::string etag = "\"";
  etag.append(hex(static_cast<uint64_t>(st.st_mtim.tv_sec))).append("-").append(hex(size));
  etag += '"';
  const std::string validators = "Last-Modified: " + last_modified + "\r\nETag: " + etag + "\r\n";

  bool not_modified = false;
  if (auto inm = req.header("If-None-Match")) {
    not_modified = etag_list_matches(*inm, etag);
  } else if (auto ims = req.header("If-Modified-Since")) {
    auto t = parse_http_date(trim_ows(*ims));
    // A date in the future is invalid (RFC 9110 13.1.3) and ignored.
    not_modified = t && *t <= now && std::min<time_t>(st.st_mtim.tv_sec, now) <= *t;
  }
  if (not_modified) {
    StaticReply r;
    r.status = 304;
    r.head = start_head(c, 304) + validators;
    finish_head(c, r);
    return r;
  }

  int status = 200;
  uint64_t first = 0, len = size;
  if (auto range = req.header("Range");
      range && req.method == "GET" && if_range_allows(req, etag, last_modified)) {
    switch (parse_range(trim_ows(*range), size, first, len)) {
      case RangeKind::Ignore:
        break;
      case RangeKind::Satisfiable:
        status = 206;
        break;
      case RangeKind::Unsatisfiable:
        return text_reply(c, 416, "Content-Range: bytes */" + std::to_string(size) + "\r\n");
    }
  }

  StaticReply r;
  r.status = status;
  r.head = start_head(c, status);
  r.head.append("Content-Type: ").append(content_type_for(rel)).append("\r\n");
  r.head += "Content-Length: " + std::to_string(len) + "\r\n";
  if (status == 206)
    r.head += "Content-Range: bytes " + std::to_string(first) + "-" +
              std::to_string(first + len - 1) + "/" + std::to_string(size) + "\r\n";
  r.head += validators;
  r.head += "Accept-Ranges: bytes\r\n";
  finish_head(c, r);
  if (req.method == "GET" && len > 0) {
    r.file = std::move(fd);
    r.offset = static_cast<off_t>(first);
    r.length = len;
  }
  return r;
}

}  // namespace tcpha::serve

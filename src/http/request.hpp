#pragma once
// Strict, incremental HTTP/1.x request-head parser for untrusted bytes (RFC 9112).
//
// parse_request() re-reads the buffer from its start on every call (heads are small)
// and answers Complete, NeedMore or Error. Every limit is enforced on partial input
// too, so a caller that keeps reading while it gets NeedMore never buffers more than
// Limits::max_head bytes. Malformed input is refused as soon as the offending byte
// arrives. The parser allocates nothing: the Request holds string_views into the
// caller's buffer and a fixed array of headers.
//
// Deliberate strictness (refusing is safer than guessing on a load balancer that
// routes by these fields and hands the bytes to another server):
//  - lines end with CRLF; a bare LF or bare CR anywhere in the head -> 400;
//  - empty lines (CRLF) before the request line are skipped (RFC 9112 2.2) and are
//    counted in head_len;
//  - the target is visible ASCII except '#'; raw bytes >= 0x80 -> 400;
//  - absolute-form targets are http(s)://authority[/path][?query] with no userinfo; an
//    empty path means "/" (RFC 9112 3.2.2), and the authority is the request's host;
//    CONNECT's authority-form is not supported (400);
//  - a repeated Transfer-Encoding header is treated as the list "chunked, chunked",
//    i.e. as a coding other than exactly "chunked" -> 501;
//  - Content-Length above INT64_MAX counts as overflow -> 400 (so head_len + body
//    length always fits in uint64_t and in off_t).
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tcpha::http {

struct Limits {
  size_t max_request_line = 8192;  // request line without its CRLF -> else 414
  size_t max_head = 16384;         // whole head including the final CRLFCRLF -> else 431
  size_t max_headers = 100;        // header lines (capped at Request::headers.size()) -> else 431
};

struct Header {
  std::string_view name, value;  // value with surrounding whitespace trimmed
};

// Fields are meaningful only after a Complete parse.
struct Request {
  std::string_view method, target;
  std::string_view path;   // target before '?'; for absolute-form, the path part only
                           // ("/" when empty: then the second slash of "://")
  std::string_view query;  // after '?', may be empty
  int version_minor = 1;   // HTTP/1.0 or HTTP/1.1 only
  // The Host header's value (required once for 1.1). For an absolute-form target it is
  // the target's authority instead, which RFC 9112 3.2.2 says takes precedence.
  std::string_view host;
  std::array<Header, 100> headers;
  size_t header_count = 0;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = true;  // 1.1: unless "Connection: close"; 1.0: only with "keep-alive"
  bool upgrade = false;    // asks to switch protocols: Upgrade + "Connection: upgrade"
  size_t head_len = 0;     // bytes of the head including the final CRLFCRLF

  // First header with this name, compared case-insensitively.
  std::optional<std::string_view> header(std::string_view name) const;
  // Value of the first cookie with this (case-sensitive) name across all Cookie headers,
  // as sent (quotes included, if any).
  std::optional<std::string_view> cookie(std::string_view name) const;
};

enum class ParseStatus { Complete, NeedMore, Error };

struct ParseResult {
  ParseStatus status;
  size_t consumed = 0;      // head_len when Complete, else 0
  int http_status = 0;      // on Error: 400, 414, 431, 501 or 505
  size_t error_pos = 0;     // offset of the offending byte (or of the limit) in the input
  const char* reason = "";  // static text for logs
};

ParseResult parse_request(std::string_view buf, Request& out, const Limits& lim = {});

// Bytes of the whole request (head + body) once its head is parsed: head_len plus
// Content-Length (0 when absent: requests have no implicit body), or nullopt for a
// chunked body, whose end only ChunkedScanner can find.
std::optional<uint64_t> request_length(const Request& req);

// Finds where a chunked request body ends, fed the bytes after the head piece by piece,
// so a keep-alive connection's next request can be located. It only scans: chunk data
// is skipped, never copied. Chunk extensions and trailer fields are syntax-checked.
class ChunkedScanner {
 public:
  // max_request_line bounds one chunk-size line (with extensions, -> 400);
  // max_head bounds the trailer section (-> 431).
  explicit ChunkedScanner(const Limits& lim = {});

  // NeedMore: all of `data` belongs to the body and more is needed (consumed = size).
  // Complete: the body ends after `consumed` bytes of `data`; the rest is the next
  // request. Error: malformed; error_pos counts from the start of the body. Once
  // Complete or Error, later calls repeat the verdict and consume nothing.
  ParseResult feed(std::string_view data);

  uint64_t scanned() const { return scanned_; }  // body bytes consumed so far

 private:
  // Declaration order matters: states from TrailerStart on count toward max_trailers_.
  enum class State : uint8_t {
    Size,
    SizeBws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed
  };
  ParseResult fail(int status, size_t pos, const char* reason);

  size_t max_line_, max_trailers_;
  State state_ = State::Size;
  uint64_t chunk_ = 0;  // chunk size while reading it, then data bytes still to skip
  size_t digits_ = 0, line_len_ = 0, trailer_len_ = 0;
  uint64_t scanned_ = 0;
  ParseResult error_{ParseStatus::Error};
};

}  // namespace tcpha::http

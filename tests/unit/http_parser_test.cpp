#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "http/request.hpp"

namespace tcpha::http {
namespace {

using namespace std::string_literals;

const std::string kGet =
    "GET /index.html?a=1&b=2 HTTP/1.1\r\n"
    "Host: example.com:8080\r\n"
    "User-Agent: curl/7.88\r\n"
    "Accept: */*\r\n"
    "\r\n";

ParseResult parse(std::string_view s, Request& r, const Limits& lim = {}) {
  return parse_request(s, r, lim);
}

TEST(HttpParser, SimpleGet) {
  Request r;
  auto res = parse(kGet, r);
  ASSERT_EQ(res.status, ParseStatus::Complete) << res.reason;
  EXPECT_EQ(res.consumed, kGet.size());
  EXPECT_EQ(r.head_len, kGet.size());
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/index.html?a=1&b=2");
  EXPECT_EQ(r.path, "/index.html");
  EXPECT_EQ(r.query, "a=1&b=2");
  EXPECT_EQ(r.version_minor, 1);
  EXPECT_EQ(r.host, "example.com:8080");
  ASSERT_EQ(r.header_count, 3u);
  EXPECT_EQ(r.headers[1].name, "User-Agent");
  EXPECT_EQ(r.headers[1].value, "curl/7.88");
  EXPECT_FALSE(r.content_length);
  EXPECT_FALSE(r.chunked);
  EXPECT_TRUE(r.keep_alive);
  EXPECT_EQ(request_length(r), kGet.size());
}

// Valid heads of several shapes; each must parse the same whatever the split.
const std::vector<std::string> kValid = {
    kGet,
    "HEAD / HTTP/1.0\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
    "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET http://example.org/pub/a.html?x HTTP/1.1\r\nHost: other\r\n\r\n",
    "GET /? HTTP/1.1\r\nHost:\r\nX-Empty:\r\nX-Tab:\t a\tb \t\r\n\r\n",
    "\r\n\r\nGET /after-crlf HTTP/1.1\r\nHost: h\r\n\r\n",
    "DELETE /r HTTP/1.1\r\nhOsT: h\r\nX-Obs: caf\xc3\xa9\r\nConnection: keep-alive, close\r\n\r\n",
    "GET http://example.org?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    "GET HTTP://example.org:8080 HTTP/1.1\r\nHost: example.org:8080\r\n\r\n",
};

TEST(HttpParser, EveryPrefixNeedsMoreThenSameResult) {
  for (const auto& req : kValid) {
    SCOPED_TRACE(req);
    Request full;
    auto want = parse(req, full);
    ASSERT_EQ(want.status, ParseStatus::Complete) << want.reason;
    ASSERT_EQ(want.consumed, req.size());
    for (size_t n = 0; n < req.size(); ++n) {
      Request r;
      auto res = parse(std::string_view(req).substr(0, n), r);
      ASSERT_EQ(res.status, ParseStatus::NeedMore) << "prefix " << n << ": " << res.reason;
      EXPECT_EQ(res.consumed, 0u);
    }
    // Same result when the head is followed by a body or the next request.
    std::string more = req + "GET / HTTP/1.1\r\n";
    Request r;
    auto res = parse(more, r);
    ASSERT_EQ(res.status, ParseStatus::Complete);
    EXPECT_EQ(res.consumed, want.consumed);
    EXPECT_EQ(r.method, full.method);
    EXPECT_EQ(r.path, full.path);
    EXPECT_EQ(r.header_count, full.header_count);
    EXPECT_EQ(r.keep_alive, full.keep_alive);
  }
}

TEST(HttpParser, FieldsOfVariousForms) {
  Request r;
  ASSERT_EQ(parse(kValid[1], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.version_minor, 0);
  EXPECT_EQ(r.host, "");
  EXPECT_FALSE(r.keep_alive);

  ASSERT_EQ(parse(kValid[2], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.content_length, 5u);
  EXPECT_EQ(request_length(r), kValid[2].size() + 5);

  ASSERT_EQ(parse(kValid[3], r).status, ParseStatus::Complete);
  EXPECT_TRUE(r.chunked);
  EXPECT_EQ(request_length(r), std::nullopt);

  ASSERT_EQ(parse(kValid[4], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.path, "*");

  // Absolute-form: the target's authority wins over the Host header (RFC 9112 3.2.2).
  ASSERT_EQ(parse(kValid[5], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.host, "example.org");
  EXPECT_EQ(r.path, "/pub/a.html");
  EXPECT_EQ(r.query, "x");

  ASSERT_EQ(parse(kValid[6], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.path, "/");
  EXPECT_EQ(r.query, "");
  EXPECT_EQ(r.header("x-empty"), "");
  EXPECT_EQ(r.header("X-TAB"), "a\tb");

  ASSERT_EQ(parse(kValid[7], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.path, "/after-crlf");
  EXPECT_EQ(r.head_len, kValid[7].size());

  ASSERT_EQ(parse(kValid[8], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.host, "h");
  EXPECT_EQ(r.header("x-obs"), "caf\xc3\xa9");
  EXPECT_FALSE(r.keep_alive);  // close wins over keep-alive
}

// RFC 9112 3.2.2: an absolute-form target with an empty path asks for "/" (it was 400),
// and its authority, not the Host header, is the host requests are routed by.
TEST(HttpParser, AbsoluteFormWithEmptyPath) {
  Request r;
  ASSERT_EQ(parse(kValid[9], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.path, "/");
  // Still a view into the buffer, like every field (callers and the fuzzer rely on it).
  EXPECT_GE(r.path.data(), kValid[9].data());
  EXPECT_LT(r.path.data(), kValid[9].data() + kValid[9].size());
  EXPECT_EQ(r.query, "q=1");
  EXPECT_EQ(r.host, "example.org");
  EXPECT_EQ(r.target, "http://example.org?q=1");

  ASSERT_EQ(parse(kValid[10], r).status, ParseStatus::Complete);
  EXPECT_EQ(r.path, "/");
  EXPECT_EQ(r.query, "");
  EXPECT_EQ(r.host, "example.org:8080");

  ASSERT_EQ(parse("GET https://a.example? HTTP/1.1\r\nHost: b\r\n\r\n", r).status,
            ParseStatus::Complete);
  EXPECT_EQ(r.path, "/");
  EXPECT_EQ(r.query, "");
  EXPECT_EQ(r.host, "a.example");
}

TEST(HttpParser, UpgradeNeedsBothHeaders) {
  Request r;
  ASSERT_EQ(parse("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
                  "Upgrade: websocket\r\n\r\n",
                  r)
                .status,
            ParseStatus::Complete);
  EXPECT_TRUE(r.upgrade);
  ASSERT_EQ(parse("GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", r).status,
            ParseStatus::Complete);
  EXPECT_FALSE(r.upgrade);  // and the flag does not stick from the previous parse
  ASSERT_EQ(parse("GET /a HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", r).status,
            ParseStatus::Complete);
  EXPECT_FALSE(r.upgrade);
}

TEST(HttpParser, Pipelined) {
  std::string first = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
  std::string second = "GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  std::string buf = first + "xyz" + second + "GET /c";
  Request r;
  auto res = parse(buf, r);
  ASSERT_EQ(res.status, ParseStatus::Complete);
  EXPECT_EQ(res.consumed, first.size());
  EXPECT_EQ(r.path, "/a");
  size_t next = *request_length(r);
  EXPECT_EQ(next, first.size() + 3);

  res = parse(std::string_view(buf).substr(next), r);
  ASSERT_EQ(res.status, ParseStatus::Complete);
  EXPECT_EQ(res.consumed, second.size());
  EXPECT_EQ(r.path, "/b");
  EXPECT_FALSE(r.keep_alive);

  next += res.consumed;
  EXPECT_EQ(parse(std::string_view(buf).substr(next), r).status, ParseStatus::NeedMore);
}

TEST(HttpParser, KeepAlive) {
  struct Case {
    const char* head;
    bool keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false},
  };
  for (const auto& c : cases) {
    Request r;
    ASSERT_EQ(parse(c.head, r).status, ParseStatus::Complete) << c.head;
    EXPECT_EQ(r.keep_alive, c.keep_alive) << c.head;
  }
}

struct ErrorCase {
  std::string head;
  int status;
};

const std::vector<ErrorCase> kErrors = {
    // request line
    {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
    {"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /\tx HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET index.html HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET http://user@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET http://?q HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /\r\nHost: h\r\n\r\n", 400},
    {"GET / http/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/11\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505},
    {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
    {"GET / HTTP/0.9\r\n\r\n", 505},
    // line endings
    {"GET / HTTP/1.1\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\n\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\n\rX", 400},
    {"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400},
    {"\n", 400},
    {"\rGET", 400},
    // header syntax
    {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nX@Y: 1\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nNoColon\r\nHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\0z\r\n\r\n"s, 400},
    // Host
    {"GET / HTTP/1.1\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
    // Content-Length
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,1\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
    // Transfer-Encoding
    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
     "chunked\r\n\r\n",
     501},
    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
};

TEST(HttpParser, Errors) {
  for (const auto& c : kErrors) {
    SCOPED_TRACE(c.head);
    Request r;
    auto res = parse(c.head, r);
    ASSERT_EQ(res.status, ParseStatus::Error);
    EXPECT_EQ(res.http_status, c.status) << res.reason;
    EXPECT_LE(res.error_pos, c.head.size());
    EXPECT_NE(std::string(res.reason), "");
    // A prefix is either undecided or already refused for the same reason.
    for (size_t n = 0; n < c.head.size(); ++n) {
      auto p = parse(std::string_view(c.head).substr(0, n), r);
      ASSERT_NE(p.status, ParseStatus::Complete);
      if (p.status == ParseStatus::Error) {
        EXPECT_EQ(p.http_status, c.status) << "prefix " << n;
        EXPECT_EQ(p.error_pos, res.error_pos) << "prefix " << n;
      }
    }
  }
}

TEST(HttpParser, GarbageIsRefusedEarly) {
  Request r;
  auto res = parse("\x16\x03\x01\x02", r);  // a TLS ClientHello on the plain port
  EXPECT_EQ(res.status, ParseStatus::Error);
  EXPECT_EQ(res.error_pos, 0u);
  res = parse("GET /x HTTP/1.1\r\nHost: h\r\nBad Name", r);
  EXPECT_EQ(res.status, ParseStatus::Error);
  EXPECT_EQ(res.error_pos, 29u);
}

TEST(HttpParser, LargestContentLength) {
  Request r;
  ASSERT_EQ(
      parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n", r).status,
      ParseStatus::Complete);
  EXPECT_EQ(r.content_length, 9223372036854775807u);
}

TEST(HttpParser, RequestLineLimit) {
  Limits lim;
  lim.max_request_line = 64;
  const std::string prefix = "GET /";
  const std::string suffix = " HTTP/1.1";
  // Exactly at the limit: fine.
  std::string line = prefix + std::string(64 - prefix.size() - suffix.size(), 'a') + suffix;
  ASSERT_EQ(line.size(), 64u);
  Request r;
  EXPECT_EQ(parse(line + "\r\nHost: h\r\n\r\n", r, lim).status, ParseStatus::Complete);
  EXPECT_EQ(parse(line + "\r", r, lim).status, ParseStatus::NeedMore);

  // One byte over: 414, also while the line is still unfinished.
  std::string longer = prefix + std::string(65 - prefix.size() - suffix.size(), 'a') + suffix;
  auto res = parse(longer + "\r\nHost: h\r\n\r\n", r, lim);
  EXPECT_EQ(res.status, ParseStatus::Error);
  EXPECT_EQ(res.http_status, 414);
  res = parse(prefix + std::string(60, 'a'), r, lim);
  EXPECT_EQ(res.http_status, 414);
  EXPECT_EQ(res.error_pos, 64u);
  EXPECT_EQ(parse(prefix + std::string(59, 'a'), r, lim).status, ParseStatus::NeedMore);

  // Garbage is a 400 whatever its length.
  EXPECT_EQ(parse("GET /" + std::string(100, '\x01'), r, lim).http_status, 400);
}

TEST(HttpParser, HeadSizeLimit) {
  Limits lim;
  lim.max_head = 128;
  std::string start = "GET / HTTP/1.1\r\nHost: h\r\nX-Fill: ";
  std::string end = "\r\n\r\n";
  std::string exact = start + std::string(128 - start.size() - end.size(), 'v') + end;
  ASSERT_EQ(exact.size(), 128u);
  Request r;
  EXPECT_EQ(parse(exact, r, lim).status, ParseStatus::Complete);
  // Detected while incomplete, so NeedMore never lets the buffer grow past max_head.
  std::string over = start + std::string(200, 'v');
  EXPECT_EQ(parse(over.substr(0, 128), r, lim).status, ParseStatus::NeedMore);
  auto res = parse(over.substr(0, 129), r, lim);
  EXPECT_EQ(res.status, ParseStatus::Error);
  EXPECT_EQ(res.http_status, 431);
  std::string one_more = start + std::string(128 - start.size() - end.size() + 1, 'v') + end;
  EXPECT_EQ(parse(one_more, r, lim).http_status, 431);
}

TEST(HttpParser, HeaderCountLimit) {
  Limits lim;
  lim.max_headers = 5;
  std::string head = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 4; ++i) head += "X-" + std::to_string(i) + ": v\r\n";
  Request r;
  EXPECT_EQ(parse(head + "\r\n", r, lim).status, ParseStatus::Complete);
  EXPECT_EQ(r.header_count, 5u);
  auto res = parse(head + "X-Six", r, lim);  // refused as soon as the 6th line starts
  EXPECT_EQ(res.status, ParseStatus::Error);
  EXPECT_EQ(res.http_status, 431);

  // The array bounds the default limit too.
  head = "GET / HTTP/1.0\r\n";
  for (int i = 0; i < 101; ++i) head += "X: v\r\n";
  lim.max_headers = 1000;
  EXPECT_EQ(parse(head + "\r\n", r, lim).http_status, 431);
}

TEST(HttpParser, HeaderAndCookieLookup) {
  std::string head =
      "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant:  acme \r\n"
      "Cookie: session=abc123; theme=\"dark\"\r\n"
      "cookie: lang=en;sessionx=nope;  empty=\r\n"
      "X-Tenant: second\r\n\r\n";
  Request r;
  ASSERT_EQ(parse(head, r).status, ParseStatus::Complete);
  EXPECT_EQ(r.header("x-tenant"), "acme");
  EXPECT_EQ(r.header("HOST"), "h");
  EXPECT_EQ(r.header("X-Missing"), std::nullopt);
  EXPECT_EQ(r.cookie("session"), "abc123");
  EXPECT_EQ(r.cookie("theme"), "\"dark\"");
  EXPECT_EQ(r.cookie("lang"), "en");
  EXPECT_EQ(r.cookie("sessionx"), "nope");
  EXPECT_EQ(r.cookie("empty"), "");
  EXPECT_EQ(r.cookie("Session"), std::nullopt);  // cookie names are case-sensitive
  EXPECT_EQ(r.cookie("sess"), std::nullopt);
}

// Feeds `body` to a fresh scanner in pieces of `step` bytes; returns total consumed
// at completion, or the error status.
std::pair<ParseStatus, uint64_t> scan_chunked(std::string_view body, size_t step,
                                              const Limits& lim = {}) {
  ChunkedScanner s(lim);
  for (size_t off = 0; off < body.size(); off += step) {
    auto res = s.feed(body.substr(off, step));
    if (res.status == ParseStatus::Complete) return {res.status, off + res.consumed};
    if (res.status == ParseStatus::Error) return {res.status, res.http_status};
    EXPECT_EQ(res.consumed, std::min(step, body.size() - off));
  }
  return {ParseStatus::NeedMore, s.scanned()};
}

TEST(ChunkedScanner, FindsTheEndAtEverySplit) {
  const std::string body =
      "5\r\nhello\r\n"
      "1A;name=val ; x=\"q\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "0\r\nTrailer-A: 1\r\nB:\r\n\r\n";
  const std::string next = "GET / HTTP/1.1\r\n";
  for (size_t step = 1; step <= body.size() + next.size(); ++step) {
    auto [st, consumed] = scan_chunked(body + next, step);
    ASSERT_EQ(st, ParseStatus::Complete) << "step " << step;
    EXPECT_EQ(consumed, body.size()) << "step " << step;
  }
  for (size_t n = 0; n < body.size(); ++n)
    EXPECT_EQ(scan_chunked(std::string_view(body).substr(0, n), 1).first, ParseStatus::NeedMore);

  auto [st, consumed] = scan_chunked("0\r\n\r\n", 5);
  EXPECT_EQ(st, ParseStatus::Complete);
  EXPECT_EQ(consumed, 5u);
  std::tie(st, consumed) = scan_chunked("000\r\n\r\nX", 100);
  EXPECT_EQ(consumed, 7u);
}

TEST(ChunkedScanner, VerdictIsFinal) {
  ChunkedScanner s;
  EXPECT_EQ(s.feed("0\r\n\r\nrest").consumed, 5u);
  auto again = s.feed("more");
  EXPECT_EQ(again.status, ParseStatus::Complete);
  EXPECT_EQ(again.consumed, 0u);

  ChunkedScanner bad;
  EXPECT_EQ(bad.feed("zz").status, ParseStatus::Error);
  EXPECT_EQ(bad.feed("0\r\n\r\n").status, ParseStatus::Error);
}

TEST(ChunkedScanner, Errors) {
  const char* cases[] = {
      "\r\n",                       // no size
      "g\r\n",                      // not hex
      "-1\r\n",                     // sign
      "5\nhello\r\n0\r\n\r\n",      // bare LF
      "5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
      "5\r\nhello\n0\r\n\r\n",      // bare LF after data
      "5 x\r\nhello\r\n0\r\n\r\n",  // junk instead of extension
      "5;a\x01\r\nhello\r\n",       // control char in extension
      "0\r\n bad: fold\r\n\r\n",    // obs-fold in trailer
      "0\r\nBad Name: x\r\n\r\n",   // bad trailer name
      "0\r\nX: a\x01\r\n\r\n",      // control char in trailer
      "0\r\n\rX",                   // bare CR at end
      "10000000000000000\r\n",      // size overflows 63 bits
  };
  for (const char* c : cases) {
    auto [st, status] = scan_chunked(c, 1);
    EXPECT_EQ(st, ParseStatus::Error) << c;
    EXPECT_EQ(status, 400u) << c;
  }
}

TEST(ChunkedScanner, Limits) {
  Limits lim;
  lim.max_request_line = 16;
  lim.max_head = 32;
  EXPECT_EQ(scan_chunked("5;" + std::string(13, 'e') + "\r\nhello\r\n0\r\n\r\n", 3, lim).first,
            ParseStatus::Complete);
  EXPECT_EQ(scan_chunked("5;" + std::string(30, 'e'), 3, lim),
            std::make_pair(ParseStatus::Error, uint64_t{400}));
  EXPECT_EQ(scan_chunked("0\r\nX: " + std::string(40, 'v'), 7, lim),
            std::make_pair(ParseStatus::Error, uint64_t{431}));
}

}  // namespace
}  // namespace tcpha::http

// libFuzzer target for the HTTP request-head parser, the chunked-body scanner and the
// relay's X-Forwarded-For rewriter.
// Small limits so the fuzzer reaches every limit check quickly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/forwarded.hpp"
#include "http/request.hpp"

using namespace tcpha::http;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

bool inside(std::string_view part, std::string_view buf) {
  return part.data() == nullptr || part.empty() ||
         (part.data() >= buf.data() && part.data() + part.size() <= buf.data() + buf.size());
}

void check_request(const Request& r, std::string_view head, const Limits& lim) {
  for (auto v : {r.method, r.target, r.path, r.query, r.host})
    check(inside(v, head), "field outside head");
  check(!r.method.empty() && !r.target.empty() && !r.path.empty(), "empty request line part");
  check(r.version_minor == 0 || r.version_minor == 1, "version");
  check(r.header_count <= lim.max_headers, "header count");
  for (size_t i = 0; i < r.header_count; ++i) {
    check(!r.headers[i].name.empty(), "empty header name");
    check(inside(r.headers[i].name, head) && inside(r.headers[i].value, head),
          "header outside head");
  }
  check(!(r.chunked && r.content_length), "both framings");
  check(r.version_minor == 0 || r.header("host"), "1.1 without Host");
}

// The body scan must not depend on how the bytes are split.
void check_chunked(std::string_view body, const Limits& lim) {
  ChunkedScanner whole(lim), halves(lim);
  auto a = whole.feed(body);
  check(a.consumed <= body.size(), "chunked consumed too much");
  size_t cut = body.size() / 2;
  auto b = halves.feed(body.substr(0, cut));
  uint64_t consumed = b.consumed;
  if (b.status == ParseStatus::NeedMore) {
    b = halves.feed(body.substr(cut));
    consumed += b.consumed;
  }
  check(a.status == b.status, "chunked verdict depends on split");
  if (a.status == ParseStatus::Complete)
    check(a.consumed == consumed, "chunked end depends on split");
  if (a.status == ParseStatus::Error)
    check(a.http_status == b.http_status, "chunked error depends on split");
}

// The rewriter's output must not depend on how the stream is split, and taking the
// inserted lines out again must give back exactly the bytes that were passed on.
void check_forwarded(std::string_view stream, const Limits& lim) {
  ForwardedFor whole("192.0.2.1", lim), halves("192.0.2.1", lim);
  std::string a, b;
  auto ra = whole.feed(stream, a);
  size_t cut = stream.size() / 3;
  auto rb = halves.feed(stream.substr(0, cut), b);
  if (rb.status != ParseStatus::Error) rb = halves.feed(stream.substr(cut), b);
  check(ra.status == rb.status && a == b, "X-Forwarded-For output depends on split");
  check(ra.status != ParseStatus::Complete, "rewriter said Complete");
  static constexpr std::string_view kLine = "X-Forwarded-For: 192.0.2.1\r\n";
  std::string back;
  size_t from = 0, found = 0;
  for (size_t at; (at = a.find(kLine, from)) != std::string::npos; from = at + kLine.size()) {
    back.append(a, from, at - from);
    ++found;
  }
  back.append(a, from);
  check(found >= whole.requests(), "fewer lines than requests");
  // Everything passed on is a prefix of the input (held-back head bytes excepted).
  if (found == whole.requests()) check(stream.substr(0, back.size()) == back, "bytes altered");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view buf(reinterpret_cast<const char*>(data), size);
  Limits lim;
  lim.max_request_line = 256;
  lim.max_head = 1024;
  lim.max_headers = 16;

  static Request r;  // 3 KB of headers: keep it off the per-input stack
  const ParseResult res = parse_request(buf, r, lim);
  switch (res.status) {
    case ParseStatus::NeedMore:
      check(size <= lim.max_head, "NeedMore past max_head");
      check(res.consumed == 0, "NeedMore consumed");
      break;
    case ParseStatus::Error:
      check(res.http_status == 400 || res.http_status == 414 || res.http_status == 431 ||
                res.http_status == 501 || res.http_status == 505,
            "unexpected status");
      check(res.error_pos <= size, "error_pos outside input");
      break;
    case ParseStatus::Complete: {
      check(res.consumed == r.head_len && res.consumed <= size && res.consumed <= lim.max_head,
            "consumed");
      const std::string_view head = buf.substr(0, res.consumed);
      check(head.ends_with("\r\n\r\n"), "head does not end with CRLFCRLF");
      check_request(r, head, lim);
      if (r.chunked) check_chunked(buf.substr(res.consumed), lim);
      break;
    }
  }

  // A prefix is undecided or gets the same verdict: parsing never depends on how much
  // of the stream has arrived.
  static Request p;
  const ParseResult pre = parse_request(buf.substr(0, size / 2), p, lim);
  if (pre.status == ParseStatus::Complete) {
    check(res.status == ParseStatus::Complete && res.consumed == pre.consumed,
          "prefix complete, whole not");
  } else if (pre.status == ParseStatus::Error) {
    check(res.status == ParseStatus::Error && res.http_status == pre.http_status &&
              res.error_pos == pre.error_pos,
          "prefix error differs");
  }
  check_forwarded(buf, lim);
  return 0;
}

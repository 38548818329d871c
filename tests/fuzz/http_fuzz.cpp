// libFuzzer target for the HTTP request-head parser and the chunked-body scanner.
// Small limits so the fuzzer reaches every limit check quickly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

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
  return 0;
}

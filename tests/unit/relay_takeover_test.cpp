// The rules a relay-mode backup follows when it takes a connection over (issue 13,
// docs/relay.md "Failover"): which held requests may be asked again, how an upstream's
// response head is read, and when its Range answer may be spliced to the client.
#include "be/relay_takeover.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace tcpha::be::resume {
namespace {

constexpr std::string_view kHead =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Mon, 30 Nov 2026 10:00:00 GMT\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Length: 12000000\r\n"
    "Last-Modified: Mon, 30 Nov 2026 09:59:00 GMT\r\n"
    "Connection: keep-alive\r\n"
    "ETag: \"692c1e94-b71b00\"\r\n"
    "Accept-Ranges: bytes\r\n"
    "\r\n";

ResponseHead parsed(std::string_view s) {
  ResponseHead h;
  EXPECT_EQ(parse_response_head(s, h), Parse::Complete) << s;
  return h;
}

TEST(RelayTakeover, ParsesNginxHead) {
  std::string s(kHead);
  s += "body bytes";
  ResponseHead h = parsed(s);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.head_len, kHead.size());
  EXPECT_EQ(h.content_length, 12000000u);
  EXPECT_EQ(h.etag, "\"692c1e94-b71b00\"");
  EXPECT_EQ(h.last_modified, "Mon, 30 Nov 2026 09:59:00 GMT");
  EXPECT_FALSE(h.chunked);
  EXPECT_EQ(response_length(h, false), kHead.size() + 12000000);
  EXPECT_EQ(response_length(h, true), kHead.size());
}

TEST(RelayTakeover, HeadInPiecesAndGarbage) {
  ResponseHead h;
  EXPECT_EQ(parse_response_head(kHead.substr(0, 40), h), Parse::NeedMore);
  EXPECT_EQ(parse_response_head("HTT", h), Parse::NeedMore);
  EXPECT_EQ(parse_response_head("<html>", h), Parse::Error);
  EXPECT_EQ(parse_response_head("HTTP/1.1 2x0 OK\r\n\r\n", h), Parse::Error);
  EXPECT_EQ(parse_response_head("HTTP/1.1 200 OK\r\nno colon\r\n\r\n", h), Parse::Error);
  // Two different lengths: the framing is ambiguous.
  EXPECT_EQ(parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", h),
            Parse::Error);
  EXPECT_EQ(parse_response_head(std::string(100, 'H').insert(0, "HTTP/1.1 200 OK\r\nX: "), h, 64),
            Parse::Error);
}

TEST(RelayTakeover, ChunkedOrCloseDelimitedHasNoLength) {
  ResponseHead h = parsed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_TRUE(h.chunked);
  EXPECT_EQ(response_length(h, false), std::nullopt);
  EXPECT_EQ(response_length(parsed("HTTP/1.1 200 OK\r\n\r\n"), false), std::nullopt);
  // No body by status.
  constexpr std::string_view k304 = "HTTP/1.1 304 Not Modified\r\n\r\n";
  EXPECT_EQ(response_length(parsed(k304), false), k304.size());
}

TEST(RelayTakeover, OnlyGetAndHeadAreAskedAgain) {
  EXPECT_EQ(check_held(""), 0);
  EXPECT_EQ(check_held("GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
  // An incomplete request at the end was never passed on.
  EXPECT_EQ(check_held("GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHo"), 0);
  EXPECT_EQ(check_held("POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"), EPERM);
  EXPECT_EQ(check_held("GET /a HTTP/1.1\r\nHost: x\r\n\r\nDELETE /b HTTP/1.1\r\nHost: x\r\n\r\n"),
            EPERM);
  EXPECT_EQ(check_held("GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"), EPERM);
  EXPECT_EQ(check_held("GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            EPERM);
  EXPECT_EQ(check_held("\x01\x02 garbage\r\n\r\n"), EPROTO);
}

TEST(RelayTakeover, RewriteKeepsTheFieldsAndAddsLines) {
  const std::string_view req = "GET /f12m.bin HTTP/1.1\r\nHost: 10.0.0.1\r\nAccept: */*\r\n\r\n";
  EXPECT_EQ(rewrite_head(req, "HEAD", ""), "HEAD /f12m.bin HTTP/1.1\r\nHost: 10.0.0.1\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(rewrite_head(req, "GET", "Range: bytes=5-\r\nIf-Range: \"e\"\r\n"),
            "GET /f12m.bin HTTP/1.1\r\nHost: 10.0.0.1\r\nAccept: */*\r\nRange: bytes=5-\r\n"
            "If-Range: \"e\"\r\n\r\n");
}

ResponseHead partial(uint64_t first, uint64_t total, std::string etag, uint64_t length = 0) {
  std::string s = "HTTP/1.1 206 Partial Content\r\nContent-Length: " +
                  std::to_string(length ? length : total - first) + "\r\nContent-Range: bytes " +
                  std::to_string(first) + "-" + std::to_string(total - 1) + "/" +
                  std::to_string(total) + "\r\n";
  if (!etag.empty()) s += "ETag: " + etag + "\r\n";
  return parsed(s + "Last-Modified: Mon, 30 Nov 2026 09:59:00 GMT\r\n\r\n");
}

TEST(RelayTakeover, PartialMustContinueTheSameRepresentation) {
  const ResponseHead learned = parsed(kHead);
  const std::string etag = "\"692c1e94-b71b00\"";
  EXPECT_TRUE(partial_matches(learned, partial(5000, 12000000, etag), 5000));
  // Another start, another total (the file changed), another validator, a 200 (the
  // If-Range did not match: the whole new file), a wrong Content-Length.
  EXPECT_FALSE(partial_matches(learned, partial(4999, 12000000, etag), 5000));
  EXPECT_FALSE(partial_matches(learned, partial(5000, 12000001, etag), 5000));
  EXPECT_FALSE(partial_matches(learned, partial(5000, 12000000, "\"other\""), 5000));
  EXPECT_FALSE(partial_matches(learned, partial(5000, 12000000, ""), 5000));
  EXPECT_FALSE(partial_matches(learned, partial(5000, 12000000, etag, 7), 5000));
  EXPECT_FALSE(partial_matches(learned, parsed(kHead), 5000));
  // Without an ETag the Last-Modified date is the validator.
  ResponseHead no_etag = learned;
  no_etag.etag.clear();
  EXPECT_TRUE(partial_matches(no_etag, partial(5000, 12000000, ""), 5000));
  no_etag.last_modified = "Tue, 01 Dec 2026 00:00:00 GMT";
  EXPECT_FALSE(partial_matches(no_etag, partial(5000, 12000000, ""), 5000));
}

TEST(RelayTakeover, SameHeadAsideFromTheDate) {
  const ResponseHead learned = parsed(kHead);
  std::string again(kHead);
  again.replace(again.find("10:00:00"), 8, "10:00:07");
  EXPECT_TRUE(same_head(learned, parsed(again)));
  std::string longer(kHead);
  longer.insert(longer.find("Accept-Ranges"), "X-Extra: 1\r\n");
  EXPECT_FALSE(same_head(learned, parsed(longer)));
  std::string changed(kHead);
  changed.replace(changed.find("b71b00"), 6, "b71b01");
  EXPECT_FALSE(same_head(learned, parsed(changed)));
}

}  // namespace
}  // namespace tcpha::be::resume

// X-Forwarded-For insertion into a relayed request stream: every head gets the line,
// bodies (even ones that look like requests) pass untouched, however the bytes are
// split across reads.
#include "http/forwarded.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace tcpha::http {
namespace {

constexpr std::string_view kXff = "X-Forwarded-For: 10.200.0.2\r\n";

// Feeds `in` whole, then split at every position (and byte by byte), and checks that
// every way gives the same output; returns it.
std::string rewrite(std::string_view in, ParseStatus want = ParseStatus::NeedMore) {
  std::string whole;
  ForwardedFor f("10.200.0.2");
  EXPECT_EQ(f.feed(in, whole).status, want);
  for (size_t cut = 1; cut < in.size(); ++cut) {
    ForwardedFor g("10.200.0.2");
    std::string out;
    ParseResult r = g.feed(in.substr(0, cut), out);
    if (r.status != ParseStatus::Error) r = g.feed(in.substr(cut), out);
    EXPECT_EQ(r.status, want) << "split at " << cut;
    EXPECT_EQ(out, whole) << "split at " << cut;
  }
  ForwardedFor h("10.200.0.2");
  std::string bytewise;
  ParseResult r{ParseStatus::NeedMore};
  for (char ch : in)
    if (r.status != ParseStatus::Error) r = h.feed(std::string_view(&ch, 1), bytewise);
  EXPECT_EQ(r.status, want);
  EXPECT_EQ(bytewise, whole);
  return whole;
}

std::string with_xff(std::string_view head) {  // head ends with the blank line
  std::string s(head.substr(0, head.size() - 2));
  return s.append(kXff).append("\r\n");
}

TEST(ForwardedFor, AddsTheLineBeforeTheBlankLine) {
  std::string_view req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(rewrite(req), "GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.200.0.2\r\n\r\n");
}

TEST(ForwardedFor, EveryRequestOfAKeepAliveStreamGetsIt) {
  std::string_view a = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string_view b = "HEAD /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ForwardedFor f("10.200.0.2");
  std::string out;
  EXPECT_EQ(f.feed(std::string(a) + std::string(b), out).status, ParseStatus::NeedMore);
  EXPECT_EQ(out, with_xff(a) + with_xff(b));
  EXPECT_EQ(f.requests(), 2u);
  EXPECT_EQ(rewrite(std::string(a) + std::string(b)), with_xff(a) + with_xff(b));
}

TEST(ForwardedFor, ContentLengthBodiesPassUntouched) {
  // The body looks like a request; it must not be rewritten.
  std::string body = "GET /evil HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string head =
      "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n";
  std::string next = "GET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(rewrite(head + body + next), with_xff(head) + body + with_xff(next));
}

TEST(ForwardedFor, ChunkedBodiesPassUntouched) {
  std::string head = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string body = "1f\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\nT: v\r\n\r\n";
  std::string next = "GET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(rewrite(head + body + next), with_xff(head) + body + with_xff(next));
}

TEST(ForwardedFor, TheClientsOwnLinesStayInFront) {
  std::string_view req = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
  EXPECT_EQ(rewrite(req),
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: "
            "10.200.0.2\r\n\r\n");
}

TEST(ForwardedFor, AfterAnUpgradeTheStreamIsPassedThrough) {
  std::string head =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
      "websocket\r\n\r\n";
  std::string frames = "\x81\x05hello GET / HTTP/1.1\r\n\r\n";
  EXPECT_EQ(rewrite(head + frames), with_xff(head) + frames);
  ForwardedFor f("10.200.0.2");
  std::string out;
  f.feed(head, out);
  EXPECT_TRUE(f.tunnel());
  // Upgrade without "Connection: upgrade" is not a switch: the next head is rewritten.
  std::string lone = "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
  std::string next = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_EQ(rewrite(lone + next), with_xff(lone) + with_xff(next));
}

TEST(ForwardedFor, AStreamThatCannotBeFramedStopsAfterTheLastGoodRequest) {
  std::string good = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string bad = "GET /b HTTP/1.1\nHost: x\r\n\r\n";  // bare LF
  std::string out;
  ForwardedFor f("10.200.0.2");
  ParseResult r = f.feed(good + bad, out);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(out, with_xff(good));
  // Later bytes change nothing.
  EXPECT_EQ(f.feed("GET /c HTTP/1.1\r\nHost: x\r\n\r\n", out).status, ParseStatus::Error);
  EXPECT_EQ(out, with_xff(good));
  EXPECT_EQ(rewrite(good + bad, ParseStatus::Error), with_xff(good));
}

TEST(ForwardedFor, HeadsAreBoundedEvenWhenTheyTrickleIn) {
  Limits lim;
  lim.max_head = 1024;
  ForwardedFor f("10.200.0.2", lim);
  std::string out;
  ParseResult r = f.feed("GET / HTTP/1.1\r\nHost: x\r\n", out);
  EXPECT_EQ(r.status, ParseStatus::NeedMore);
  std::string filler = "X-Pad: " + std::string(100, 'a') + "\r\n";
  for (int i = 0; i < 20 && r.status == ParseStatus::NeedMore; ++i) r = f.feed(filler, out);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.http_status, 431);
  EXPECT_TRUE(out.empty());
}

TEST(ForwardedFor, UnsupportedFramingIsRefused) {
  std::string out;
  ForwardedFor f("10.200.0.2");
  EXPECT_EQ(f.feed("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", out)
                .http_status,
            501);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace tcpha::http

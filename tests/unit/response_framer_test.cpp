// Response framing for the relay (multi-handoff in relay mode): where each response
// of a server's stream ends, however the stream arrives, looking only at heads and
// chunk lines; close-delimited and switched streams are recognised as unframed.
#include "http/response_framer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace tcpha::http {
namespace {

struct Framing {
  std::vector<uint64_t> ends;  // stream offsets at which a response became complete
  bool unframed = false, switched = false, until_close = false;
  uint64_t unframed_at = 0;  // offset of the bytes that made it unframed
  uint64_t shown = 0;        // bytes the framer was shown (the rest went on unseen)
};

// Plays the relay: the stream arrives `step` bytes at a time; credited bytes are
// passed on unseen, otherwise the framer is shown everything that has arrived after
// them (as recv(MSG_PEEK) would).
Framing frame(std::string_view stream, const std::vector<bool>& head_methods, size_t step) {
  ResponseFramer f(1024);
  for (bool h : head_methods) f.expect(h);
  Framing r;
  uint64_t pos = 0, avail = std::min<uint64_t>(step, stream.size());
  for (int guard = 0; guard < 1000000; ++guard) {
    if (f.credit() > 0 && !f.unframed()) {
      // Small streams are passed on a byte at a time, so that each end is seen exactly.
      const uint64_t n = std::min({f.credit(), avail - pos, stream.size() < 10000 ? 1 : step});
      if (n == 0) {
        if (avail == stream.size()) break;
        avail = std::min<uint64_t>(avail + step, stream.size());
        continue;
      }
      const uint64_t before = f.completed();
      f.passed(n);
      pos += n;
      for (uint64_t k = before; k < f.completed(); ++k) r.ends.push_back(pos);
      continue;
    }
    const std::string_view next = stream.substr(size_t(pos), size_t(avail - pos));
    r.shown += next.size();
    const auto s = f.feed(next);
    if (s == ResponseFramer::Step::Unframed) {
      r.unframed = true;
      r.switched = f.switched();
      r.until_close = f.until_close();
      r.unframed_at = pos;
      break;
    }
    if (s == ResponseFramer::Step::NeedMore) {
      if (avail == stream.size()) break;
      avail = std::min<uint64_t>(avail + step, stream.size());
    }
  }
  return r;
}

// Every way of splitting the stream gives the same ends (each response complete
// exactly when its last byte was passed on).
Framing frame_all(std::string_view stream, const std::vector<bool>& head_methods) {
  Framing whole = frame(stream, head_methods, stream.size());
  for (size_t step = 1; step < stream.size(); ++step) {
    Framing r = frame(stream, head_methods, step);
    EXPECT_EQ(r.ends, whole.ends) << "arriving " << step << " bytes at a time";
    EXPECT_EQ(r.unframed, whole.unframed) << "step " << step;
    EXPECT_EQ(r.switched, whole.switched) << "step " << step;
    EXPECT_EQ(r.until_close, whole.until_close) << "step " << step;
  }
  return whole;
}

const std::string kA = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const std::string kB = "HTTP/1.1 404 Not Found\r\ncontent-length:3\r\nServer: x\r\n\r\nabc";

TEST(ResponseFramer, ContentLengthResponsesEndAfterTheirBodies) {
  Framing r = frame_all(kA + kB, {false, false});
  EXPECT_EQ(r.ends, (std::vector<uint64_t>{kA.size(), kA.size() + kB.size()}));
  EXPECT_FALSE(r.unframed);
}

TEST(ResponseFramer, BodiesPassUnseen) {
  // A 10 MB body: the framer sees the head only and credits the body whole.
  ResponseFramer f;
  f.expect(false);
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n";
  EXPECT_EQ(f.feed(head + "first body bytes"), ResponseFramer::Step::Framed);
  EXPECT_EQ(f.credit(), head.size() + 10485760);
  EXPECT_FALSE(f.idle());
  EXPECT_EQ(f.outstanding(), 1u);
  f.passed(head.size() + 10485759);
  EXPECT_EQ(f.outstanding(), 1u);  // one byte short
  f.passed(1);
  EXPECT_EQ(f.outstanding(), 0u);
  EXPECT_TRUE(f.idle());
  EXPECT_EQ(f.credit(), 0u);
}

TEST(ResponseFramer, ChunkedSplitAcrossReads) {
  const std::string c =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n"
      "1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "A \r\n0123456789\r\n"
      "0\r\nX-Trailer: yes\r\n\r\n";
  const std::string plain = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
  Framing r = frame_all(c + plain + kA, {false, false, false});
  EXPECT_EQ(r.ends, (std::vector<uint64_t>{c.size(), c.size() + plain.size(),
                                           c.size() + plain.size() + kA.size()}));
  EXPECT_FALSE(r.unframed);
  // Chunk data is credited, not shown: a 1 MB chunk costs one look at its size line.
  const std::string big_head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n";
  std::string big = big_head + std::string(0x100000, 'x') + "\r\n0\r\n\r\n";
  Framing b = frame(big, {false}, 65536);
  EXPECT_EQ(b.ends, std::vector<uint64_t>{big.size()});
  EXPECT_LT(b.shown, 2 * 65536u);
}

TEST(ResponseFramer, NoBodyAfterHeadAnd204And304AndInterim) {
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";  // to HEAD
  const std::string nc = "HTTP/1.1 204 No Content\r\n\r\n";
  const std::string nm = "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n";
  const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
  Framing r = frame_all(head + nc + nm + cont + kA, {true, false, false, false});
  const uint64_t a = head.size(), b = a + nc.size(), c = b + nm.size();
  EXPECT_EQ(r.ends, (std::vector<uint64_t>{a, b, c, c + cont.size() + kA.size()}));
  EXPECT_FALSE(r.unframed);
}

TEST(ResponseFramer, CloseDelimitedIsUnframed) {
  // Neither Content-Length nor chunked: the body ends when the server closes.
  Framing r = frame_all(kA + "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil EOF",
                        {false, false});
  EXPECT_EQ(r.ends, std::vector<uint64_t>{kA.size()});
  EXPECT_TRUE(r.unframed);
  EXPECT_FALSE(r.switched);
  EXPECT_TRUE(r.until_close);
  EXPECT_EQ(r.unframed_at, kA.size());
  // HTTP/1.0 without a length, a coding other than chunked last.
  EXPECT_TRUE(frame_all("HTTP/1.0 200 OK\r\n\r\nbody", {false}).unframed);
  EXPECT_TRUE(
      frame_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxx", {false}).unframed);
  ResponseFramer f;
  f.expect(false);
  EXPECT_EQ(f.feed("HTTP/1.1 200 OK\r\n\r\n"), ResponseFramer::Step::Unframed);
  EXPECT_TRUE(f.until_close());
  EXPECT_EQ(f.credit(), ResponseFramer::kUnbounded);
  EXPECT_FALSE(f.idle());
}

TEST(ResponseFramer, SwitchingProtocolsAndGarbageAreUnframed) {
  Framing s = frame_all(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", {false});
  EXPECT_TRUE(s.unframed);
  EXPECT_TRUE(s.switched);
  EXPECT_FALSE(s.until_close);
  // Bytes nobody asked for, bytes that are no response, conflicting lengths, a bad
  // chunk line, a head beyond the limit.
  EXPECT_TRUE(frame_all(kA + kB, {false}).unframed);
  EXPECT_FALSE(frame_all(kA + kB, {false}).until_close);  // the server may go on
  EXPECT_TRUE(frame_all("SSH-2.0-OpenSSH\r\n\r\n", {false}).unframed);
  EXPECT_TRUE(
      frame_all("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", {false})
          .unframed);
  EXPECT_TRUE(
      frame_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {false}).unframed);
  EXPECT_TRUE(frame_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", {false})
                  .unframed);
  EXPECT_TRUE(frame("HTTP/1.1 200 OK\r\nX: " + std::string(2000, 'a') + "\r\n\r\n", {false}, 4096)
                  .unframed);
}

TEST(ResponseFramer, IncompleteHeadWaits) {
  ResponseFramer f;
  f.expect(false);
  EXPECT_EQ(f.feed("HTTP/1.1 200 OK\r\nContent-Le"), ResponseFramer::Step::NeedMore);
  EXPECT_EQ(f.credit(), 0u);
  EXPECT_EQ(f.feed(kA), ResponseFramer::Step::Framed);
  EXPECT_EQ(f.credit(), kA.size());
  EXPECT_EQ(f.outstanding(), 1u);
  f.passed(kA.size());
  EXPECT_TRUE(f.idle());
  // Nothing expected and nothing shown: idle, nothing to frame.
  EXPECT_EQ(f.feed(""), ResponseFramer::Step::NeedMore);
  EXPECT_TRUE(f.idle());
}

}  // namespace
}  // namespace tcpha::http

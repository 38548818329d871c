// The built-in server's connection logic over a socketpair: keep-alive, pipelining,
// errors, and the in-memory file cache (hits, misses, eviction, changed files).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "serve/static_session.hpp"

using namespace tcpha;
namespace fs = std::filesystem;

namespace {

class StaticSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tcpha-session-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    write("a.txt", std::string(1000, 'a'));
    write("b.txt", std::string(3000, 'b'));
    write("big.bin", std::string(300000, 'z'));
    docroot_ = open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv_), 0);
  }
  void TearDown() override {
    close(sv_[0]);
    close(sv_[1]);
    close(docroot_);
    fs::remove_all(dir_);
  }
  void write(const std::string& name, const std::string& data) {
    std::ofstream(dir_ / name, std::ios::binary) << data;
  }
  void client_send(const std::string& s) { ASSERT_EQ(send(sv_[1], s.data(), s.size(), 0), ssize_t(s.size())); }
  // Drives the session until it wants to read again or closes; returns what the client got.
  std::string run(serve::StaticSession& s, serve::StaticSession::Want* last = nullptr) {
    std::string got;
    auto w = s.on_readable(sv_[0]);
    for (int i = 0; i < 10000 && w == serve::StaticSession::Want::Write; ++i) {
      drain(got);
      w = s.on_writable(sv_[0]);
    }
    drain(got);
    if (last) *last = w;
    return got;
  }
  void drain(std::string& got) {
    char buf[65536];
    ssize_t n;
    while ((n = recv(sv_[1], buf, sizeof buf, MSG_DONTWAIT)) > 0) got.append(buf, size_t(n));
  }
  static size_t count(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
    return n;
  }
  fs::path dir_;
  int docroot_ = -1;
  int sv_[2];
};

TEST_F(StaticSessionTest, KeepAliveAndPipelining) {
  serve::StaticSession s(docroot_, "t");
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n");
  serve::StaticSession::Want w;
  std::string got = run(s, &w);
  EXPECT_EQ(count(got, "HTTP/1.1 200"), 2u);
  EXPECT_NE(got.find(std::string(1000, 'a')), std::string::npos);
  EXPECT_NE(got.find(std::string(3000, 'b')), std::string::npos);
  EXPECT_EQ(w, serve::StaticSession::Want::Read);
  EXPECT_EQ(s.requests(), 2u);
}

TEST_F(StaticSessionTest, PreloadedBytesComeFirst) {
  serve::StaticSession s(docroot_, "t");
  s.preload("GET /a.txt HTTP/1.1\r\nHost: x\r\n");
  client_send("\r\n");
  std::string got = run(s);
  EXPECT_EQ(count(got, "HTTP/1.1 200"), 1u);
}

TEST_F(StaticSessionTest, MalformedRequestClosesAfter400) {
  serve::StaticSession s(docroot_, "t");
  client_send("GET /a.txt HTTP/1.1\r\n Host: folded\r\n\r\n");
  serve::StaticSession::Want w;
  std::string got = run(s, &w);
  EXPECT_EQ(got.rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(w, serve::StaticSession::Want::Close);
  EXPECT_EQ(s.bad_requests(), 1u);
}

TEST_F(StaticSessionTest, ConnectionCloseIsHonoured) {
  serve::StaticSession s(docroot_, "t");
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  serve::StaticSession::Want w;
  run(s, &w);
  EXPECT_EQ(w, serve::StaticSession::Want::Close);
}

TEST_F(StaticSessionTest, CacheHitsMissesAndServesSameBytes) {
  serve::FileCache cache(2 << 20);  // a file may take a quarter: 300 KB fits
  serve::StaticSession s(docroot_, "t", &cache);
  for (int i = 0; i < 3; ++i) {
    client_send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string got = run(s);
    ASSERT_NE(got.find("\r\n\r\n"), std::string::npos);
    EXPECT_EQ(got.substr(got.find("\r\n\r\n") + 4), std::string(300000, 'z'));
  }
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.hits(), 2u);
  // A range is served from the cached copy too.
  client_send("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n");
  std::string got = run(s);
  EXPECT_NE(got.find("206"), std::string::npos);
  EXPECT_EQ(got.substr(got.find("\r\n\r\n") + 4), std::string(10, 'z'));
  EXPECT_EQ(cache.hits(), 3u);
}

TEST_F(StaticSessionTest, CacheEvictsLeastRecentlyUsedAndSkipsHugeFiles) {
  serve::FileCache cache(5000);  // a.txt (1000) + b.txt (3000) fit, a third file does not
  write("c.txt", std::string(1200, 'c'));
  serve::StaticSession s(docroot_, "t", &cache);
  for (const char* f : {"/a.txt", "/b.txt", "/a.txt", "/c.txt", "/b.txt", "/big.bin"}) {
    client_send(std::string("GET ") + f + " HTTP/1.1\r\nHost: x\r\n\r\n");
    run(s);
  }
  // a miss, b miss, a hit, c miss (evicts b, the least recently used), b miss, big: miss,
  // too large to cache.
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 5u);
  EXPECT_LE(cache.bytes(), 5000u);
}

TEST_F(StaticSessionTest, ChangedFileIsANewEntry) {
  serve::FileCache cache(1 << 20);
  serve::StaticSession s(docroot_, "t", &cache);
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
  run(s);
  write("a.txt", std::string(1500, 'n'));
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = run(s);
  EXPECT_EQ(got.substr(got.find("\r\n\r\n") + 4), std::string(1500, 'n'));
  EXPECT_EQ(cache.misses(), 2u);
}

TEST_F(StaticSessionTest, PeerFinBeforeHandoffAnswersQueuedRequestsThenCloses) {
  // handoff::kStatePeerFin: the client's FIN was consumed by the FE; this socket will
  // never read EOF. Both keep-alive requests are answered, then the session closes
  // instead of waiting for a third.
  serve::StaticSession s(docroot_, "tcpha");
  s.set_peer_fin();
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n");
  serve::StaticSession::Want w;
  std::string got = run(s, &w);
  EXPECT_EQ(count(got, "HTTP/1.1 200 OK"), 2u);
  EXPECT_EQ(w, serve::StaticSession::Want::Close);
  EXPECT_TRUE(s.peer_closed());
  EXPECT_FALSE(s.failed());
}

TEST_F(StaticSessionTest, PartialRequestIsVisibleForTheHeaderTimeout) {
  serve::StaticSession s(docroot_, "tcpha");
  client_send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /b.t");
  std::string got = run(s);
  EXPECT_EQ(count(got, "HTTP/1.1 200 OK"), 1u);
  EXPECT_TRUE(s.partial_request());  // the second head has begun
  client_send("xt HTTP/1.1\r\nHost: x\r\n\r\n");
  got = run(s);
  EXPECT_EQ(count(got, "HTTP/1.1 200 OK"), 1u);
  EXPECT_FALSE(s.partial_request());
}

}  // namespace

// Failover takeover: the backup serves the held requests again and sends only what the
// client does not have. Whatever the skip, the bytes the client ends up with are those
// of one uninterrupted run (the Date header aside, which has a fixed width).
TEST_F(StaticSessionTest, SkipOutputResumesTheResponsesWhereTheClientIs) {
  const std::string reqs =
      "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string whole;
  {
    serve::StaticSession s(docroot_, "t");
    client_send(reqs);
    whole = run(s);
  }
  ASSERT_GT(whole.size(), 301000u);
  auto without_date = [](std::string r) {
    for (size_t p = r.find("Date: "); p != std::string::npos; p = r.find("Date: ", p + 1))
      r.replace(p + 6, 29, 29, '-');
    return r;
  };
  bool routed = false;
  for (uint64_t skip : {uint64_t{0}, uint64_t{10}, uint64_t{1100}, uint64_t{150000},
                        uint64_t(whole.size() - 1), uint64_t(whole.size())}) {
    serve::StaticSession s(docroot_, "t");
    s.set_router([&](const http::Request&) {
      routed = true;
      return serve::StaticSession::kServe;
    });
    s.preload(reqs);
    s.skip_output(skip);
    std::string got = run(s);
    EXPECT_EQ(got.size(), whole.size() - skip) << skip;
    EXPECT_EQ(without_date(whole.substr(0, skip) + got), without_date(whole)) << skip;
    EXPECT_EQ(s.skipping(), 0u);
  }
  // Requests whose responses were skipped, even in part, were answered before: only a
  // skip of 0 asked the router.
  EXPECT_TRUE(routed);
}

TEST_F(StaticSessionTest, SkippedRequestsAreNotRouted) {
  serve::StaticSession s(docroot_, "t");
  int asked = 0;
  s.set_router([&](const http::Request&) {
    ++asked;
    return serve::StaticSession::kMove;
  });
  s.preload("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
  s.skip_output(5);
  std::string got = run(s);
  EXPECT_EQ(asked, 0);
  EXPECT_NE(got.find(std::string(1000, 'a')), std::string::npos);
}

// A body is sent from the file mapped. A file cut short under a response must end the
// connection as failed (the promised length cannot be kept), not raise SIGBUS.
TEST_F(StaticSessionTest, FileTruncatedUnderAResponseFailsTheConnection) {
  serve::StaticSession s(docroot_, "t");
  client_send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
  auto w = s.on_readable(sv_[0]);
  ASSERT_EQ(w, serve::StaticSession::Want::Write) << "the socket took the whole body at once";
  ASSERT_EQ(truncate((dir_ / "big.bin").c_str(), 1000), 0);
  std::string got;
  for (int i = 0; i < 10000 && w == serve::StaticSession::Want::Write; ++i) {
    drain(got);
    w = s.on_writable(sv_[0]);
  }
  drain(got);
  EXPECT_EQ(w, serve::StaticSession::Want::Close);
  EXPECT_TRUE(s.failed());
  EXPECT_LT(got.size(), 300000u);
}

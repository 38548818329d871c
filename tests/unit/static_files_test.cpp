#include "serve/static_files.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>

namespace tcpha::serve {
namespace {

using namespace tcpha::http;

namespace fs = std::filesystem;

constexpr time_t kNow = 1700000000;    // Tue, 14 Nov 2023 22:13:20 GMT
constexpr time_t kMtime = 1600000000;  // Sun, 13 Sep 2020 12:26:40 GMT
const std::string kHello = "hello world\n";

bool has_line(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

// A docroot inside a private temp dir; the parent holds a file that must stay unreachable.
class StaticFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tcpha-static-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ / "root";
    fs::create_directories(root_ / "sub");
    fs::create_directories(root_ / "empty");
    write(base_ / "secret.txt", "secret\n");
    write(root_ / "hello.txt", kHello);
    write(root_ / "index.html", "<h1>root</h1>\n");
    write(root_ / "sub" / "index.html", "<h1>sub</h1>\n");
    write(root_ / "space name.txt", "spaced\n");
    write(root_ / "photo.JPG", "jpg");
    fs::create_symlink("/etc/passwd", root_ / "abs_out");
    fs::create_symlink("../secret.txt", root_ / "rel_out");
    fs::create_symlink("hello.txt", root_ / "inside");
    fs::create_symlink("../hello.txt", root_ / "sub" / "up_inside");
    ASSERT_EQ(mkfifo((root_ / "fifo").c_str(), 0644), 0);
    for (const char* f : {"hello.txt", "index.html", "sub/index.html", "photo.JPG"})
      set_mtime(f, kMtime);
    docroot_.reset(open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(docroot_.valid());
  }
  void TearDown() override { fs::remove_all(base_); }

  static void write(const fs::path& p, const std::string& content) { std::ofstream(p) << content; }
  void set_mtime(const char* rel, time_t t) {
    timespec ts[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, (root_ / rel).c_str(), ts, 0), 0);
  }

  // Parses a head kept alive by the fixture (Request holds views into it).
  const Request& req(std::string head) {
    bufs_.push_back(std::move(head));
    reqs_.emplace_back();
    auto res = parse_request(bufs_.back(), reqs_.back());
    EXPECT_EQ(res.status, ParseStatus::Complete) << bufs_.back() << res.reason;
    return reqs_.back();
  }
  const Request& get(const std::string& target, const std::string& extra = "",
                     const std::string& method = "GET") {
    return req(method + " " + target + " HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n");
  }
  StaticReply plan(const Request& r) { return plan_static_reply(docroot_.get(), r, "tcpha", kNow); }
  std::string body_of(const StaticReply& r) {
    std::string out(r.length, '\0');
    EXPECT_EQ(pread(r.file.get(), out.data(), out.size(), r.offset),
              static_cast<ssize_t>(r.length));
    return out;
  }

  fs::path base_, root_;
  UniqueFd docroot_;
  std::deque<std::string> bufs_;
  std::deque<Request> reqs_;
};

TEST_F(StaticFiles, GetAndHead) {
  auto r = plan(get("/hello.txt"));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.head.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(r.head.ends_with("\r\n\r\n"));
  EXPECT_TRUE(has_line(r.head, "Server: tcpha"));
  EXPECT_TRUE(has_line(r.head, "Date: Tue, 14 Nov 2023 22:13:20 GMT"));
  EXPECT_TRUE(has_line(r.head, "Content-Type: text/plain; charset=utf-8"));
  EXPECT_TRUE(has_line(r.head, "Content-Length: 12"));
  EXPECT_TRUE(has_line(r.head, "Last-Modified: Sun, 13 Sep 2020 12:26:40 GMT"));
  EXPECT_TRUE(has_line(r.head, "Accept-Ranges: bytes"));
  EXPECT_NE(r.head.find("\r\nETag: \""), std::string::npos);
  EXPECT_EQ(r.head.find("Connection:"), std::string::npos);
  EXPECT_FALSE(r.close);
  ASSERT_TRUE(r.file.valid());
  EXPECT_EQ(r.offset, 0);
  EXPECT_EQ(r.length, kHello.size());
  EXPECT_EQ(body_of(r), kHello);
  EXPECT_TRUE(r.inline_body.empty());

  auto h = plan(get("/hello.txt", "", "HEAD"));
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.head, r.head);  // same head, no body
  EXPECT_EQ(h.length, 0u);
  EXPECT_FALSE(h.file.valid());
  EXPECT_TRUE(h.inline_body.empty());
}

TEST_F(StaticFiles, ErrorsCarryATextBody) {
  auto r = plan(get("/missing.txt"));
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(r.head.starts_with("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_EQ(r.inline_body, "404 Not Found\n");
  EXPECT_TRUE(has_line(r.head, "Content-Length: 14"));
  EXPECT_TRUE(has_line(r.head, "Content-Type: text/plain; charset=utf-8"));
  EXPECT_EQ(r.length, 0u);
  EXPECT_FALSE(r.file.valid());

  auto h = plan(get("/missing.txt", "", "HEAD"));
  EXPECT_EQ(h.status, 404);
  EXPECT_TRUE(has_line(h.head, "Content-Length: 14"));
  EXPECT_TRUE(h.inline_body.empty());

  EXPECT_EQ(plan(get("/hello.txt/")).status, 404);  // not a directory
  EXPECT_EQ(plan(get("/sub/nope/x")).status, 404);
}

TEST_F(StaticFiles, OnlyGetAndHead) {
  for (const char* m : {"POST", "PUT", "DELETE", "get"}) {
    auto r = plan(get("/hello.txt", "Content-Length: 0\r\n", m));
    EXPECT_EQ(r.status, 405) << m;
    EXPECT_TRUE(has_line(r.head, "Allow: GET, HEAD")) << m;
    EXPECT_EQ(r.inline_body, "405 Method Not Allowed\n");
  }
  EXPECT_EQ(plan(req("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")).status, 405);
}

TEST_F(StaticFiles, SymlinksMayNotLeaveTheDocroot) {
  EXPECT_EQ(plan(get("/abs_out")).status, 403);
  EXPECT_EQ(plan(get("/rel_out")).status, 403);
  auto in = plan(get("/inside"));
  EXPECT_EQ(in.status, 200);
  EXPECT_EQ(body_of(in), kHello);
  EXPECT_EQ(plan(get("/sub/up_inside")).status, 200);  // ".." that stays beneath is fine
  EXPECT_EQ(plan(get("/fifo")).status, 403);           // and does not block
}

TEST_F(StaticFiles, TraversalIsRefused) {
  for (const char* t :
       {"/../etc/passwd", "/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/etc/passwd", "/sub%2F..%2F..%2Fsecret.txt", "/..", "/sub/..", "/%2e%2e"}) {
    auto r = plan(get(t));
    EXPECT_EQ(r.status, 400) << t;
    EXPECT_EQ(r.length, 0u) << t;
  }
  for (const char* t : {"/%zz", "/%2", "/a%", "/hello.txt%00.png", "/%00"})
    EXPECT_EQ(plan(get(t)).status, 400) << t;
  EXPECT_EQ(plan(get("/./hello.txt")).status, 200);
  EXPECT_EQ(plan(get("//hello.txt")).status, 200);
  EXPECT_EQ(plan(get("/..hello")).status, 404);  // hidden, not traversal
  EXPECT_EQ(plan(get("/space%20name.txt")).status, 200);
  EXPECT_EQ(plan(get("/hell%6F.txt?q=1")).status, 200);
}

TEST_F(StaticFiles, UnreadableIsForbidden) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads files regardless of their mode";
  ASSERT_EQ(chmod((root_ / "hello.txt").c_str(), 0), 0);
  EXPECT_EQ(plan(get("/hello.txt")).status, 403);
}

TEST_F(StaticFiles, DirectoryIndex) {
  auto r = plan(get("/"));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(has_line(r.head, "Content-Type: text/html; charset=utf-8"));
  EXPECT_EQ(body_of(r), "<h1>root</h1>\n");
  EXPECT_EQ(body_of(plan(get("/sub/"))), "<h1>sub</h1>\n");

  auto redirect = plan(get("/sub?x=1"));
  EXPECT_EQ(redirect.status, 301);
  EXPECT_TRUE(has_line(redirect.head, "Location: /sub/?x=1"));
  EXPECT_TRUE(has_line(plan(get("/sub")).head, "Location: /sub/"));
  EXPECT_EQ(plan(get("/empty/")).status, 404);
}

// "GET //sub" once redirected to "//sub/", which a browser reads as the host "sub": an
// open redirect. The Location must stay a path on this server.
TEST_F(StaticFiles, RedirectIsNeverProtocolRelative) {
  fs::create_directories(root_ / "evil.example");
  fs::create_directories(root_ / "back\\slash");
  const std::pair<const char*, const char*> cases[] = {
      {"//sub", "Location: /sub/"},
      {"///sub?x=1", "Location: /sub/?x=1"},
      {"//evil.example", "Location: /evil.example/"},
      {"/%2F%2Fevil.example", "Location: /%2F%2Fevil.example/"},
      {"/back\\slash", "Location: /back%5Cslash/"},
  };
  for (const auto& [target, location] : cases) {
    auto r = plan(get(target));
    EXPECT_EQ(r.status, 301) << target;
    EXPECT_TRUE(has_line(r.head, location)) << target << "\n" << r.head;
    EXPECT_EQ(r.head.find("Location: //"), std::string::npos) << target;
    EXPECT_EQ(r.head.find("Location: /\\"), std::string::npos) << target;
  }
}

// Hidden files (.git, .env, .htpasswd) are never served, however the path spells them.
TEST_F(StaticFiles, HiddenFilesAreNotServed) {
  write(root_ / ".env", "SECRET=1\n");
  fs::create_directories(root_ / ".git");
  write(root_ / ".git" / "config", "[core]\n");
  write(root_ / "sub" / ".htpasswd", "u:x\n");
  fs::create_directories(root_ / ".well-known" / "acme-challenge");
  write(root_ / ".well-known" / "acme-challenge" / "tok", "tok\n");
  fs::create_directories(root_ / "sub" / ".well-known");
  write(root_ / "sub" / ".well-known" / "x", "x\n");
  for (const char* t : {"/.env", "/.git/config", "/.git/", "/.git", "/sub/.htpasswd",
                        "/%2eenv", "/%2Egit/config", "/sub%2F.htpasswd", "//.env", "/./.env",
                        "/sub/.well-known/x"}) {
    auto r = plan(get(t));
    EXPECT_EQ(r.status, 404) << t;
    EXPECT_EQ(r.length, 0u) << t;
    EXPECT_FALSE(r.file.valid()) << t;
  }
  EXPECT_EQ(plan(get("/.well-known/acme-challenge/tok")).status, 200);
  write(root_ / "sub" / "a.b", "ab\n");
  EXPECT_EQ(plan(get("/sub/a.b")).status, 200);  // a dot inside a name is fine
  EXPECT_EQ(plan(get("/hello.txt")).status, 200);
}

TEST_F(StaticFiles, ContentTypes) {
  const std::pair<const char*, const char*> cases[] = {
      {"a.html", "text/html; charset=utf-8"},
      {"a.css", "text/css; charset=utf-8"},
      {"a.js", "text/javascript; charset=utf-8"},
      {"a.json", "application/json"},
      {"a.txt", "text/plain; charset=utf-8"},
      {"a.png", "image/png"},
      {"a.jpg", "image/jpeg"},
      {"a.JPEG", "image/jpeg"},
      {"a.gif", "image/gif"},
      {"a.webp", "image/webp"},
      {"a.svg", "image/svg+xml"},
      {"a.ico", "image/x-icon"},
      {"a.pdf", "application/pdf"},
      {"a.bin", "application/octet-stream"},
      {"noext", "application/octet-stream"},
      {"dir.png/file", "application/octet-stream"},
      {"a.tar.gz", "application/octet-stream"},
  };
  for (const auto& [name, type] : cases) EXPECT_EQ(content_type_for(name), type) << name;
  EXPECT_TRUE(has_line(plan(get("/photo.JPG")).head, "Content-Type: image/jpeg"));
}

TEST_F(StaticFiles, ConditionalGet) {
  const std::string lm = "Sun, 13 Sep 2020 12:26:40 GMT";
  auto r = plan(get("/hello.txt", "If-Modified-Since: " + lm + "\r\n"));
  EXPECT_EQ(r.status, 304);
  EXPECT_TRUE(r.head.starts_with("HTTP/1.1 304 Not Modified\r\n"));
  EXPECT_EQ(r.head.find("Content-Length"), std::string::npos);
  EXPECT_TRUE(has_line(r.head, "Last-Modified: " + lm));
  EXPECT_EQ(r.length, 0u);
  EXPECT_TRUE(r.inline_body.empty());
  EXPECT_EQ(plan(get("/hello.txt", "If-Modified-Since: Mon, 13 Sep 2021 00:00:00 GMT\r\n")).status,
            304);
  EXPECT_EQ(plan(get("/hello.txt", "If-Modified-Since: Sun, 13 Sep 2020 12:26:39 GMT\r\n")).status,
            200);
  EXPECT_EQ(plan(get("/hello.txt", "If-Modified-Since: yesterday\r\n")).status, 200);
  EXPECT_EQ(plan(get("/hello.txt", "If-Modified-Since: Sunday, 13-Sep-20 12:26:40 GMT\r\n")).status,
            200);
  // A date after `now` is invalid and ignored.
  EXPECT_EQ(plan(get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")).status,
            200);

  size_t at = r.head.find("ETag: ") + 6;
  std::string etag = r.head.substr(at, r.head.find("\r\n", at) - at);
  EXPECT_EQ(plan(get("/hello.txt", "If-None-Match: " + etag + "\r\n")).status, 304);
  EXPECT_EQ(plan(get("/hello.txt", "If-None-Match: \"x\", W/" + etag + "\r\n")).status, 304);
  EXPECT_EQ(plan(get("/hello.txt", "If-None-Match: *\r\n")).status, 304);
  // If-None-Match wins over If-Modified-Since.
  EXPECT_EQ(plan(get("/hello.txt", "If-None-Match: \"other\"\r\nIf-Modified-Since: " + lm + "\r\n"))
                .status,
            200);

  // A file modified in the future claims `now` as its modification time.
  set_mtime("hello.txt", kNow + 3600);
  EXPECT_TRUE(
      has_line(plan(get("/hello.txt")).head, "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT"));
}

TEST_F(StaticFiles, Ranges) {
  struct Case {
    const char* range;
    off_t offset;
    uint64_t length;
    const char* content_range;
  } cases[] = {
      {"bytes=0-4", 0, 5, "bytes 0-4/12"},    {"bytes=6-", 6, 6, "bytes 6-11/12"},
      {"bytes=-3", 9, 3, "bytes 9-11/12"},    {"bytes=-100", 0, 12, "bytes 0-11/12"},
      {"bytes=5-100", 5, 7, "bytes 5-11/12"}, {"BYTES=11-11", 11, 1, "bytes 11-11/12"},
  };
  for (const auto& c : cases) {
    auto r = plan(get("/hello.txt", std::string("Range: ") + c.range + "\r\n"));
    EXPECT_EQ(r.status, 206) << c.range;
    EXPECT_TRUE(r.head.starts_with("HTTP/1.1 206 Partial Content\r\n"));
    EXPECT_TRUE(has_line(r.head, std::string("Content-Range: ") + c.content_range)) << c.range;
    EXPECT_TRUE(has_line(r.head, "Content-Length: " + std::to_string(c.length))) << c.range;
    EXPECT_EQ(r.offset, c.offset) << c.range;
    EXPECT_EQ(r.length, c.length) << c.range;
    EXPECT_EQ(body_of(r), kHello.substr(c.offset, c.length));
  }
  for (const char* unsat : {"bytes=12-", "bytes=100-200", "bytes=-0"}) {
    auto r = plan(get("/hello.txt", std::string("Range: ") + unsat + "\r\n"));
    EXPECT_EQ(r.status, 416) << unsat;
    EXPECT_TRUE(has_line(r.head, "Content-Range: bytes */12")) << unsat;
    EXPECT_FALSE(r.inline_body.empty());
    EXPECT_EQ(r.length, 0u);
  }
  for (const char* ignored : {"bytes=0-1,3-4", "bytes=5-2", "items=0-1", "bytes=abc",
                              "bytes=", "bytes=1-2-3", "bytes=99999999999999999999999-"}) {
    auto r = plan(get("/hello.txt", std::string("Range: ") + ignored + "\r\n"));
    EXPECT_EQ(r.status, 200) << ignored;
    EXPECT_EQ(r.length, 12u) << ignored;
  }
  // Range is defined for GET only.
  EXPECT_EQ(plan(get("/hello.txt", "Range: bytes=0-4\r\n", "HEAD")).status, 200);

  // If-Range: the range applies only while the validator still matches.
  auto full = plan(get("/hello.txt"));
  size_t at = full.head.find("ETag: ") + 6;
  std::string etag = full.head.substr(at, full.head.find("\r\n", at) - at);
  EXPECT_EQ(plan(get("/hello.txt", "Range: bytes=0-4\r\nIf-Range: " + etag + "\r\n")).status, 206);
  EXPECT_EQ(plan(get("/hello.txt", "Range: bytes=0-4\r\nIf-Range: \"stale\"\r\n")).status, 200);
  EXPECT_EQ(plan(get("/hello.txt", "Range: bytes=0-4\r\nIf-Range: W/" + etag + "\r\n")).status,
            200);
  EXPECT_EQ(
      plan(get("/hello.txt", "Range: bytes=0-4\r\nIf-Range: Sun, 13 Sep 2020 12:26:40 GMT\r\n"))
          .status,
      206);
}

TEST_F(StaticFiles, ConnectionHandling) {
  struct Case {
    const char* head;
    const char* connection;  // expected Connection header, or nullptr
    bool close;
  } cases[] = {
      {"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", nullptr, false},
      {"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "close", true},
      {"GET /hello.txt HTTP/1.0\r\n\r\n", "close", true},
      {"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive", false},
      {"GET /missing HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive", false},
      {"GET /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "close", true},
  };
  for (const auto& c : cases) {
    auto r = plan(req(c.head));
    EXPECT_EQ(r.close, c.close) << c.head;
    if (c.connection)
      EXPECT_TRUE(has_line(r.head, std::string("Connection: ") + c.connection)) << c.head;
    else
      EXPECT_EQ(r.head.find("Connection:"), std::string::npos) << c.head;
  }
}

TEST(HttpResponse, SimpleReply) {
  std::string r = simple_reply(503, true, kNow);
  EXPECT_EQ(r,
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 24\r\n"
            "Connection: close\r\n"
            "\r\n"
            "503 Service Unavailable\n");
  std::string k = simple_reply(400, false, kNow);
  EXPECT_EQ(k.find("Connection"), std::string::npos);
  EXPECT_TRUE(k.ends_with("\r\n\r\n400 Bad Request\n"));
  EXPECT_NE(simple_reply(431, true).find("431 Request Header Fields Too Large\r\n"),
            std::string::npos);
}

TEST(HttpResponse, ReasonPhrases) {
  EXPECT_STREQ(reason_phrase(200), "OK");
  EXPECT_STREQ(reason_phrase(408), "Request Timeout");
  EXPECT_STREQ(reason_phrase(414), "URI Too Long");
  EXPECT_STREQ(reason_phrase(416), "Range Not Satisfiable");
  EXPECT_STREQ(reason_phrase(599), "Unknown");
}

// format_http_date computes the calendar itself: it must agree with the C library's
// gmtime_r + strftime everywhere, before 1970, across leap days and century rules.
TEST(HttpResponse, DatesAgreeWithTheCLibrary) {
  auto libc = [](time_t t) {
    struct tm tm;
    gmtime_r(&t, &tm);
    char day[8], mon[8], buf[64];
    strftime(day, sizeof day, "%a", &tm);  // the "C" locale's English names
    strftime(mon, sizeof mon, "%b", &tm);
    snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", day, tm.tm_mday, mon,
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return std::string(buf);
  };
  std::vector<time_t> ts = {0,          -1,          86399,       86400,       -86400,
                            951782400,  951868799,   4107542400,  4107542399,  -2208988800,
                            253402300799, 1700000000, 1796083200, 68169600,    -62135596800};
  std::mt19937_64 rng(17);
  for (int i = 0; i < 20000; ++i)  // years 1 to 9999
    ts.push_back(time_t(int64_t(rng() % 315537897600ull) - 62135596800ll));
  for (time_t t : ts) ASSERT_EQ(format_http_date(t), libc(t)) << "t = " << t;
}

TEST(HttpResponse, Dates) {
  EXPECT_EQ(format_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
  EXPECT_EQ(parse_http_date(format_http_date(kNow)), kNow);
  for (const char* bad : {"Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT",
                          "Sun Nov  6 08:49:37 1994", "Sun, 06 Foo 1994 08:49:37 GMT",
                          "Xyz, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
                          "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT ", ""})
    EXPECT_EQ(parse_http_date(bad), std::nullopt) << bad;
}

}  // namespace
}  // namespace tcpha::serve

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "metrics/endpoint.hpp"
#include "metrics/exposition.hpp"
#include "metrics/registry.hpp"

using namespace tcpha::metrics;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kChecker = std::string(TCPHA_TEST_DATA) + "/../unit/prom_check.py";

// A python3 that has prometheus_client: Debian's first (a python3 earlier in PATH,
// e.g. from pyenv, may not see Debian's packages), then whatever PATH finds.
const std::optional<std::string>& python() {
  static const std::optional<std::string> found = []() -> std::optional<std::string> {
    for (std::string py : {"/usr/bin/python3", "python3"})
      if (std::system((py + " -c 'import prometheus_client' >/dev/null 2>&1").c_str()) == 0)
        return py;
    return std::nullopt;
  }();
  return found;
}

#define REQUIRE_PARSER() \
  if (!python())         \
  GTEST_SKIP() << "no python3 with prometheus_client (apt-get install python3-prometheus-client)"

struct Checked {
  int status = -1;  // the checker's exit status
  json families;    // what the parser read, when status == 0
};

// Runs tests/unit/prom_check.py: the reference client's parser plus the format rules
// it does not enforce (grouping, one HELP/TYPE, cumulative buckets).
Checked check(const std::string& text) {
  auto path = std::filesystem::temp_directory_path() /
              ("metrics_test." + std::to_string(getpid()) + ".txt");
  std::ofstream(path) << text;
  std::string cmd = *python() + " " + kChecker + " < " + path.string();
  Checked r;
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  std::filesystem::remove(path);
  if (r.status == 0) r.families = json::parse(out);
  return r;
}

const json* find_family(const json& families, const std::string& name) {
  for (const auto& f : families)
    if (f["name"] == name) return &f;
  return nullptr;
}

TEST(Names, MetricAndLabelNames) {
  EXPECT_TRUE(valid_metric_name("tcpha_fe_accepted_total"));
  EXPECT_TRUE(valid_metric_name(":recording:rule"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_FALSE(valid_metric_name("1abc"));
  EXPECT_FALSE(valid_metric_name("a-b"));
  EXPECT_TRUE(valid_label_name("backend"));
  EXPECT_FALSE(valid_label_name("__name__"));
  EXPECT_FALSE(valid_label_name("a:b"));
  EXPECT_FALSE(valid_label_name("9x"));
}

TEST(Exposition, CounterAndGaugeText) {
  Exposition e;
  e.counter("tcpha_accepted", "connections accepted", 42);
  e.gauge("tcpha_flows", "flows in the\\table\nnow", 2.5, {{"fe", "fe1"}});
  e.gauge("tcpha_ratio", "a ratio", std::numeric_limits<double>::infinity());
  EXPECT_EQ(e.str(),
            "# HELP tcpha_accepted_total connections accepted\n"
            "# TYPE tcpha_accepted_total counter\n"
            "tcpha_accepted_total 42\n"
            "# HELP tcpha_flows flows in the\\\\table\\nnow\n"
            "# TYPE tcpha_flows gauge\n"
            "tcpha_flows{fe=\"fe1\"} 2.5\n"
            "# HELP tcpha_ratio a ratio\n"
            "# TYPE tcpha_ratio gauge\n"
            "tcpha_ratio +Inf\n");
  EXPECT_TRUE(e.errors().empty());
}

TEST(Exposition, SamplesOfOneFamilyAreGrouped) {
  Exposition e;
  e.counter("tcpha_handoffs_total", "handoffs", 1, {{"backend", "be1"}});
  e.gauge("tcpha_up", "up", 1, {{"backend", "be1"}});
  e.counter("tcpha_handoffs_total", "handoffs", 2, {{"backend", "be2"}});
  e.gauge("tcpha_up", "up", 0, {{"backend", "be2"}});
  const std::string text = e.str();
  EXPECT_EQ(text.find("# HELP tcpha_handoffs_total"), text.rfind("# HELP tcpha_handoffs_total"));
  EXPECT_NE(text.find("tcpha_handoffs_total{backend=\"be1\"} 1\n"
                      "tcpha_handoffs_total{backend=\"be2\"} 2\n"),
            std::string::npos);

  REQUIRE_PARSER();
  Checked c = check(text);
  ASSERT_EQ(c.status, 0) << text;
  ASSERT_EQ(c.families.size(), 2u);
  EXPECT_EQ(c.families[0]["name"], "tcpha_handoffs");  // the parser drops _total
  EXPECT_EQ(c.families[0]["type"], "counter");
  ASSERT_EQ(c.families[0]["samples"].size(), 2u);
  EXPECT_EQ(c.families[0]["samples"][1]["labels"]["backend"], "be2");
  EXPECT_EQ(c.families[0]["samples"][1]["value"], 2.0);
  EXPECT_EQ(c.families[1]["name"], "tcpha_up");
  EXPECT_EQ(c.families[1]["samples"].size(), 2u);
}

TEST(Exposition, LabelValuesAreEscaped) {
  const std::string nasty = "a\\b \"quoted\"\nline two, x=\"y\"}";
  Exposition e;
  e.gauge("tcpha_info", "labels", 1, {{"path", nasty}, {"rule", "images"}});
  const std::string text = e.str();
  EXPECT_NE(text.find(R"(path="a\\b \"quoted\"\nline two, x=\"y\"}",rule="images")"),
            std::string::npos)
      << text;

  REQUIRE_PARSER();
  Checked c = check(text);
  ASSERT_EQ(c.status, 0) << text;
  const json& labels = c.families[0]["samples"][0]["labels"];
  EXPECT_EQ(labels["path"], nasty);
  EXPECT_EQ(labels["rule"], "images");
}

TEST(Exposition, HistogramFromLatencyBuckets) {
  tcpha::LatencyHistogram h;
  for (uint64_t us : {3, 3, 40, 700, 3000, 20000}) h.record_ns(us * 1000);
  Exposition e;
  e.histogram("tcpha_handoff_seconds", "handoff latency", h, {{"fe", "fe"}});
  ASSERT_TRUE(e.errors().empty());
  // Bounds are written as the reference (Go) client writes them.
  EXPECT_NE(e.str().find("le=\"1e-05\""), std::string::npos) << e.str();
  EXPECT_NE(e.str().find("le=\"0.0001\""), std::string::npos);
  EXPECT_NE(e.str().find("le=\"0.002048\""), std::string::npos);

  REQUIRE_PARSER();
  Checked c = check(e.str());
  ASSERT_EQ(c.status, 0) << e.str();
  const json* f = find_family(c.families, "tcpha_handoff_seconds");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ((*f)["type"], "histogram");
  std::map<double, double> buckets;  // le -> cumulative count
  double sum = -1, count = -1;
  for (const auto& s : (*f)["samples"]) {
    EXPECT_EQ(s["labels"]["fe"], "fe");
    if (s["name"] == "tcpha_handoff_seconds_bucket") {
      std::string le = s["labels"]["le"];
      buckets[le == "+Inf" ? INFINITY : std::stod(le)] = s["value"];
    } else if (s["name"] == "tcpha_handoff_seconds_sum") {
      sum = s["value"];
    } else {
      count = s["value"];
    }
  }
  ASSERT_EQ(buckets.size(), kHistogramBoundsUs.size() + 1);
  EXPECT_EQ(buckets[5e-6], 2);  // 3, 3
  EXPECT_EQ(buckets[25e-6], 2);
  EXPECT_EQ(buckets[50e-6], 3);  // + 40
  EXPECT_EQ(buckets[500e-6], 3);
  EXPECT_EQ(buckets[1e-3], 4);  // + 700
  EXPECT_EQ(buckets[2.048e-3], 4);
  EXPECT_EQ(buckets[4.096e-3], 5);   // + 3000
  EXPECT_EQ(buckets[17.408e-3], 5);  // 20000 is past the last edge
  EXPECT_EQ(buckets[INFINITY], 6);
  EXPECT_EQ(count, 6);
  // Midpoints: 3.5 + 3.5 + 40.5 + 700.5 + 2976 (bucket [2944, 3008)) + 17408 (overflow,
  // counted at its lower edge) microseconds.
  EXPECT_NEAR(sum, 21132e-6, 1e-12);
}

TEST(Exposition, EmptyHistogramIsValid) {
  tcpha::LatencyHistogram h;
  Exposition e;
  e.histogram("tcpha_import_seconds", "import latency", h);
  EXPECT_NE(e.str().find("tcpha_import_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos);
  EXPECT_NE(e.str().find("tcpha_import_seconds_count 0\n"), std::string::npos);
  REQUIRE_PARSER();
  EXPECT_EQ(check(e.str()).status, 0) << e.str();
}

TEST(Exposition, MisuseIsReportedAndLeavesAValidDocument) {
  Exposition e;
  e.counter("tcpha_ok", "fine", 1);
  e.counter("1bad", "bad name", 1);
  e.gauge("tcpha_g", "bad label", 1, {{"__reserved", "x"}});
  e.gauge("tcpha_g", "label twice", 1, {{"a", "1"}, {"a", "2"}});
  e.gauge("tcpha_ok_total", "other type", 1);     // the counter's family
  e.counter("tcpha_ok", "same series again", 2);  // duplicate series
  tcpha::LatencyHistogram h;
  e.histogram("tcpha_h", "le is reserved", h, {{"le", "1"}});
  e.histogram("tcpha_x", "histogram", h);
  e.gauge("tcpha_x_count", "clashes with tcpha_x's _count", 1);
  std::string errors;
  for (const auto& err : e.errors()) errors += err + "\n";
  EXPECT_EQ(e.errors().size(), 7u) << errors;
  const std::string text = e.str();
  EXPECT_EQ(text.find("1bad"), std::string::npos);
  EXPECT_EQ(text.find("tcpha_x_count 1"), std::string::npos);
  EXPECT_NE(text.find("tcpha_ok_total 1\n"), std::string::npos);
  EXPECT_EQ(text.find("tcpha_ok_total 2"), std::string::npos);

  REQUIRE_PARSER();
  EXPECT_EQ(check(text).status, 0) << text;
}

#define TEST_COUNTERS(X)          \
  X(accepted, "accepted")         \
  X(HOLD_DROP, "dropped on hold") \
  X(bytes_sent, "bytes sent")

constexpr auto kTestCounters = std::to_array<CounterInfo>({TEST_COUNTERS(TCPHA_METRICS_COUNTER)});

TEST(Registry, OneTableFeedsStatusJsonAndPrometheus) {
  std::array<std::atomic<uint64_t>, 3> live{};
  live[0] = 7;
  live[1] = 8;
  live[2] = 9;
  auto values = snapshot(live);

  json j = counters_json(kTestCounters, values);
  EXPECT_EQ(j, json({{"accepted", 7}, {"hold_drop", 8}, {"bytes_sent", 9}}));

  Exposition e;
  add_counters(e, "tcpha_test_", kTestCounters, values, {{"node", "fe"}});
  const std::string text = e.str();
  EXPECT_NE(text.find("# HELP tcpha_test_hold_drop_total dropped on hold\n"
                      "# TYPE tcpha_test_hold_drop_total counter\n"
                      "tcpha_test_hold_drop_total{node=\"fe\"} 8\n"),
            std::string::npos)
      << text;

  tcpha::LatencyHistogram h;
  h.record_ns(30'000);
  json lat = latency_json(h);
  EXPECT_EQ(lat["count"], 1);
  EXPECT_EQ(lat["p50"], 31.0);  // upper edge of the 30 us bucket

  REQUIRE_PARSER();
  Checked c = check(text);
  ASSERT_EQ(c.status, 0) << text;
  EXPECT_EQ(c.families.size(), 3u);
}

// ---- the HTTP endpoint ----

// `from`: the client's source address (any 127.x.y.z works on lo), for allow lists.
tcpha::UniqueFd connect_to(uint16_t port, const char* from = nullptr) {
  tcpha::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{3, 0};  // a hung server fails the test instead of hanging it
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (from) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr = *tcpha::parse_ipv4(from);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&src), sizeof src), 0) << from;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  return fd;
}

// Everything the server sends until it closes (or 3 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
  return out;
}

std::string request(uint16_t port, const std::string& raw, const char* from = nullptr) {
  auto fd = connect_to(port, from);
  EXPECT_EQ(::send(fd.get(), raw.data(), raw.size(), MSG_NOSIGNAL), ssize_t(raw.size()));
  return read_all(fd.get());
}

std::string body_of(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string sample_document() {
  Exposition e;
  e.counter("tcpha_fe_accepted", "accepted", 3, {{"fe", "fe"}});
  tcpha::LatencyHistogram h;
  h.record_ns(25'000);
  e.histogram("tcpha_fe_handoff_seconds", "handoff latency", h);
  return e.str();
}

class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ep = Endpoint::start("127.0.0.1:0", [this] {
      ++renders;
      return sample_document();
    });
    ASSERT_TRUE(ep.ok()) << ep.error().message();
    endpoint = std::move(*ep);
    ASSERT_NE(endpoint->port(), 0);
  }
  std::atomic<int> renders{0};
  std::unique_ptr<Endpoint> endpoint;
};

TEST_F(EndpointTest, ServesMetrics) {
  std::string r = request(endpoint->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 OK\r\n")) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  const std::string body = body_of(r);
  EXPECT_EQ(body, sample_document());
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos);
  EXPECT_EQ(renders, 1);

  REQUIRE_PARSER();
  EXPECT_EQ(check(body).status, 0) << body;
}

TEST_F(EndpointTest, AnswersOtherRequestsWithoutRendering) {
  const uint16_t port = endpoint->port();
  EXPECT_TRUE(request(port, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
  EXPECT_TRUE(request(port, "GET /metricsx HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404 "));
  EXPECT_TRUE(request(port, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
  EXPECT_TRUE(request(port, "garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
  EXPECT_TRUE(
      request(port, std::string(Endpoint::kMaxHead + 10, 'a')).starts_with("HTTP/1.1 431 "));
  EXPECT_EQ(renders, 0);
  // HEAD: the same head as GET, no body; a query string is allowed; bare LF ends a head.
  std::string head = request(port, "HEAD /metrics?x=1 HTTP/1.1\n\n");
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_EQ(body_of(head), "");
}

TEST_F(EndpointTest, HeadSentInPiecesIsAnswered) {
  auto fd = connect_to(endpoint->port());
  for (std::string part : {"GET /met", "rics HTTP/1.1\r\n", "\r\n"}) {
    ASSERT_EQ(::send(fd.get(), part.data(), part.size(), MSG_NOSIGNAL), ssize_t(part.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(body_of(read_all(fd.get())), sample_document());
}

TEST_F(EndpointTest, SilentClientDoesNotBlockOthers) {
  auto silent = connect_to(endpoint->port());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the server accept it
  auto t0 = Clock::now();
  std::string r = request(endpoint->port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(300));
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 OK\r\n"));

  // The silent one is dropped once its head deadline passes, with no answer.
  EXPECT_EQ(read_all(silent.get()), "");
  auto waited = Clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(Endpoint::kHeadTimeoutMs - 100));
  EXPECT_LT(waited, std::chrono::milliseconds(Endpoint::kHeadTimeoutMs + 1000));
}

TEST_F(EndpointTest, ManySilentClientsOnlyDelayUntilTheirDeadline) {
  std::vector<tcpha::UniqueFd> silent;
  for (size_t i = 0; i < Endpoint::kMaxClients + 4; ++i)
    silent.push_back(connect_to(endpoint->port()));
  auto t0 = Clock::now();
  std::string r = request(endpoint->port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(3 * Endpoint::kHeadTimeoutMs));
}

// Silent connections used to hold all kMaxClients slots until their head deadline, so
// a real scrape waited (and an attacker reconnecting every second held it off for
// good). Now a new connection takes the slot of the oldest one still silent.
TEST_F(EndpointTest, SilentClientsCannotHoldTheSlots) {
  std::vector<tcpha::UniqueFd> silent;
  for (size_t i = 0; i < Endpoint::kMaxClients + 4; ++i)
    silent.push_back(connect_to(endpoint->port()));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // all accepted
  auto t0 = Clock::now();
  std::string r = request(endpoint->port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 OK\r\n")) << r;
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(300));
  // The evicted ones were closed unanswered, the oldest first.
  EXPECT_EQ(read_all(silent.front().get()), "");
}

// Only addresses in the allow list are served; others are closed unanswered.
TEST(Endpoint, AllowListDecidesWhoIsServed) {
  std::atomic<int> renders{0};
  auto render = [&] {
    ++renders;
    return sample_document();
  };
  auto ep = Endpoint::start("127.0.0.1:0", render, {*tcpha::parse_ipv4_prefix("127.0.0.2")});
  ASSERT_TRUE(ep.ok()) << ep.error().message();
  const uint16_t port = (*ep)->port();
  const std::string get = "GET /metrics HTTP/1.1\r\n\r\n";
  EXPECT_EQ(request(port, get, "127.0.0.1"), "");
  EXPECT_EQ(request(port, get, "127.0.0.3"), "");
  EXPECT_EQ(renders, 0);
  EXPECT_TRUE(request(port, get, "127.0.0.2").starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_EQ(renders, 1);

  // No list: loopback only, which a loopback listener serves as before.
  auto local = Endpoint::start("127.0.0.1:0", render);
  ASSERT_TRUE(local.ok());
  EXPECT_TRUE(request((*local)->port(), get, "127.0.0.9").starts_with("HTTP/1.1 200 OK\r\n"));
}

// A listener other hosts can reach must come with a list of who may use it.
TEST(Endpoint, NonLoopbackAddressNeedsAnAllowList) {
  auto render = [] { return sample_document(); };
  for (const char* addr : {"0.0.0.0:0", "10.1.2.3:0"}) {
    auto ep = Endpoint::start(addr, render);
    ASSERT_FALSE(ep.ok()) << addr;
    EXPECT_NE(ep.error().message().find("metrics_allow"), std::string::npos)
        << ep.error().message();
  }
  auto any = Endpoint::start("0.0.0.0:0", render, {*tcpha::parse_ipv4_prefix("127.0.0.0/8")});
  ASSERT_TRUE(any.ok()) << any.error().message();
  EXPECT_TRUE(request((*any)->port(), "GET /metrics HTTP/1.1\r\n\r\n")
                  .starts_with("HTTP/1.1 200 OK\r\n"));
}

TEST_F(EndpointTest, StopsPromptlyWithClientsConnected) {
  auto silent = connect_to(endpoint->port());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto t0 = Clock::now();
  endpoint.reset();
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(200));
  EXPECT_EQ(read_all(silent.get()), "");  // closed by the server
}

TEST(Endpoint, RejectsBadAddresses) {
  auto render = [] { return std::string(); };
  for (const char* bad : {"", "localhost:9180", "127.0.0.1", "127.0.0.1:70000", "1.2.3:80"}) {
    auto ep = Endpoint::start(bad, render);
    EXPECT_FALSE(ep.ok()) << bad;
  }
  auto first = Endpoint::start("127.0.0.1:0", render);
  ASSERT_TRUE(first.ok());
  auto second = Endpoint::start("127.0.0.1:" + std::to_string((*first)->port()), render);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().err, EADDRINUSE);
}

}  // namespace

// HTTP request-head parsing, the first thing the FE does with every connection.
#include <benchmark/benchmark.h>

#include <string>

#include "fixtures.hpp"
#include "http/request.hpp"

namespace {

using tcpha::bench::kBrowserRequest;

void BM_HttpParseRequest(benchmark::State& state) {
  tcpha::http::Request req;
  for (auto _ : state) {
    auto r = tcpha::http::parse_request(kBrowserRequest, req);
    if (r.status != tcpha::http::ParseStatus::Complete) {
      state.SkipWithError("request did not parse");
      break;
    }
    benchmark::DoNotOptimize(req.path.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kBrowserRequest.size()));
}
BENCHMARK(BM_HttpParseRequest);

}  // namespace

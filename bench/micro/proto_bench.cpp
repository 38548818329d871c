// One HANDOFF control frame: the FE encodes and MACs it, the BE verifies and decodes it.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fixtures.hpp"
#include "proto/control.hpp"

namespace {

void BM_ProtoHandoffFrame(benchmark::State& state) {
  if (sodium_init() < 0) {
    state.SkipWithError("sodium_init failed");
    return;
  }
  std::array<uint8_t, 32> key{};
  randombytes_buf(key.data(), key.size());
  tcpha::proto::Session fe(key, tcpha::proto::Role::Fe, "fe");
  tcpha::proto::Session be(key, tcpha::proto::Role::Be, "be1");
  std::string fe_out, be_out, fe_auth, be_auth, none;
  std::vector<tcpha::proto::Message> msgs;
  fe.start(fe_out);
  be.start(be_out);
  // HELLOs both ways, each answered with an AUTH (control.hpp).
  if (!be.feed(fe_out, msgs, be_auth).ok() || !fe.feed(be_out, msgs, fe_auth).ok() ||
      !be.feed(fe_auth, msgs, none).ok() || !fe.feed(be_auth, msgs, none).ok() ||
      !fe.established() || !be.established()) {
    state.SkipWithError("session setup failed");
    return;
  }
  tcpha::proto::HandoffMsg h;
  h.state.snd_seq = 123456789;
  h.state.mss = 1448;
  h.request = tcpha::bench::kBrowserRequest;
  std::string wire;
  for (auto _ : state) {
    ++h.id;
    wire.clear();
    msgs.clear();
    if (!fe.send(h, wire) || !be.feed(wire, msgs, none).ok() || msgs.size() != 1) {
      state.SkipWithError("frame did not round-trip");
      break;
    }
    benchmark::DoNotOptimize(msgs.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) *
                          int64_t(tcpha::proto::kHeaderSize + tcpha::proto::kTcpStateWireSize + 12 +
                                  h.request.size() + tcpha::proto::kMacSize));
}
BENCHMARK(BM_ProtoHandoffFrame);

}  // namespace

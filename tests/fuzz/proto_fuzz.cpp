// libFuzzer target for the control protocol's handling of untrusted bytes. Build (not
// wired into CMake):
//   clang++ -std=c++20 -fsanitize=fuzzer,address -I src tests/fuzz/proto_fuzz.cpp \
//     src/proto/*.cpp -lsodium
// Raw bytes reach a BE session exactly as from a socket; since they cannot answer its
// challenge (control.hpp: HELLO, then AUTH), the payload decoder is also fed directly,
// which is what an authenticated but malicious peer could reach.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "proto/control.hpp"

namespace {

const std::array<uint8_t, 32> kKey = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                      12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                      23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tcpha::proto;

  // As from the network, in two reads split where the first byte says.
  Session be(kKey, Role::Be, "be1");
  std::string out, in;
  std::vector<Message> msgs;
  be.start(out);
  const size_t cut = size ? data[0] % (size + 1) : 0;
  in.assign(reinterpret_cast<const char*>(data), cut);
  bool ok = be.feed(in, msgs, out).ok();
  if (ok) {
    in.append(reinterpret_cast<const char*>(data) + cut, size - cut);
    ok = be.feed(in, msgs, out).ok();
  }
  // Nothing unauthenticated may ever be delivered, and no input can answer the
  // session's fresh challenge: even a valid HELLO (the seed corpus has one, signed with
  // kKey) leaves the session unestablished.
  if (!msgs.empty() || be.established()) std::abort();
  // While the input is acceptable so far, less than a HELLO or an AUTH frame waits: an
  // unauthenticated peer cannot make the session buffer more.
  if (ok && in.size() >= std::max(kHelloSize, kHeaderSize + kAuthSize + kMacSize)) std::abort();

  // The payload decoder: the first byte is the type. Whatever decodes must re-encode to
  // the same bytes, since every encoding is canonical.
  if (size == 0) return 0;
  auto m = decode_payload(static_cast<MsgType>(data[0]), data + 1, size - 1);
  if (m.ok()) {
    std::string again;
    if (!encode_payload(*m, again) || type_of(*m) != static_cast<MsgType>(data[0]) ||
        again != std::string(reinterpret_cast<const char*>(data) + 1, size - 1)) {
      std::abort();
    }
  }
  return 0;
}

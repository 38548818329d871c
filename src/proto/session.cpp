// Framing, authentication and session setup of the control protocol (design: control.hpp).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "proto/bytes.hpp"
#include "proto/control.hpp"

namespace tcpha::proto {
namespace {

constexpr size_t kLabelSize = 18;
constexpr char kLabelFe2Be[] = "tcpha-ctl-v2 fe2be";
constexpr char kLabelBe2Fe[] = "tcpha-ctl-v2 be2fe";
static_assert(sizeof(kLabelFe2Be) == kLabelSize + 1 && sizeof(kLabelBe2Fe) == kLabelSize + 1);

// HELLO layout offsets.
constexpr size_t kHelloRole = 6, kHelloPad = 7, kHelloId = 8, kHelloNonce = kHelloId + kNodeIdSize,
                 kHelloMac = kHelloNonce + kNonceSize;
static_assert(kHelloMac + kHelloMacSize == kHelloSize);
static_assert(kMacSize == crypto_aead_chacha20poly1305_ietf_ABYTES);

// Frame header offsets.
constexpr size_t kOffType = 5, kOffFlags = 6, kOffLength = 8, kOffSeq = 12;

Error malformed(std::string what) { return Error{EBADMSG, "control frame: " + std::move(what)}; }
Error violation(std::string what) { return Error{EPROTO, "control protocol: " + std::move(what)}; }

// Checks as much of magic and version as has arrived, so that garbage fails at once
// instead of after a whole frame's worth of bytes.
bool prefix_ok(const uint8_t* p, size_t n) {
  const size_t m = std::min(n, sizeof(kMagic));
  if (std::memcmp(p, kMagic, m) != 0) return false;
  return n <= sizeof(kMagic) || p[sizeof(kMagic)] == kVersion;
}

uint8_t* bytes_at(std::string& s, size_t off) { return reinterpret_cast<uint8_t*>(s.data()) + off; }

// A frame's nonce: its seq, used once per session and direction (control.hpp).
std::array<uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> frame_nonce(uint64_t seq) {
  std::array<uint8_t, crypto_aead_chacha20poly1305_ietf_NPUBBYTES> n{};
  store_be(n.data() + n.size() - 8, seq);
  return n;
}

}  // namespace

Session::Session(const std::array<uint8_t, 32>& cluster_key, Role self, std::string_view node_id)
    : cluster_key_(cluster_key), self_(self) {
  // Idempotent and thread-safe; required before randombytes_buf. It fails only when the
  // system has no randomness source, and without one no session can be secure.
  if (sodium_init() < 0) std::abort();
  std::memcpy(node_id_.data(), node_id.data(), std::min(node_id.size(), kNodeIdSize));
  randombytes_buf(nonce_.data(), nonce_.size());
  uint8_t* h = hello_.data();
  std::memcpy(h, kMagic, sizeof(kMagic));
  h[4] = kVersion;
  h[kOffType] = static_cast<uint8_t>(MsgType::Hello);
  h[kHelloRole] = static_cast<uint8_t>(self_);
  h[kHelloPad] = 0;
  std::memcpy(h + kHelloId, node_id_.data(), kNodeIdSize);
  std::memcpy(h + kHelloNonce, nonce_.data(), kNonceSize);
  crypto_auth_hmacsha256(h + kHelloMac, h, kHelloMac, cluster_key_.data());
}

Session::~Session() {
  sodium_memzero(cluster_key_.data(), cluster_key_.size());
  sodium_memzero(send_key_.data(), send_key_.size());
  sodium_memzero(recv_key_.data(), recv_key_.size());
}

void Session::start(std::string& out) {
  if (started_) return;
  out.append(reinterpret_cast<const char*>(hello_.data()), hello_.size());
  started_ = true;
  if (peer_hello_) send_auth(out);
}

// Keys and transcript from both HELLOs (ours and the peer's verified one).
void Session::derive_keys(const uint8_t* peer_hello) {
  const uint8_t* fe_hello = self_ == Role::Fe ? hello_.data() : peer_hello;
  const uint8_t* be_hello = self_ == Role::Fe ? peer_hello : hello_.data();
  uint8_t in[kLabelSize + 2 * kNonceSize];
  uint8_t fe2be[32], be2fe[32];
  std::memcpy(in + kLabelSize, fe_hello + kHelloNonce, kNonceSize);
  std::memcpy(in + kLabelSize + kNonceSize, be_hello + kHelloNonce, kNonceSize);
  std::memcpy(in, kLabelFe2Be, kLabelSize);
  crypto_generichash(fe2be, sizeof(fe2be), in, sizeof(in), cluster_key_.data(), 32);
  std::memcpy(in, kLabelBe2Fe, kLabelSize);
  crypto_generichash(be2fe, sizeof(be2fe), in, sizeof(in), cluster_key_.data(), 32);
  const bool fe = self_ == Role::Fe;
  static_assert(sizeof(fe2be) == std::tuple_size_v<decltype(send_key_)>);
  std::memcpy(send_key_.data(), fe ? fe2be : be2fe, send_key_.size());
  std::memcpy(recv_key_.data(), fe ? be2fe : fe2be, recv_key_.size());
  sodium_memzero(fe2be, sizeof(fe2be));
  sodium_memzero(be2fe, sizeof(be2fe));
  crypto_generichash_state t;
  crypto_generichash_init(&t, nullptr, 0, kAuthSize);
  crypto_generichash_update(&t, fe_hello, kHelloSize);
  crypto_generichash_update(&t, be_hello, kHelloSize);
  crypto_generichash_final(&t, transcript_.data(), kAuthSize);
}

Status Session::take_hello(const uint8_t* p, size_t n, size_t& used, std::string& out) {
  used = 0;
  if (!prefix_ok(p, n)) return malformed("bad magic or version in HELLO");
  if (n > kOffType && p[kOffType] != static_cast<uint8_t>(MsgType::Hello)) {
    return violation("first frame is not a HELLO");
  }
  if (n < kHelloSize) return {};
  // Authenticate before interpreting anything else in it.
  if (crypto_auth_hmacsha256_verify(p + kHelloMac, p, kHelloMac, cluster_key_.data()) != 0) {
    return malformed("HELLO MAC mismatch (different cluster key?)");
  }
  const uint8_t expected = static_cast<uint8_t>(self_ == Role::Fe ? Role::Be : Role::Fe);
  if (p[kHelloRole] != expected) {
    return violation("HELLO role " + std::to_string(p[kHelloRole]) + ", expected " +
                     std::to_string(expected));
  }
  if (p[kHelloPad] != 0) return malformed("HELLO pad byte not zero");
  if (sodium_memcmp(p + kHelloNonce, nonce_.data(), kNonceSize) == 0) {
    return violation("HELLO carries our own nonce (reflected)");
  }
  const char* id = reinterpret_cast<const char*>(p + kHelloId);
  const size_t id_len = strnlen(id, kNodeIdSize);
  if (id_len == 0 || std::any_of(id + id_len, id + kNodeIdSize, [](char c) { return c != 0; })) {
    return malformed("HELLO node id empty or not NUL padded");
  }
  peer_id_.assign(id, id_len);
  derive_keys(p);
  peer_hello_ = true;
  used = kHelloSize;
  if (started_) send_auth(out);  // else start() sends it after our HELLO
  return {};
}

Status Session::take_frame(const uint8_t* p, size_t n, std::vector<Message>& msgs, size_t& used) {
  used = 0;
  if (!prefix_ok(p, n)) return malformed("bad magic or version");
  if (n <= kOffType) return {};  // the type byte has not arrived (n may be 0)
  const auto type = static_cast<MsgType>(p[kOffType]);
  if (type == MsgType::Hello) return violation("HELLO after session setup");
  if (!peer_auth_ && type != MsgType::Auth) return violation("first frame is not AUTH");
  if (peer_auth_ && type == MsgType::Auth) return violation("AUTH after session setup");
  if (n < kHeaderSize) return {};
  // The header alone bounds what is buffered: before AUTH only its exact size passes,
  // after it an unknown type or a length over the type's largest payload fails before
  // any of the payload is waited for.
  const auto max = type == MsgType::Auth ? std::optional<size_t>(kAuthSize) : max_payload(type);
  if (!max) return malformed("unknown type " + std::to_string(p[kOffType]));
  const uint32_t len = load_be<uint32_t>(p + kOffLength);
  if (len > *max || (type == MsgType::Auth && len != kAuthSize))
    return malformed("payload length " + std::to_string(len) + " over the limit of type " +
                     std::to_string(p[kOffType]));
  const size_t total = kHeaderSize + len + kMacSize;
  if (n < total) return {};

  // The seq in the header makes the nonce: a frame whose seq was changed fails here.
  const uint64_t seq = load_be<uint64_t>(p + kOffSeq);
  const auto nonce = frame_nonce(seq);
  const uint8_t no_ciphertext[1] = {0};  // none (length 0); libsodium wants a pointer
  if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(
          nullptr, nullptr, no_ciphertext, 0, p + kHeaderSize + len, p, kHeaderSize + len,
          nonce.data(), recv_key_.data()) != 0)
    return malformed("MAC mismatch");

  // Authentic from here on: what remains are protocol checks on the peer's own bytes.
  if (seq != recv_seq_ + 1) {
    return violation("sequence " + std::to_string(seq) + ", expected " +
                     std::to_string(recv_seq_ + 1) + " (replayed, reordered or lost frame)");
  }
  if (load_be<uint16_t>(p + kOffFlags) != 0) return violation("unknown flags");
  if (type == MsgType::Auth) {
    // Authentic under this session's keys; the transcript also binds both HELLOs.
    if (sodium_memcmp(p + kHeaderSize, transcript_.data(), kAuthSize) != 0)
      return violation("AUTH over another transcript");
    recv_seq_ = seq;
    peer_auth_ = true;
    used = total;
    return {};
  }
  auto m = decode_payload(type, p + kHeaderSize, len);
  if (!m) return m.error();
  recv_seq_ = seq;
  msgs.push_back(std::move(*m));
  used = total;
  return {};
}

Status Session::feed(std::string& in, std::vector<Message>& msgs, std::string& out) {
  if (dead_) return violation("session already failed");
  const auto* base = reinterpret_cast<const uint8_t*>(in.data());
  size_t pos = 0;
  Status st;
  for (;;) {
    size_t used = 0;
    st = peer_hello_ ? take_frame(base + pos, in.size() - pos, msgs, used)
                     : take_hello(base + pos, in.size() - pos, used, out);
    if (!st) {
      dead_ = true;
      break;
    }
    if (used == 0) break;
    pos += used;
  }
  // One erase per call, not per frame: a burst of small frames stays linear.
  in.erase(0, pos);
  return st;
}

// Completes the frame at out[base..]: its payload follows kHeaderSize reserved bytes;
// writes the header and appends the MAC.
void Session::seal(std::string& out, size_t base, MsgType t) {
  const size_t len = out.size() - base - kHeaderSize;
  out.resize(out.size() + kMacSize);
  uint8_t* h = bytes_at(out, base);
  std::memcpy(h, kMagic, sizeof(kMagic));
  h[4] = kVersion;
  h[kOffType] = static_cast<uint8_t>(t);
  store_be<uint16_t>(h + kOffFlags, 0);
  store_be(h + kOffLength, static_cast<uint32_t>(len));
  store_be(h + kOffSeq, ++send_seq_);
  const auto nonce = frame_nonce(send_seq_);
  unsigned long long tag_len = 0;
  uint8_t no_ciphertext[1];  // none (no plaintext); libsodium wants a pointer
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(no_ciphertext, h + kHeaderSize + len, &tag_len,
                                                     nullptr, 0, h, kHeaderSize + len, nullptr,
                                                     nonce.data(), send_key_.data());
}

void Session::send_auth(std::string& out) {
  const size_t base = out.size();
  out.resize(base + kHeaderSize);
  out.append(reinterpret_cast<const char*>(transcript_.data()), transcript_.size());
  seal(out, base, MsgType::Auth);
}

bool Session::send(const Message& m, std::string& out) {
  if (!established()) return false;
  const size_t base = out.size();
  out.resize(base + kHeaderSize);
  if (!encode_payload(m, out)) {
    out.resize(base);
    return false;
  }
  seal(out, base, type_of(m));
  return true;
}

}  // namespace tcpha::proto

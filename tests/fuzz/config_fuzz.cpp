// libFuzzer target: the cluster-file loader must turn any bytes into either a
// configuration or FILE:LINE errors, never a crash or a hang.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    // In the working directory: scripts/fuzz.sh runs us in a directory it removes.
    char tmpl[] = "tcpha-config-fuzz-XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    return std::string(tmpl);
  }();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto r = tcpha::config::load(path);
  if (r.config.has_value() == !r.errors.empty()) std::abort();  // exactly one of the two
  for (const auto& e : r.errors)
    if (e.rfind(path + ":", 0) != 0) std::abort();  // every error names FILE:LINE
  return 0;
}

#pragma once
// Shared by the cluster-file tests: a scratch directory to write TOML files into, and
// the errors of a load joined for assertion messages.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config/config.hpp"

namespace tcpha::testing {

inline std::string joined(const config::LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e + "\n";
  return s;
}

// tests/data/config (the INTERFACE.md example) copied to a private directory, once per
// test process: a checked-out cluster.key is group/other readable (git keeps no modes
// but the executable bit), which load() refuses. Returns the copy of cluster.toml.
inline std::string example_config() {
  namespace fs = std::filesystem;
  static const std::string path = [] {
    std::string tmpl = (fs::path(::testing::TempDir()) / "tcpha_example.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return std::string("mkdtemp failed");
    fs::copy(fs::path(TCPHA_TEST_DATA) / "config", tmpl, fs::copy_options::recursive);
    fs::permissions(fs::path(tmpl) / "cluster.key", fs::perms::owner_read | fs::perms::owner_write);
    return (fs::path(tmpl) / "cluster.toml").string();
  }();
  return path;
}

// A scratch directory holding a good key (cluster.key) and a short one (short.key).
// Every file written is private (0600), as load() wants the cluster key.
class ConfigDir : public ::testing::Test {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::path(::testing::TempDir()) / "tcpha_config.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("cluster.key", std::string(40, 'k'));
    write("short.key", "12345");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    std::filesystem::path p = dir_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    std::filesystem::permissions(p, std::filesystem::perms::owner_read |
                                        std::filesystem::perms::owner_write);
    return p.string();
  }

  std::filesystem::path dir_;
};

}  // namespace tcpha::testing

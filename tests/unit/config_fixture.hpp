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

// A scratch directory holding a good key (cluster.key) and a short one (short.key).
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
    return p.string();
  }

  std::filesystem::path dir_;
};

}  // namespace tcpha::testing

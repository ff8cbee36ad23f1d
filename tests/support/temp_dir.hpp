// SPDX-License-Identifier: Apache-2.0
// A scratch directory for one test: its own (ctest runs the cases in
// parallel processes), removed with everything in it when the test ends.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace hmk::testing {

class TempDir {
  public:
    explicit TempDir(const std::string& prefix = "hmk-test") {
        std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("cannot make a scratch directory " + tmpl);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    /// A path inside it.
    std::string file(const std::string& name) const { return path + "/" + name; }

    std::string path;
};

}  // namespace hmk::testing

// User-facing errors: one line on stderr, then an exit code.
#pragma once

#include <string_view>

#include "uprobe/spec.hpp"

namespace uprobe::cli {

constexpr int kExitFailure = 1;  // the request was fine, doing it failed
constexpr int kExitUsage = 2;    // the request itself is malformed

// "uprobe: MESSAGE"; returns kExitFailure.
int report_error(std::string_view message);
// "uprobe: MESSAGE"; returns kExitUsage.
int report_usage(std::string_view message);
// The spec error with a caret under the bad character; returns kExitUsage.
int report_spec_error(const SpecError& error);

}  // namespace uprobe::cli

#include "cli/report.hpp"

#include <fmt/format.h>

#include <cstdio>

namespace uprobe::cli {

int report_error(std::string_view message) {
    fmt::print(stderr, "uprobe: {}\n", message);
    return kExitFailure;
}

int report_usage(std::string_view message) {
    fmt::print(stderr, "uprobe: {}\n", message);
    return kExitUsage;
}

int report_spec_error(const SpecError& error) {
    fmt::print(stderr, "uprobe: {}\n", error.render());
    return kExitUsage;
}

}  // namespace uprobe::cli

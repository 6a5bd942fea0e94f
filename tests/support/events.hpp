// Reading what `uprobe trace --format json -o FILE` wrote.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace uprobe::test {

// One JSON object per line of `path`.
inline std::vector<nlohmann::json> read_events(const std::string& path) {
    std::ifstream in(path);
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
}

}  // namespace uprobe::test

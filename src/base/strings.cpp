#include "base/strings.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace uprobe {

bool has_glob(std::string_view pattern) {
    return pattern.find_first_of("*?[") != std::string_view::npos;
}

bool glob_match(std::string_view p, std::string_view t) {
    // Iterative matcher with one backtrack point for the last '*'.
    size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
    while (ti < t.size()) {
        if (pi < p.size() && p[pi] == '*') {
            star = pi++;
            mark = ti;
            continue;
        }
        if (pi < p.size() && p[pi] == '[') {
            size_t end = p.find(']', pi + 1);
            if (end != std::string_view::npos) {
                bool negate = pi + 1 < end && (p[pi + 1] == '!' || p[pi + 1] == '^');
                bool hit = false;
                for (size_t k = pi + 1 + (negate ? 1 : 0); k < end; ++k) {
                    if (k + 2 < end && p[k + 1] == '-') {
                        if (t[ti] >= p[k] && t[ti] <= p[k + 2]) hit = true;
                        k += 2;
                    } else if (p[k] == t[ti]) {
                        hit = true;
                    }
                }
                if (hit != negate) {
                    pi = end + 1;
                    ++ti;
                    continue;
                }
            } else if (t[ti] == '[') {
                ++pi;
                ++ti;
                continue;
            }
        } else if (pi < p.size() && (p[pi] == '?' || p[pi] == t[ti])) {
            ++pi;
            ++ti;
            continue;
        }
        if (star == std::string_view::npos) return false;
        pi = star + 1;
        ti = ++mark;
    }
    while (pi < p.size() && p[pi] == '*') ++pi;
    return pi == p.size();
}

std::vector<std::string_view> split(std::string_view text, char sep) {
    std::vector<std::string_view> out;
    size_t start = 0;
    while (true) {
        size_t pos = text.find(sep, start);
        out.push_back(text.substr(start, pos - start));
        if (pos == std::string_view::npos) break;
        start = pos + 1;
    }
    return out;
}

std::string_view trim(std::string_view text) {
    size_t b = text.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return {};
    size_t e = text.find_last_not_of(" \t\r\n");
    return text.substr(b, e - b + 1);
}

bool starts_with(std::string_view text, std::string_view prefix) {
    return text.substr(0, prefix.size()) == prefix;
}

std::optional<uint64_t> parse_uint(std::string_view text) {
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    }
    if (text.empty()) return std::nullopt;
    uint64_t value = 0;
    for (char c : text) {
        unsigned digit;
        if (c >= '0' && c <= '9') digit = unsigned(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f') digit = unsigned(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F') digit = unsigned(c - 'A' + 10);
        else return std::nullopt;
        if (value > (UINT64_MAX - digit) / uint64_t(base)) return std::nullopt;
        value = value * uint64_t(base) + digit;
    }
    return value;
}

std::string errno_text(int err) {
    std::string text = std::strerror(err);
    if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z' && (text.size() < 2 || text[1] > 'Z'))
        text[0] = char(text[0] - 'A' + 'a');
    return text;
}

Error errno_error(std::string_view what, int err) {
    return Error(std::string(what) + ": " + errno_text(err));
}

std::string demangle(std::string_view name) {
    if (!starts_with(name, "_Z")) return std::string(name);
    int status = 0;
    std::string copy(name);
    std::unique_ptr<char, decltype(&std::free)> out(
        abi::__cxa_demangle(copy.c_str(), nullptr, nullptr, &status), &std::free);
    if (status != 0 || !out) return copy;
    return out.get();
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::vector<std::string> closest(std::string_view word, const std::vector<std::string>& candidates,
                                 size_t max) {
    size_t limit = std::max<size_t>(2, word.size() / 3);
    std::vector<std::pair<size_t, const std::string*>> scored;
    for (const auto& c : candidates) {
        // Cheap length filter first: the distance is at least the length gap.
        size_t gap = c.size() > word.size() ? c.size() - word.size() : word.size() - c.size();
        if (gap > limit) continue;
        size_t d = edit_distance(word, c);
        if (d <= limit) scored.emplace_back(d, &c);
    }
    std::stable_sort(scored.begin(), scored.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<std::string> out;
    for (const auto& [d, c] : scored) {
        if (out.size() == max) break;
        if (std::find(out.begin(), out.end(), *c) == out.end()) out.push_back(*c);
    }
    return out;
}

}  // namespace uprobe

// Small string helpers shared by every layer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe {

// Shell-style glob: '*', '?', and '[...]' classes. A pattern without any of
// them matches only itself.
bool glob_match(std::string_view pattern, std::string_view text);
bool has_glob(std::string_view pattern);

std::vector<std::string_view> split(std::string_view text, char sep);
std::string_view trim(std::string_view text);
bool starts_with(std::string_view text, std::string_view prefix);

// Parses a whole decimal or 0x-prefixed hexadecimal unsigned number.
std::optional<uint64_t> parse_uint(std::string_view text);

// "strerror(errno)" for the given errno value, lower-case first letter.
std::string errno_text(int err);
// An Error "what: <errno text>".
Error errno_error(std::string_view what, int err);

// Demangles a C++ symbol; returns the input when it is not mangled.
std::string demangle(std::string_view name);

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);
// Up to `max` of `candidates` closest to `word` (distance <= a third of its
// length, at least 2), best first.
std::vector<std::string> closest(std::string_view word, const std::vector<std::string>& candidates,
                                 size_t max = 3);

}  // namespace uprobe

// Small pieces every engine needs in the same way.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "uprobe/spec.hpp"

namespace uprobe::engine {

// Identity of a mapped file: what mappings are matched by, never a path.
struct ObjectKey {
    dev_t device = 0;
    ino_t inode = 0;
    auto operator<=>(const ObjectKey&) const = default;
};

// Whether `spec`'s BIN names the object `key`, mapped at `path` in process
// `pid` whose main executable is `exe`: no BIN means the main executable; a
// path names a file as the target sees it (it may live in another mount
// namespace), compared by identity; a library name matches by file name.
bool probe_names_object(const ProbeSpec& spec, pid_t pid, ObjectKey exe, ObjectKey key, const std::string& path);

// "0x1f" for messages.
std::string hex(uint64_t value);

// CLOCK_MONOTONIC in nanoseconds: the time base of every event.
uint64_t monotonic_ns();

}  // namespace uprobe::engine

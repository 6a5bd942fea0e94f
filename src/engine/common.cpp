#include "engine/common.hpp"

#include <sys/stat.h>
#include <time.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "probe/resolve.hpp"
#include "proc/proc.hpp"

namespace uprobe::engine {

bool is_glob_probe(const ProbeSpec& spec) {
    return spec.location.kind == LocationKind::Function && spec.location.function.find_first_of("*?[") != std::string::npos;
}

bool probe_names_object(const ProbeSpec& spec, pid_t pid, ObjectKey exe, ObjectKey key, const std::string& path) {
    const std::string& bin = spec.location.binary;
    if (bin.empty()) return key == exe;
    if (bin.find('/') != std::string::npos) {
        std::string absolute = bin[0] == '/' ? bin : std::filesystem::absolute(bin).string();
        struct stat st {};
        return ::stat(proc::host_path(pid, absolute).c_str(), &st) == 0 && st.st_dev == key.device &&
               st.st_ino == key.inode;
    }
    return probe::Resolver::binary_matches(bin, path);
}

std::string hex(uint64_t value) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%" PRIx64, value);
    return text;
}

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace uprobe::engine

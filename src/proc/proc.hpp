// /proc/PID plumbing: memory maps, threads, comm, auxv, target memory.
//
// Everything here reads or writes another process through the kernel's
// interfaces and reports failures as Result values; a process that exits
// mid-call gives an error, never a crash.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "uprobe/result.hpp"

namespace uprobe::proc {

// One line of /proc/PID/maps.
struct Mapping {
    uint64_t start = 0, end = 0;
    bool read = false, write = false, exec = false, shared = false;
    uint64_t file_offset = 0;
    dev_t device = 0;   // makedev(major, minor) as the maps line gives them
    ino_t inode = 0;    // 0 for anonymous mappings
    std::string path;   // as the target sees it (relative to /proc/PID/root)
    bool covers(uint64_t address) const { return address >= start && address < end; }
};

Result<std::vector<Mapping>> read_maps(pid_t pid);
// Parses the text of a maps file (exposed for tests).
Result<std::vector<Mapping>> parse_maps(const std::string& text);

// A page-aligned free range of `size` bytes between `maps`, as close to
// `near` as possible and less than `reach` bytes from it (rel32 code must
// reach the probed object), or nullopt when there is none.
std::optional<uint64_t> free_range_near(const std::vector<Mapping>& maps, uint64_t near, uint64_t size,
                                        uint64_t reach);

// Thread ids listed in /proc/PID/task (a snapshot: threads come and go).
Result<std::vector<pid_t>> list_threads(pid_t pid);

// /proc/PID/task/TID/comm without the newline; "" when unreadable.
std::string read_comm(pid_t pid, pid_t tid);

// The auxiliary vector, AT_* -> value.
Result<std::map<uint64_t, uint64_t>> read_auxv(pid_t pid);

// The thread group id of `tid` (Tgid: of /proc/TID/status).
Result<pid_t> thread_group_of(pid_t tid);

// Whether the text of a /proc/PID/status says the thread runs with
// user-space hardware shadow stacks: Linux 6.6+ on x86 lists the enabled
// features on "x86_Thread_features: shstk wrss" (an empty list when none;
// no such line on older kernels, which have no user shadow stacks). A
// return address the program did not push makes such a thread fault
// (#CP, SIGSEGV) at the ret.
bool shadow_stack_enabled(std::string_view status_text);
// The same for /proc/PID/task/TID/status; false when it cannot be read.
bool thread_has_shadow_stack(pid_t pid, pid_t tid);
// Whether the status text has the x86_Thread_features line at all: the
// kernel was built with user shadow stacks (CONFIG_X86_USER_SHADOW_STACK).
bool shadow_stacks_supported(std::string_view status_text);
// The same for this kernel (our own /proc/self/status), read once.
bool kernel_has_user_shadow_stacks();

// Reads target memory with process_vm_readv; falls back to /proc/PID/mem
// for pages process_vm_readv refuses (PROT_NONE or exec-only text).
Result<void> read_memory(pid_t pid, uint64_t address, void* out, size_t size);
// Writes target memory through /proc/PID/mem, which a tracer may use on
// read-only mappings (text) too.
Result<void> write_memory(pid_t pid, uint64_t address, const void* data, size_t size);

// The path to open to reach `path` as process `pid` sees it: `path` itself
// when the process shares our root directory and mount namespace, else
// /proc/PID/root/path (containers, chroots, private mounts).
std::string host_path(pid_t pid, const std::string& path);

}  // namespace uprobe::proc

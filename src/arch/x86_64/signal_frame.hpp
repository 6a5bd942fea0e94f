// Signal frames on a thread's stack: where a thread running a signal
// handler goes back to when the handler returns. The kernel builds an
// rt_sigframe (arch/x86/include/asm/sigframe.h) below the interrupted
// stack: the handler's return address (the restorer, code that calls
// rt_sigreturn), then a ucontext whose mcontext holds the interrupted
// registers. Frames are recognised by that return address, as gdb
// recognises sigtramp frames: the code there is `mov $15, %rax; syscall`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace uprobe::arch {

// Bytes to read at a candidate restorer address for is_sigreturn_code.
constexpr size_t kSigreturnCodeSize = 9;

// Whether `code` starts with rt_sigreturn's call (glibc's and musl's
// `mov $15, %rax; syscall`, Go's `mov $15, %eax; syscall`).
bool is_sigreturn_code(std::span<const uint8_t> code);

// From the stack word holding the restorer's address to the interrupted
// rip: the ucontext (uc_flags, uc_link, a 24-byte stack_t) and sigcontext's
// r8..rsp (16 words) come first.
constexpr size_t kSignalFrameRipOffset = 8 + (8 + 8 + 24) + 16 * 8;

}  // namespace uprobe::arch

// Signal frames as this kernel builds them: a handler in this process
// checks that the word before its ucontext is its return address, that the
// code there is rt_sigreturn's call, and that the interrupted rip sits
// kSignalFrameRipOffset bytes after that word.
#include <gtest/gtest.h>
#include <signal.h>
#include <ucontext.h>

#include <cstdint>
#include <cstring>

#include "arch/x86_64/signal_frame.hpp"

namespace {

struct Seen {
    uint64_t return_address = 0, restorer_word = 0, rip_word = 0, rip = 0;
    bool sigreturn_code = false;
} g_seen;

void on_signal(int, siginfo_t*, void* context) {
    auto* uc = static_cast<ucontext_t*>(context);
    const auto* restorer = reinterpret_cast<const uint8_t*>(uc) - 8;
    std::memcpy(&g_seen.restorer_word, restorer, 8);
    std::memcpy(&g_seen.rip_word, restorer + uprobe::arch::kSignalFrameRipOffset, 8);
    g_seen.rip = static_cast<uint64_t>(uc->uc_mcontext.gregs[REG_RIP]);
    g_seen.return_address = reinterpret_cast<uint64_t>(__builtin_return_address(0));
    g_seen.sigreturn_code = uprobe::arch::is_sigreturn_code(
        {reinterpret_cast<const uint8_t*>(g_seen.restorer_word), uprobe::arch::kSigreturnCodeSize});
}

TEST(SignalFrame, LayoutMatchesTheKernelsFrame) {
    struct sigaction sa {}, old {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    g_seen = {};
    raise(SIGUSR1);
    sigaction(SIGUSR1, &old, nullptr);
    EXPECT_EQ(g_seen.restorer_word, g_seen.return_address);
    EXPECT_TRUE(g_seen.sigreturn_code);
    EXPECT_NE(g_seen.rip, 0u);
    EXPECT_EQ(g_seen.rip_word, g_seen.rip);
}

TEST(SignalFrame, OtherCodeIsNotSigreturn) {
    const uint8_t ret[] = {0xC3, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90};
    const uint8_t other_syscall[] = {0x48, 0xC7, 0xC0, 0x27, 0x00, 0x00, 0x00, 0x0F, 0x05};  // getpid
    const uint8_t go_style[] = {0xB8, 0x0F, 0x00, 0x00, 0x00, 0x0F, 0x05, 0xCC, 0xCC};
    EXPECT_FALSE(uprobe::arch::is_sigreturn_code(ret));
    EXPECT_FALSE(uprobe::arch::is_sigreturn_code(other_syscall));
    EXPECT_TRUE(uprobe::arch::is_sigreturn_code(go_style));
    EXPECT_FALSE(uprobe::arch::is_sigreturn_code(std::span<const uint8_t>(go_style, 4)));
}

}  // namespace

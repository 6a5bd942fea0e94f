// Hardware shadow stacks, as return probes see them: the x86_Thread_features
// line of /proc/PID/status (Linux 6.6+: "shstk", "wrss", blank-separated
// after a tab; absent when the kernel has no user shadow stacks), and the
// SHSTK marking of an object (checked against readelf).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>

#include "elf/binary.hpp"
#include "proc/proc.hpp"

namespace uprobe {
namespace {

const char* const kHead = "Name:\tprog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\n";

std::string status(const std::string& tail) {
    return std::string(kHead) + tail;
}

TEST(ShadowStackStatus, Enabled) {
    EXPECT_TRUE(proc::shadow_stack_enabled(
        status("x86_Thread_features:\tshstk wrss \nx86_Thread_features_locked:\t\n")));
    EXPECT_TRUE(proc::shadow_stack_enabled(status("x86_Thread_features:\tshstk \n")));
    EXPECT_TRUE(proc::shadow_stack_enabled(status("x86_Thread_features:\twrss shstk")));  // no newline
}

TEST(ShadowStackStatus, NotEnabled) {
    // Supported but off: an empty list; locked only (a lock says nothing
    // about being on); another feature; a longer name; an older kernel.
    EXPECT_FALSE(
        proc::shadow_stack_enabled(status("x86_Thread_features:\t\nx86_Thread_features_locked:\t\n")));
    EXPECT_FALSE(
        proc::shadow_stack_enabled(status("x86_Thread_features:\t\nx86_Thread_features_locked:\tshstk \n")));
    EXPECT_FALSE(proc::shadow_stack_enabled(status("x86_Thread_features:\twrss \n")));
    EXPECT_FALSE(proc::shadow_stack_enabled(status("x86_Thread_features:\tshstkx \n")));
    EXPECT_FALSE(proc::shadow_stack_enabled(kHead));
    EXPECT_FALSE(proc::shadow_stack_enabled(""));
}

TEST(ShadowStackStatus, KernelSupport) {
    EXPECT_TRUE(proc::shadow_stacks_supported(status("x86_Thread_features:\t\n")));
    EXPECT_FALSE(proc::shadow_stacks_supported(status("x86_Thread_features_locked:\t\n")));
    EXPECT_FALSE(proc::shadow_stacks_supported(kHead));
}

std::string read_text(const std::string& path) {
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        std::array<char, 4096> buffer;
        for (size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0;)
            text.append(buffer.data(), n);
        std::fclose(f);
    }
    return text;
}

TEST(ShadowStackStatus, OurOwnThreadAgreesWithItsStatusFile) {
    // Whatever this kernel says about this process, the file and the parser agree.
    pid_t self = ::getpid();
    std::string text =
        read_text("/proc/" + std::to_string(self) + "/task/" + std::to_string(self) + "/status");
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(proc::thread_has_shadow_stack(self, self), proc::shadow_stack_enabled(text));
    EXPECT_EQ(proc::kernel_has_user_shadow_stacks(), proc::shadow_stacks_supported(text));
    EXPECT_FALSE(proc::thread_has_shadow_stack(self, 999999999));  // no such thread
}

std::string readelf_notes(const std::string& path) {
    std::string out;
    if (FILE* p = ::popen(("readelf -n " + path + " 2>/dev/null").c_str(), "r")) {
        std::array<char, 4096> buffer;
        for (size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), p)) > 0;)
            out.append(buffer.data(), n);
        ::pclose(p);
    }
    return out;
}

TEST(ShadowStackMarking, AgreesWithReadelf) {
    // ret_shstk is linked with -z shstk; ret_tail is the same code without.
    for (const char* name : {"ret_shstk", "ret_tail"}) {
        const std::string path = std::string(UPROBE_TARGETS_DIR) + "/" + name;
        auto binary = elf::Binary::open(path);
        ASSERT_TRUE(binary.ok()) << binary.error().message();
        std::string notes = readelf_notes(path);
        ASSERT_NE(notes.find("NT_GNU_PROPERTY_TYPE_0"), std::string::npos) << notes;
        bool readelf_says = notes.find("SHSTK") != std::string::npos;
        EXPECT_EQ(binary->marks_shadow_stack(), readelf_says) << name << ":\n" << notes;
        EXPECT_EQ(readelf_says, std::string(name) == "ret_shstk") << notes;
    }
}

}  // namespace
}  // namespace uprobe

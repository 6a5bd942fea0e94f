// /proc/PID/maps parsing on hand-written text, and read_maps on ourselves
// against facts we create (an anonymous executable mapping).
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "proc/proc.hpp"

namespace uprobe::proc {
namespace {

TEST(ProcMaps, ParsesEveryField) {
    auto maps = parse_maps(
        "55d0c0a00000-55d0c0a21000 r-xp 00002000 fe:01 1234567                    /usr/bin/my prog\n"
        "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]\n"
        "7f0000000000-7f0000001000 ---s 00000000 00:00 0 \n");
    ASSERT_TRUE(maps.ok()) << maps.error().message();
    ASSERT_EQ(maps->size(), 3u);
    const Mapping& text = (*maps)[0];
    EXPECT_EQ(text.start, 0x55d0c0a00000u);
    EXPECT_EQ(text.end, 0x55d0c0a21000u);
    EXPECT_TRUE(text.read);
    EXPECT_FALSE(text.write);
    EXPECT_TRUE(text.exec);
    EXPECT_FALSE(text.shared);
    EXPECT_EQ(text.file_offset, 0x2000u);
    EXPECT_EQ(text.device, makedev(0xfe, 0x01));
    EXPECT_EQ(text.inode, 1234567u);
    EXPECT_EQ(text.path, "/usr/bin/my prog");
    EXPECT_EQ((*maps)[1].path, "[stack]");
    EXPECT_EQ((*maps)[1].inode, 0u);
    EXPECT_TRUE((*maps)[2].shared);
    EXPECT_EQ((*maps)[2].path, "");
}

TEST(ProcMaps, MalformedLinesAreErrors) {
    EXPECT_FALSE(parse_maps("garbage\n").ok());
    EXPECT_FALSE(parse_maps("1000-zz r-xp 0 0:0 0\n").ok());
    EXPECT_FALSE(parse_maps("1000-2000 r-x 0 00:00 0\n").ok());
}

TEST(ProcMaps, ReadsOurOwnMappings) {
    void* area = ::mmap(nullptr, 8192, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(area, MAP_FAILED);
    auto maps = read_maps(::getpid());
    ASSERT_TRUE(maps.ok()) << maps.error().message();
    auto at = reinterpret_cast<uint64_t>(area);
    bool found = false;
    for (const auto& m : *maps) {
        if (m.covers(at)) {
            found = true;
            EXPECT_TRUE(m.exec);
            EXPECT_FALSE(m.write);
        }
    }
    EXPECT_TRUE(found);
    ::munmap(area, 8192);
}

TEST(ProcMemory, ReadsAndWritesThroughTheKernel) {
    uint64_t value = 0x1122334455667788;
    uint64_t copy = 0;
    ASSERT_TRUE(read_memory(::getpid(), reinterpret_cast<uint64_t>(&value), &copy, sizeof copy).ok());
    EXPECT_EQ(copy, value);
    uint64_t replacement = 42;
    ASSERT_TRUE(write_memory(::getpid(), reinterpret_cast<uint64_t>(&value), &replacement, sizeof replacement).ok());
    EXPECT_EQ(*static_cast<volatile uint64_t*>(&value), 42u);
    auto bad = read_memory(::getpid(), 0x10, &copy, sizeof copy);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().message(), "bad address 0x10");
}

// Mappings made up for the test: the gaps are known by construction.
TEST(ProcFreeRange, TheClosestGapWithinReach) {
    auto maps = parse_maps(
        "10000000-10100000 r-xp 00000000 08:01 1 /a\n"
        "10200000-10300000 r--p 00000000 08:01 1 /a\n"
        "90000000-90001000 rw-p 00000000 00:00 0\n");
    ASSERT_TRUE(maps.ok());
    // The 1 MiB hole between the two mappings of /a is the closest one.
    EXPECT_EQ(free_range_near(*maps, 0x10050000, 0x100000, 1ull << 31), 0x10100000u);
    // Too small for 2 MiB: the closer of the gaps around /a, which is the
    // one ending where /a starts (0x250000 away; above /a is 0x2b0000).
    EXPECT_EQ(free_range_near(*maps, 0x10050000, 0x200000, 1ull << 31), 0x0fe00000u);
    // Nothing within 16 KiB of an address inside the first mapping.
    EXPECT_EQ(free_range_near(*maps, 0x10050000, 0x1000, 0x4000), std::nullopt);
}

}  // namespace
}  // namespace uprobe::proc

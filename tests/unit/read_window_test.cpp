// probe::ReadWindow against memory whose contents and readable pages are
// known by construction: every read returns the bytes a direct read would,
// neighbouring reads cost one raw read, and no raw read crosses a page it
// was not asked to.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "probe/read_window.hpp"

namespace uprobe::probe {
namespace {

// Pages [0x10000, 0x12000) and the last page of the address space are
// mapped; byte a is (a * 7) mod 256. Like process_vm_readv, a read returns
// the readable prefix of its range.
struct Pages {
    struct Call {
        uint64_t address;
        size_t size;
    };
    std::vector<Call> calls;
    static bool mapped(uint64_t a) { return (a >= 0x10000 && a < 0x12000) || a >= ~uint64_t{4095}; }
    static uint8_t byte(uint64_t a) { return static_cast<uint8_t>(a * 7); }
    size_t read(uint64_t address, void* out, size_t size) {
        calls.push_back({address, size});
        size_t n = 0;
        for (; n < size && address + n >= address && mapped(address + n); ++n)
            static_cast<uint8_t*>(out)[n] = byte(address + n);
        return n;
    }
};

struct Raw {
    Pages* pages;
    size_t operator()(uint64_t address, void* out, size_t size) const { return pages->read(address, out, size); }
};

uint64_t expected(uint64_t address, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | Pages::byte(address + i);
    return v;
}

class ReadWindowTest : public ::testing::Test {
protected:
    Pages pages;
    ReadWindow<Raw> window{Raw{&pages}};
    // The `n` bytes at `address` through the window, as a little-endian number.
    bool read(uint64_t address, size_t n, uint64_t* value) {
        *value = 0;
        return window.read(address, value, n);
    }
};

TEST_F(ReadWindowTest, NeighboursInOneLineCostOneRawRead) {
    uint64_t v;
    for (uint64_t offset : {8u, 0u, 56u, 16u}) {
        ASSERT_TRUE(read(0x10040 + offset, 8, &v));
        EXPECT_EQ(v, expected(0x10040 + offset, 8));
    }
    ASSERT_EQ(pages.calls.size(), 1u);
    EXPECT_EQ(pages.calls[0].address, 0x10040u);
    EXPECT_EQ(pages.calls[0].size, 64u);
}

TEST_F(ReadWindowTest, AReadAcrossTwoLinesStartsItsOwnWindow) {
    uint64_t v;
    ASSERT_TRUE(read(0x1007c, 8, &v));  // 4 bytes in each line
    EXPECT_EQ(v, expected(0x1007c, 8));
    ASSERT_EQ(pages.calls.size(), 1u);
    EXPECT_EQ(pages.calls[0].address, 0x1007cu);
    ASSERT_TRUE(read(0x10080, 4, &v));  // inside that window: no new read
    EXPECT_EQ(v, expected(0x10080, 4));
    EXPECT_EQ(pages.calls.size(), 1u);
    ASSERT_TRUE(read(0x10078, 4, &v));  // below it: a new one
    EXPECT_EQ(v, expected(0x10078, 4));
    EXPECT_EQ(pages.calls.size(), 2u);
}

TEST_F(ReadWindowTest, NoWindowCrossesAPage) {
    uint64_t v;
    ASSERT_TRUE(read(0x10ffc, 8, &v));  // across the page boundary: read as asked
    EXPECT_EQ(v, expected(0x10ffc, 8));
    ASSERT_EQ(pages.calls.size(), 1u);
    EXPECT_EQ(pages.calls[0].address, 0x10ffcu);
    EXPECT_EQ(pages.calls[0].size, 8u);
    ASSERT_TRUE(read(0x10ff0, 4, &v));  // the page's last line
    EXPECT_EQ(v, expected(0x10ff0, 4));
    EXPECT_EQ(pages.calls.back().address + pages.calls.back().size, 0x11000u);
}

TEST_F(ReadWindowTest, UnreadableMemoryFails) {
    uint64_t v;
    EXPECT_FALSE(read(0x12000, 8, &v));   // the page after the mapped ones
    EXPECT_FALSE(read(0x11ffc, 8, &v));   // half of it readable
    EXPECT_FALSE(read(0x0, 1, &v));
    ASSERT_TRUE(read(0x11ff8, 8, &v));    // the last readable word
    EXPECT_EQ(v, expected(0x11ff8, 8));
}

TEST_F(ReadWindowTest, AddressesAtTheTopNeverIndexOutsideTheWindow) {
    uint64_t v;
    ASSERT_TRUE(read(0x10040, 8, &v));  // a window low in memory
    // Reads whose end wraps past 2^64 must not look inside that window.
    EXPECT_FALSE(read(~uint64_t{0} - 3, 8, &v));
    ASSERT_TRUE(read(~uint64_t{0} - 7, 8, &v));  // the last word, mapped here
    EXPECT_EQ(v, expected(~uint64_t{0} - 7, 8));
}

TEST_F(ReadWindowTest, ReadsLargerThanALineGoStraightThrough) {
    uint8_t buffer[100];
    ASSERT_TRUE(window.read(0x10100, buffer, sizeof buffer));
    for (size_t i = 0; i < sizeof buffer; ++i) EXPECT_EQ(buffer[i], Pages::byte(0x10100 + i));
    ASSERT_EQ(pages.calls.size(), 1u);
    EXPECT_EQ(pages.calls[0].size, sizeof buffer);
}

}  // namespace
}  // namespace uprobe::probe

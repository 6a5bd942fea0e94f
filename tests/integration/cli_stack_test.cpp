// `uprobe trace --stack`: each event carries the user stack, symbolized
// with source lines (the lines come from the target's source text, found
// here by searching it); --stack=folded counts stacks for flame graphs.
// tests/integration/cli_hold_test.cpp compares the unwinder with gdb's bt.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "process.hpp"

namespace uprobe::test {
namespace {

// 1-based number of the first line of `path` containing `text`.
int line_of(const std::string& path, const std::string& text) {
    std::ifstream in(path);
    int number = 0;
    for (std::string line; std::getline(in, line);) {
        ++number;
        if (line.find(text) != std::string::npos) return number;
    }
    return -1;
}

const std::string kSource = std::string(UPROBE_SOURCE_DIR) + "/tests/targets/cli_funcs.c";

TEST(CliStack, EveryEventCarriesItsStack) {
    auto r = run({uprobe_path(), "trace", "--stack", "add a=%di", "--", target_path("cli_funcs"), "3"});
    ASSERT_EQ(r.status, 0) << r.describe();
    const int call_line = line_of(kSource, "sum = add(sum, scale(i, 2));");
    const int add_line = line_of(kSource, "long add(long a, long b)");
    ASSERT_GT(call_line, 0);
    auto lines = lines_of(r.out);
    int events = 0;
    for (size_t k = 0; k < lines.size(); ++k) {
        if (lines[k].find(": add: (") == std::string::npos) continue;
        ++events;
        ASSERT_GT(lines.size(), k + 2) << r.out;
        EXPECT_TRUE(std::regex_search(lines[k + 1], std::regex(" add at \\S+cli_funcs.c:" + std::to_string(add_line) + "$")))
            << lines[k + 1];
        EXPECT_TRUE(
            std::regex_search(lines[k + 2], std::regex(" main\\+0x[0-9a-f]+ at \\S+cli_funcs.c:" + std::to_string(call_line) + "$")))
            << lines[k + 2];
    }
    EXPECT_EQ(events, 3) << r.out;
}

TEST(CliStack, FoldedStacksAreCounted) {
    auto r = run({uprobe_path(), "trace", "--stack=folded", "add", "weak_hook", "--", target_path("cli_funcs"), "7"});
    ASSERT_EQ(r.status, 0) << r.describe();
    int add = 0, hook = 0;
    for (const auto& line : lines_of(r.out)) {
        if (std::regex_match(line, std::regex(R"(cli_funcs;(\S+;)*main;add 7)"))) ++add;
        if (std::regex_match(line, std::regex(R"(cli_funcs;(\S+;)*main;weak_hook 7)"))) ++hook;
    }
    EXPECT_EQ(add, 1) << r.out;
    EXPECT_EQ(hook, 1) << r.out;
}

TEST(CliStack, CountPerProcess) {
    auto r = run({uprobe_path(), "trace", "--count=pid", "add", "--", target_path("cli_funcs"), "4"});
    ASSERT_EQ(r.status, 0) << r.describe();
    EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(add\s+\d+ cli_funcs\s+4\n)"))) << r.out;
    auto bad = run({uprobe_path(), "trace", "--stack=nope", "add", "--", target_path("cli_funcs"), "1"});
    EXPECT_EQ(bad.status, 2) << bad.describe();
}

}  // namespace
}  // namespace uprobe::test

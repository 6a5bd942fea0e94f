// --if predicates: parsing (errors point at the offending column) and
// evaluation over events; cgroup prefix matching of global prefilters.
#include <gtest/gtest.h>

#include <variant>

#include "api/condition.hpp"
#include "proc/discover.hpp"

namespace uprobe::api {
namespace {

Event event_with(std::vector<EventArg> args) {
    Event e;
    e.pid = 42;
    e.tid = 43;
    e.comm = "worker-7";
    e.args = std::move(args);
    return e;
}

bool holds(std::string_view text, const Event& e) {
    auto parsed = Condition::parse(text);
    EXPECT_TRUE(std::holds_alternative<Condition>(parsed)) << text;
    if (!std::holds_alternative<Condition>(parsed)) return false;
    return std::get<Condition>(parsed).matches(e);
}

SpecError error_of(std::string_view text) {
    auto parsed = Condition::parse(text);
    EXPECT_TRUE(std::holds_alternative<SpecError>(parsed)) << text;
    return std::holds_alternative<SpecError>(parsed) ? std::get<SpecError>(parsed) : SpecError{};
}

TEST(Condition, ComparesNumbersOfEveryKind) {
    Event e = event_with({{"x", Value::make_signed(-5)},
                          {"n", Value::make_unsigned(10)},
                          {"h", Value::make_hex(0xff)},
                          {"f", Value::make_float(2.5)}});
    EXPECT_TRUE(holds("x < 0", e));
    EXPECT_TRUE(holds("x == -5", e));
    EXPECT_FALSE(holds("x > -5", e));
    EXPECT_TRUE(holds("n >= 10 && n <= 10", e));
    EXPECT_TRUE(holds("h == 0xff", e));
    EXPECT_TRUE(holds("h == 255", e));
    EXPECT_TRUE(holds("f > 2 && f < 3", e));
    EXPECT_TRUE(holds("f == 2.5", e));
    EXPECT_TRUE(holds("x < n", e));
    EXPECT_TRUE(holds("n != x", e));
}

TEST(Condition, LogicAndPrecedence) {
    Event e = event_with({{"a", Value::make_unsigned(1)}, {"b", Value::make_unsigned(0)}});
    EXPECT_TRUE(holds("a", e));
    EXPECT_FALSE(holds("b", e));
    EXPECT_TRUE(holds("!b", e));
    EXPECT_TRUE(holds("a || b && b", e));      // && binds tighter
    EXPECT_FALSE(holds("(a || b) && b", e));
    EXPECT_TRUE(holds("!(a == 0) && !!a", e));
}

TEST(Condition, PidTidAndCommWithGlobs) {
    Event e = event_with({{"s", Value::make_string("hello", false)}});
    EXPECT_TRUE(holds("$pid == 42 && $tid == 43", e));
    EXPECT_TRUE(holds("$comm == \"worker-7\"", e));
    EXPECT_TRUE(holds("$comm == \"work*\"", e));
    EXPECT_FALSE(holds("$comm == \"idle*\"", e));
    EXPECT_TRUE(holds("$comm != \"idle*\"", e));
    EXPECT_TRUE(holds("s == \"h?llo\"", e));
    EXPECT_TRUE(holds("s < \"world\"", e));
}

TEST(Condition, MissingOrUnreadableValuesFilterTheEventOut) {
    Event e = event_with({{"bad", Value::make_error("bad address 0x10")}});
    EXPECT_FALSE(holds("bad == 0", e));
    EXPECT_FALSE(holds("bad != 0", e));
    EXPECT_FALSE(holds("absent > 1", e));
    EXPECT_FALSE(holds("$comm == 3", e));  // a string is never a number
}

TEST(Condition, NamesAreListed) {
    auto parsed = Condition::parse("a > 1 || (b == 2 && $pid == 3) || c");
    ASSERT_TRUE(std::holds_alternative<Condition>(parsed));
    EXPECT_EQ(std::get<Condition>(parsed).names(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Condition, ErrorsPointAtTheColumn) {
    EXPECT_EQ(error_of("a >< 3").column, 3u);
    EXPECT_EQ(error_of("a = 3").column, 2u);
    EXPECT_EQ(error_of("(a > 1").column, 6u);
    EXPECT_EQ(error_of("a > 1)").column, 5u);
    EXPECT_EQ(error_of("$foo == 1").column, 0u);
    EXPECT_EQ(error_of("s == \"abc").column, 5u);
    EXPECT_EQ(error_of("a > 1 &&").column, 8u);
    EXPECT_EQ(error_of("").column, 0u);
    EXPECT_NE(error_of("a >< 3").render().find("  a >< 3\n     ^"), std::string::npos) << error_of("a >< 3").render();
}

TEST(Condition, DeepNestingIsNotACrash) {
    for (char c : {'(', '!'}) {
        std::string deep(1000000, c);
        auto parsed = Condition::parse(deep);
        ASSERT_TRUE(std::holds_alternative<SpecError>(parsed));
        EXPECT_NE(std::get<SpecError>(parsed).message.find("too deeply"), std::string::npos);
    }
    EXPECT_TRUE(std::holds_alternative<Condition>(Condition::parse(std::string(100, '(') + "1" + std::string(100, ')'))));
}

TEST(Discover, CgroupPrefixIsPathWise) {
    EXPECT_TRUE(proc::cgroup_within("/a/b", "/a"));
    EXPECT_TRUE(proc::cgroup_within("/a", "/a/"));
    EXPECT_FALSE(proc::cgroup_within("/ab", "/a"));
    EXPECT_TRUE(proc::cgroup_within("/user.slice/x", "/"));
    EXPECT_FALSE(proc::cgroup_within("", "/"));
}

TEST(Discover, OurOwnProcessIsListedAndDescribed) {
    auto pids = proc::list_processes();
    ASSERT_TRUE(pids);
    EXPECT_NE(std::find(pids->begin(), pids->end(), getpid()), pids->end());
    auto info = proc::read_process_info(getpid());
    ASSERT_TRUE(info);
    EXPECT_EQ(info->uid, getuid());
    EXPECT_FALSE(info->comm.empty());
    EXPECT_FALSE(info->exe.empty());
    EXPECT_FALSE(proc::read_process_info(-1));
}

}  // namespace
}  // namespace uprobe::api

#include "api/condition.hpp"

#include <cctype>
#include <optional>
#include <variant>

#include "base/strings.hpp"

namespace uprobe::api {

struct Condition::Node {
    enum class Kind { Or, And, Not, Compare, Truth };
    enum class Op { Eq, Ne, Lt, Le, Gt, Ge };
    struct Operand {
        enum class Kind { Number, Float, String, Name, Pid, Tid, Comm };
        Kind kind = Kind::Number;
        __int128 number = 0;
        double real = 0;
        std::string text;  // String literal or Name
    };
    Kind kind = Kind::Truth;
    Op op = Op::Eq;
    std::shared_ptr<const Node> left, right;  // Or, And (both), Not (left)
    Operand a, b;                             // Compare (both), Truth (a)
};

namespace {

using Node = Condition::Node;
using Operand = Node::Operand;

struct ParseFailure {
    std::string message;
    size_t column;
};

class Parser {
public:
    explicit Parser(std::string_view text) : text_(text) {}

    std::shared_ptr<const Node> parse() {
        auto node = parse_or();
        skip_space();
        if (pos_ < text_.size()) fail(std::string("unexpected '") + text_[pos_] + "'");
        return node;
    }

private:
    [[noreturn]] void fail(std::string message) { throw ParseFailure{std::move(message), pos_}; }

    void skip_space() {
        while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    }
    bool eat(std::string_view token) {
        skip_space();
        if (text_.substr(pos_, token.size()) != token) return false;
        pos_ += token.size();
        return true;
    }

    std::shared_ptr<const Node> parse_or() {
        auto left = parse_and();
        while (eat("||")) {
            auto node = std::make_shared<Node>();
            node->kind = Node::Kind::Or;
            node->left = left;
            node->right = parse_and();
            left = node;
        }
        return left;
    }
    std::shared_ptr<const Node> parse_and() {
        auto left = parse_unary();
        while (eat("&&")) {
            auto node = std::make_shared<Node>();
            node->kind = Node::Kind::And;
            node->left = left;
            node->right = parse_unary();
            left = node;
        }
        return left;
    }
    std::shared_ptr<const Node> parse_unary() {
        skip_space();
        // Recursion is bounded: a hostile expression fails, never overflows.
        if (++depth_ > kMaxDepth) fail("expression nested too deeply");
        struct Leave {
            int& depth;
            ~Leave() { --depth; }
        } leave{depth_};
        if (pos_ < text_.size() && text_[pos_] == '!' && text_.substr(pos_, 2) != "!=") {
            ++pos_;
            auto node = std::make_shared<Node>();
            node->kind = Node::Kind::Not;
            node->left = parse_unary();
            return node;
        }
        if (eat("(")) {
            auto inner = parse_or();
            if (!eat(")")) fail("expected ')'");
            return inner;
        }
        auto node = std::make_shared<Node>();
        node->a = parse_operand();
        skip_space();
        static const std::pair<std::string_view, Node::Op> ops[] = {
            {"==", Node::Op::Eq}, {"!=", Node::Op::Ne}, {"<=", Node::Op::Le},
            {">=", Node::Op::Ge}, {"<", Node::Op::Lt},  {">", Node::Op::Gt},
        };
        for (const auto& [token, op] : ops) {
            if (text_.substr(pos_, token.size()) != token) continue;
            pos_ += token.size();
            node->kind = Node::Kind::Compare;
            node->op = op;
            node->b = parse_operand();
            return node;
        }
        if (pos_ < text_.size() && text_[pos_] == '=') fail("expected '==' (comparison), not '='");
        node->kind = Node::Kind::Truth;
        return node;
    }

    Operand parse_operand() {
        skip_space();
        Operand operand;
        if (pos_ >= text_.size()) fail("expected a value, a name or $pid/$tid/$comm");
        char c = text_[pos_];
        if (c == '"') {
            size_t start = pos_++;
            operand.kind = Operand::Kind::String;
            while (pos_ < text_.size() && text_[pos_] != '"') {
                if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
                operand.text += text_[pos_++];
            }
            if (pos_ >= text_.size()) {
                pos_ = start;
                fail("unterminated string");
            }
            ++pos_;
            return operand;
        }
        if (c == '$') {
            size_t start = pos_++;
            std::string word = read_word();
            if (word == "pid") operand.kind = Operand::Kind::Pid;
            else if (word == "tid") operand.kind = Operand::Kind::Tid;
            else if (word == "comm") operand.kind = Operand::Kind::Comm;
            else {
                pos_ = start;
                fail("unknown variable '$" + word + "' (expected $pid, $tid or $comm)");
            }
            return operand;
        }
        if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.') {
            size_t start = pos_;
            bool negative = c == '-';
            if (negative) ++pos_;
            size_t digits = pos_;
            while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.'))
                ++pos_;
            std::string_view word = text_.substr(digits, pos_ - digits);
            if (auto n = parse_uint(word)) {
                operand.kind = Operand::Kind::Number;
                operand.number = negative ? -static_cast<__int128>(*n) : static_cast<__int128>(*n);
                return operand;
            }
            std::string copy(word);
            char* end = nullptr;
            double real = std::strtod(copy.c_str(), &end);
            if (!copy.empty() && end && *end == 0) {
                operand.kind = Operand::Kind::Float;
                operand.real = negative ? -real : real;
                return operand;
            }
            pos_ = start;
            fail("bad number '" + std::string(text_.substr(start, digits - start)) + copy + "'");
        }
        if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
            operand.kind = Operand::Kind::Name;
            operand.text = read_word();
            return operand;
        }
        fail(std::string("unexpected '") + c + "'");
    }

    std::string read_word() {
        size_t start = pos_;
        while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
        return std::string(text_.substr(start, pos_ - start));
    }

    static constexpr int kMaxDepth = 256;
    std::string_view text_;
    size_t pos_ = 0;
    int depth_ = 0;
};

// A value as the predicate sees it.
struct Scalar {
    enum class Kind { Missing, Integer, Real, Text };
    Kind kind = Kind::Missing;
    __int128 integer = 0;
    double real = 0;
    std::string text;
};

Scalar from_value(const Value& v) {
    Scalar s;
    switch (v.kind) {
    case Value::Kind::Signed: s.kind = Scalar::Kind::Integer; s.integer = v.i; break;
    case Value::Kind::Unsigned:
    case Value::Kind::Hex:
    case Value::Kind::Bool: s.kind = Scalar::Kind::Integer; s.integer = v.u; break;
    case Value::Kind::Float: s.kind = Scalar::Kind::Real; s.real = v.f; break;
    case Value::Kind::String:
    case Value::Kind::Text: s.kind = Scalar::Kind::Text; s.text = v.text; break;
    case Value::Kind::Error: break;
    }
    return s;
}

Scalar lookup(const Operand& o, const Event& e) {
    Scalar s;
    switch (o.kind) {
    case Operand::Kind::Number: s.kind = Scalar::Kind::Integer; s.integer = o.number; break;
    case Operand::Kind::Float: s.kind = Scalar::Kind::Real; s.real = o.real; break;
    case Operand::Kind::String: s.kind = Scalar::Kind::Text; s.text = o.text; break;
    case Operand::Kind::Pid: s.kind = Scalar::Kind::Integer; s.integer = e.pid; break;
    case Operand::Kind::Tid: s.kind = Scalar::Kind::Integer; s.integer = e.tid; break;
    case Operand::Kind::Comm: s.kind = Scalar::Kind::Text; s.text = e.comm; break;
    case Operand::Kind::Name:
        for (const auto& arg : e.args)
            if (arg.name == o.text) return from_value(arg.value);
        break;
    }
    return s;
}

template <class T>
bool ordered(Node::Op op, const T& x, const T& y) {
    switch (op) {
    case Node::Op::Eq: return x == y;
    case Node::Op::Ne: return x != y;
    case Node::Op::Lt: return x < y;
    case Node::Op::Le: return x <= y;
    case Node::Op::Gt: return x > y;
    case Node::Op::Ge: return x >= y;
    }
    return false;
}

bool compare(const Node& node, const Event& e) {
    Scalar x = lookup(node.a, e), y = lookup(node.b, e);
    if (x.kind == Scalar::Kind::Missing || y.kind == Scalar::Kind::Missing) return false;
    if (x.kind == Scalar::Kind::Text || y.kind == Scalar::Kind::Text) {
        if (x.kind != y.kind) return false;
        if (node.op == Node::Op::Eq || node.op == Node::Op::Ne) {
            // A literal with glob characters is a pattern.
            bool equal;
            if (node.b.kind == Operand::Kind::String && has_glob(y.text)) equal = glob_match(y.text, x.text);
            else if (node.a.kind == Operand::Kind::String && has_glob(x.text)) equal = glob_match(x.text, y.text);
            else equal = x.text == y.text;
            return node.op == Node::Op::Eq ? equal : !equal;
        }
        return ordered(node.op, x.text, y.text);
    }
    if (x.kind == Scalar::Kind::Real || y.kind == Scalar::Kind::Real) {
        double a = x.kind == Scalar::Kind::Real ? x.real : static_cast<double>(x.integer);
        double b = y.kind == Scalar::Kind::Real ? y.real : static_cast<double>(y.integer);
        return ordered(node.op, a, b);
    }
    return ordered(node.op, x.integer, y.integer);
}

bool evaluate(const Node& node, const Event& e) {
    switch (node.kind) {
    case Node::Kind::Or: return evaluate(*node.left, e) || evaluate(*node.right, e);
    case Node::Kind::And: return evaluate(*node.left, e) && evaluate(*node.right, e);
    case Node::Kind::Not: return !evaluate(*node.left, e);
    case Node::Kind::Compare: return compare(node, e);
    case Node::Kind::Truth: {
        Scalar x = lookup(node.a, e);
        switch (x.kind) {
        case Scalar::Kind::Missing: return false;
        case Scalar::Kind::Integer: return x.integer != 0;
        case Scalar::Kind::Real: return x.real != 0;
        case Scalar::Kind::Text: return !x.text.empty();
        }
    }
    }
    return false;
}

void collect_names(const Node& node, std::vector<std::string>& out) {
    if (node.left) collect_names(*node.left, out);
    if (node.right) collect_names(*node.right, out);
    for (const Operand* o : {&node.a, &node.b})
        if (o->kind == Operand::Kind::Name) out.push_back(o->text);
}

}  // namespace

std::variant<Condition, SpecError> Condition::parse(std::string_view text) {
    // Exceptions stay inside the parser: the recursive descent unwinds on
    // the first error and the caller gets a value.
    try {
        Condition condition;
        condition.root_ = Parser(text).parse();
        return condition;
    } catch (const ParseFailure& failure) {
        return SpecError{failure.message, failure.column, std::string(text)};
    }
}

bool Condition::matches(const Event& event) const { return !root_ || evaluate(*root_, event); }

std::vector<std::string> Condition::names() const {
    std::vector<std::string> out;
    if (root_) collect_names(*root_, out);
    return out;
}

}  // namespace uprobe::api

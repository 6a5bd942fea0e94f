// Event predicates (`--if`): a small expression language evaluated on each
// event before it is delivered.
//
//   expr     := and ('||' and)*
//   and      := unary ('&&' unary)*
//   unary    := '!' unary | '(' expr ')' | operand [CMP operand]
//   CMP      := == != < <= > >=
//   operand  := NUMBER (decimal, 0x hex, optional '-') | "STRING"
//             | NAME (an arg of the probe) | $pid | $tid | $comm
//
// A lone operand is true when non-zero (numbers) or non-empty (strings).
// == and != with a string literal containing * ? [ are glob matches.
// A comparison with a missing or unreadable value is false, so the event
// is filtered out rather than guessed about.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "uprobe/event.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::api {

class Condition {
public:
    // Parses `text`; a syntax error carries the column of the offending
    // character, rendered like a probe-spec error.
    static std::variant<Condition, SpecError> parse(std::string_view text);

    bool matches(const Event& event) const;
    // The arg names the expression refers to (not $pid, $tid, $comm).
    std::vector<std::string> names() const;

    struct Node;

private:
    std::shared_ptr<const Node> root_;
};

}  // namespace uprobe::api

// --if predicates on arbitrary bytes: parsing never crashes or recurses
// without bound, an error's column is inside the text (or just past it),
// and a parsed predicate evaluates on an event without crashing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "api/condition.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = uprobe::api::Condition::parse(text);
    if (auto* error = std::get_if<uprobe::SpecError>(&parsed)) {
        if (error->column > text.size() || error->message.empty()) std::abort();
        (void)error->render();
        return 0;
    }
    uprobe::Event event;
    event.pid = 1;
    event.comm = "fuzz";
    event.args.push_back({"a", uprobe::Value::make_signed(-3)});
    event.args.push_back({"s", uprobe::Value::make_string("text", false)});
    event.args.push_back({"f", uprobe::Value::make_float(0.5)});
    (void)std::get<uprobe::api::Condition>(parsed).matches(event);
    return 0;
}

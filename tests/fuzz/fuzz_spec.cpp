// parse_probe_spec on arbitrary bytes: never crashes or hangs, and a parsed
// spec survives a round trip through its canonical text:
// parse(to_string(x)) == x.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include "uprobe/spec.hpp"

namespace {

using namespace uprobe;

[[noreturn]] void mismatch(const std::string& original, const std::string& canonical, const char* what) {
    std::fprintf(stderr, "round trip changed %s\n  original:  %s\n  canonical: %s\n", what,
                 original.c_str(), canonical.c_str());
    std::abort();
}

bool same_location(const Location& a, const Location& b) {
    return a.kind == b.kind && a.binary == b.binary && a.function == b.function && a.file == b.file &&
           a.offset == b.offset && a.line == b.line && a.address == b.address &&
           a.is_return == b.is_return && a.provider == b.provider && a.marker == b.marker;
}

// The canonical text of a whole probe, every argument named explicitly.
std::string canonical(const ProbeSpec& spec) {
    std::string text = spec.named ? spec.name + "=" : std::string();
    text += to_string(spec.location);
    for (const ArgSpec& arg : spec.args) {
        text += " " + arg.name + "=" + to_string(arg.fetch);
        if (arg.type != ValueType::Default) text += ":" + std::string(to_string(arg.type));
    }
    return text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    ParsedSpec parsed = parse_probe_spec(text);
    if (parsed.error) {
        if (parsed.error->column > text.size()) mismatch(text, "", "the error column (past the end)");
        (void)parsed.error->render();
        return 0;
    }
    if (!parsed.spec) mismatch(text, "", "nothing (neither spec nor error)");
    const ProbeSpec& spec = *parsed.spec;
    std::string again_text = canonical(spec);
    ParsedSpec again = parse_probe_spec(again_text);
    if (!again.spec) mismatch(text, again_text + "\n" + again.error->render(), "success into failure");
    const ProbeSpec& other = *again.spec;
    if (other.name != spec.name || other.named != spec.named) mismatch(text, again_text, "the probe name");
    if (!same_location(spec.location, other.location)) mismatch(text, again_text, "the location");
    if (other.args.size() != spec.args.size()) mismatch(text, again_text, "the argument count");
    for (size_t i = 0; i < spec.args.size(); ++i) {
        const ArgSpec& a = spec.args[i];
        const ArgSpec& b = other.args[i];
        if (a.name != b.name || a.type != b.type || to_string(a.fetch) != to_string(b.fetch))
            mismatch(text, again_text, "an argument");
    }
    return 0;
}

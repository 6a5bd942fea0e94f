// A DWARF location expression from arbitrary bytes (corrupt DWARF is bad
// input), compiled for a variable of several types and evaluated against
// registers and memory from the same bytes: must give a value or an error
// value, never crash or hang.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "probe/dwarf_fetch.hpp"

namespace {

using uprobe::dwarf::DebugInfo;
using uprobe::dwarf::Type;

class BytesMemory : public uprobe::probe::MemoryReader {
public:
    BytesMemory(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    size_t read(uint64_t address, void* out, size_t size) override {
        // Addresses 0x1000.. map onto the input; everything else faults.
        if (address < 0x1000 || address - 0x1000 >= size_) return 0;
        size_t n = std::min<uint64_t>(size, size_ - (address - 0x1000));
        std::memcpy(out, data_ + (address - 0x1000), n);
        return n;
    }

private:
    const uint8_t* data_;
    size_t size_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Operations: atom, then 8 bytes of number and 8 of number2 each.
    std::vector<DebugInfo::Op> ops;
    size_t at = 0;
    while (at + 17 <= size && ops.size() < 64) {
        DebugInfo::Op op;
        op.atom = data[at];
        std::memcpy(&op.number, data + at + 1, 8);
        std::memcpy(&op.number2, data + at + 9, 8);
        at += 17;
        if (op.atom == 0x9e) op.block.assign(data + at, data + std::min(size, at + (op.number & 15)));  // implicit_value
        if (op.atom == 0xa3 || op.atom == 0xf3) {                                                        // entry_value
            DebugInfo::Op inner;
            inner.atom = uint8_t(op.number);
            op.nested.push_back(inner);
        }
        ops.push_back(op);
    }
    static Type int_type, char_type, pointer, strukt, array;
    static bool ready = false;
    if (!ready) {
        int_type.kind = Type::Kind::Base;
        int_type.byte_size = 4;
        int_type.encoding = Type::Encoding::Signed;
        char_type.kind = Type::Kind::Base;
        char_type.byte_size = 1;
        char_type.encoding = Type::Encoding::SignedChar;
        pointer.kind = Type::Kind::Pointer;
        pointer.byte_size = 8;
        pointer.target = &char_type;
        strukt.kind = Type::Kind::Struct;
        strukt.byte_size = 24;
        strukt.members = {{"a", 0, &int_type, 0, 0}, {"b", 4, &int_type, 3, 2}, {"s", 8, &pointer, 0, 0},
                          {"c", 16, &char_type, 0, 0}};
        array.kind = Type::Kind::Array;
        array.target = &int_type;
        array.count = 5;
        ready = true;
    }
    user_regs_struct regs;
    std::memset(&regs, 0, sizeof regs);
    std::memcpy(&regs, data, std::min(size, sizeof regs));
    BytesMemory memory(data, size);
    uprobe::probe::FetchContext context;
    context.string_max = 64;
    for (const Type* type : {&int_type, &pointer, &strukt, &array}) {
        DebugInfo::Variable v;
        v.name = "v";
        v.type = type;
        v.location = ops;
        v.frame_base = {DebugInfo::Op{0x56, 0, 0, 0, {}, {}}};  // DW_OP_reg6
        uprobe::probe::VariableSite site;
        site.at_function_entry = size % 2 == 0;
        uprobe::probe::ArgProgram program;
        program.is_dwarf = true;
        program.values.emplace_back("v", uprobe::probe::compile_variable(v, site));
        std::vector<uprobe::EventArg> out;
        uprobe::probe::evaluate_arg("v", program, regs, memory, context, out);
    }
    return 0;
}

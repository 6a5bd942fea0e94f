// Fetch programs: an ArgSpec compiled for one probe site into a flat,
// position-independent description of how to get the value from a stopped
// thread's registers and memory.
//
// The compiled form (FetchProgram) is a POD of fixed size with no pointers
// or heap data, so it can be copied into memory shared with an in-process
// agent later; names and display types stay beside it in the caller.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "probe/fetch_program.hpp"
#include "probe/resolve.hpp"
#include "uprobe/event.hpp"
#include "uprobe/result.hpp"
#include "uprobe/spec.hpp"

namespace uprobe::probe {

// FetchOp, FetchStep, FetchFormat, FetchProgram: probe/fetch_program.hpp
// (shared with the in-process agent, which links no C++ runtime).

// What compiling needs to know about the site and the process.
struct CompileContext {
    const Site* site = nullptr;  // the marker's operands for $argN at SDT sites
    uint64_t load_bias = 0;      // runtime address - link-time address of the object
    bool at_return = false;      // a FUNC%return probe: $retval takes the DWARF return type
    // Link-time address of a data symbol of the object, for @SYMBOL.
    std::function<Result<uint64_t>(const std::string&)> symbol_address;
};

// Compiles one argument. Errors are one line naming the argument
// ("arg 'x': unknown register 'foo' (valid: ...)").
Result<FetchProgram> compile_fetch(const ArgSpec& arg, const CompileContext& context);

// Reads target memory; returns how many leading bytes it could read.
class MemoryReader {
public:
    virtual ~MemoryReader() = default;
    virtual size_t read(uint64_t address, void* out, size_t size) = 0;
};

// process_vm_readv of one process; pages it cannot read end the read.
class ProcessMemoryReader final : public MemoryReader {
public:
    explicit ProcessMemoryReader(pid_t pid) : pid_(pid) {}
    size_t read(uint64_t address, void* out, size_t size) override;

private:
    pid_t pid_;
};

struct FetchContext {
    pid_t pid = 0;
    pid_t tid = 0;
    std::string_view comm;
    const user_fpregs_struct* fpregs = nullptr;  // required when needs_fpregs
    size_t string_max = 256;
    // At a return: nanoseconds since the matching entry ($duration).
    std::optional<uint64_t> duration_ns;
};

// Never fails as a whole: a value that cannot be read becomes
// Value::make_error("bad address 0x...").
Value evaluate(const FetchProgram& program, const user_regs_struct& regs, MemoryReader& memory,
               const FetchContext& context);

// What evaluate() makes of the steps' result `raw` for a number format
// (Unsigned, Signed, Hex, Float): truncated to the value size and typed.
// For an engine that ran the steps elsewhere (the inline engine's agent).
Value number_value(const FetchProgram& program, uint64_t raw);

}  // namespace uprobe::probe

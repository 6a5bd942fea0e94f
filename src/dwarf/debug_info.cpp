#include "dwarf/debug_info.hpp"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "base/strings.hpp"

namespace uprobe::dwarf {

namespace {

// Corrupt DWARF can nest DIEs or types arbitrarily deep; real code stays far
// below these limits.
constexpr int kMaxDieDepth = 128;
constexpr int kMaxTypeDepth = 48;

std::string libdw_error() {
    const char* msg = dwarf_errmsg(-1);
    return msg ? msg : "unknown libdw error";
}

std::string attr_string(Dwarf_Die* die, unsigned name) {
    Dwarf_Attribute attr;
    if (!dwarf_attr_integrate(die, name, &attr)) return {};
    const char* s = dwarf_formstring(&attr);
    return s ? s : "";
}

std::optional<uint64_t> attr_udata(Dwarf_Die* die, unsigned name) {
    Dwarf_Attribute attr;
    Dwarf_Word value;
    if (!dwarf_attr_integrate(die, name, &attr) || dwarf_formudata(&attr, &value) != 0)
        return std::nullopt;
    return value;
}

bool attr_flag(Dwarf_Die* die, unsigned name) {
    Dwarf_Attribute attr;
    bool flag = false;
    if (!dwarf_attr_integrate(die, name, &attr) || dwarf_formflag(&attr, &flag) != 0) return false;
    return flag;
}

std::optional<Dwarf_Die> attr_die(Dwarf_Die* die, unsigned name) {
    Dwarf_Attribute attr;
    Dwarf_Die result;
    if (!dwarf_attr_integrate(die, name, &attr) || !dwarf_formref_die(&attr, &result))
        return std::nullopt;
    return result;
}

std::string_view basename_of(std::string_view path) {
    size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// "main.c" and "src/main.c" match ".../src/main.c".
bool path_matches(std::string_view full, std::string_view wanted) {
    if (wanted.empty()) return false;
    if (full == wanted) return true;
    if (full.size() <= wanted.size()) return false;
    return full.substr(full.size() - wanted.size()) == wanted &&
           full[full.size() - wanted.size() - 1] == '/';
}

bool same_file(std::string_view a, std::string_view b) {
    return a == b || path_matches(a, b) || path_matches(b, a);
}

bool is_addr_form(unsigned form) {
    return form == DW_FORM_addr || form == DW_FORM_addrx || form == DW_FORM_addrx1 ||
           form == DW_FORM_addrx2 || form == DW_FORM_addrx3 || form == DW_FORM_addrx4 ||
           form == DW_FORM_GNU_addr_index;
}

}  // namespace

// ---------------------------------------------------------------------------
// Type

std::string Type::display() const {
    if (!typedef_name.empty()) return typedef_name;
    switch (kind) {
    case Kind::Void: return "void";
    case Kind::Pointer: {
        if (target && target->kind == Kind::Function && target->typedef_name.empty())
            return (target->target ? target->target->display() : std::string("void")) + " (*)()";
        std::string inner = target ? target->display() : std::string("void");
        if (!inner.empty() && inner.back() == '*') return inner + "*";
        return inner + " *";
    }
    case Kind::Array: {
        std::string dims;
        const Type* t = this;
        while (t && t->kind == Kind::Array && (t == this || t->typedef_name.empty())) {
            dims += "[" + (t->count ? std::to_string(*t->count) : std::string()) + "]";
            t = t->target;
        }
        return (t ? t->display() : std::string("?")) + dims;
    }
    case Kind::Function: return (target ? target->display() : std::string("void")) + " ()";
    default: return name.empty() ? "?" : name;
    }
}

bool Type::is_signed() const {
    return encoding == Encoding::Signed || encoding == Encoding::SignedChar;
}

// ---------------------------------------------------------------------------
// Impl

struct DebugInfo::Impl {
    std::string path;
    int fd = -1;
    Elf* elf = nullptr;
    Dwarf* dbg = nullptr;
    mutable std::mutex mu;

    struct Unit {
        Dwarf_Off die_offset;
        std::string name;  // DW_AT_name of the CU
    };
    std::vector<Unit> units;

    // Line index.
    struct Row {
        uint64_t addr;
        uint32_t file;
        uint32_t line;
        bool stmt;
        bool end;
    };
    struct Block {  // first is_stmt address of a run of rows of one line
        uint64_t addr;
        uint32_t file;
        uint32_t line;
    };
    struct Span {  // [lo, hi) is attributed to file:line
        uint64_t lo, hi;
        uint32_t file, line;
    };
    bool lines_built = false;
    std::optional<Error> lines_error;
    std::vector<std::string> files;
    std::unordered_map<std::string, uint32_t> file_ids;
    std::vector<Row> rows;  // all units' rows, each unit's sorted by address
    std::vector<std::pair<size_t, size_t>> unit_rows;  // per unit: [begin, end) in rows
    std::vector<Block> blocks;  // sorted by address
    std::vector<Span> spans;    // sorted by lo

    // Function index.
    struct Func {
        FunctionInstance inst;
        Dwarf_Off die_offset;
        size_t unit;
        std::vector<std::pair<uint64_t, uint64_t>> inlined_ranges;  // code of functions inlined into it
    };
    struct RangeRef {
        uint64_t lo, hi;
        size_t func;
    };
    bool funcs_built = false;
    std::optional<Error> funcs_error;
    std::vector<Func> funcs;
    std::vector<RangeRef> func_ranges;  // sorted by lo
    std::unordered_map<uint64_t, size_t> func_by_entry;  // out-of-line functions

    // Types, keyed by the DIE offset they were built from.
    std::deque<Type> types;
    std::unordered_map<Dwarf_Off, const Type*> type_cache;

    ~Impl() {
        if (dbg) dwarf_end(dbg);
        if (elf) elf_end(elf);
        if (fd >= 0) ::close(fd);
    }

    Error corrupt(std::string_view what) const {
        return Error("corrupt DWARF in " + path + ": " + std::string(what));
    }

    uint32_t intern_file(const char* name) {
        std::string key = name ? name : "??";
        auto [it, added] = file_ids.emplace(key, uint32_t(files.size()));
        if (added) files.push_back(key);
        return it->second;
    }

    Result<void> build_lines();
    Result<void> build_funcs();
    Result<void> walk_die(Dwarf_Die* die, size_t unit, int depth, std::optional<size_t> enclosing);
    const Func* innermost(uint64_t addr) const;
    const Func* outer_function(uint64_t addr) const;
    const Type* build_type(Dwarf_Die* die, int depth);
    const Type* type_of(Dwarf_Die* die);
    std::vector<Op> copy_ops(Dwarf_Attribute* attr, Dwarf_Op* ops, size_t count, int depth);
    std::optional<std::vector<Op>> location_at(Dwarf_Attribute* attr, uint64_t vaddr);
    void describe_variable(Dwarf_Die* die, uint64_t vaddr, Variable& v);
};

Result<void> DebugInfo::Impl::build_lines() {
    if (lines_built) {
        if (lines_error) return *lines_error;
        return {};
    }
    lines_built = true;
    unit_rows.assign(units.size(), {0, 0});
    for (size_t u = 0; u < units.size(); ++u) {
        const Unit& unit = units[u];
        Dwarf_Die cudie;
        if (!dwarf_offdie(dbg, unit.die_offset, &cudie)) {
            lines_error = corrupt("unit at " + std::to_string(unit.die_offset) + ": " + libdw_error());
            return *lines_error;
        }
        if (!dwarf_hasattr(&cudie, DW_AT_stmt_list)) continue;
        Dwarf_Lines* lines = nullptr;
        size_t count = 0;
        if (dwarf_getsrclines(&cudie, &lines, &count) != 0) {
            lines_error = corrupt("line table of " + unit.name + ": " + libdw_error());
            return *lines_error;
        }
        size_t first = rows.size();
        for (size_t i = 0; i < count; ++i) {
            Dwarf_Line* l = dwarf_onesrcline(lines, i);
            Dwarf_Addr addr;
            int lineno;
            bool stmt = false, end = false;
            if (!l || dwarf_lineaddr(l, &addr) != 0 || dwarf_lineno(l, &lineno) != 0 ||
                dwarf_linebeginstatement(l, &stmt) != 0 || dwarf_lineendsequence(l, &end) != 0) {
                lines_error = corrupt("line table of " + unit.name + ": " + libdw_error());
                return *lines_error;
            }
            const char* src = dwarf_linesrc(l, nullptr, nullptr);
            rows.push_back(Row{addr, intern_file(src), uint32_t(std::max(lineno, 0)), stmt, end});
        }
        unit_rows[u] = {first, rows.size()};
        bool open_block = false, emitted = false;
        for (size_t i = first; i < rows.size(); ++i) {
            const Row& r = rows[i];
            if (r.end) {
                open_block = false;
                continue;
            }
            const Row* prev = i > first ? &rows[i - 1] : nullptr;
            if (!open_block || !prev || prev->end || prev->file != r.file || prev->line != r.line) {
                open_block = true;
                emitted = false;
            }
            if (!emitted && r.stmt && r.line != 0) {
                blocks.push_back(Block{r.addr, r.file, r.line});
                emitted = true;
            }
            if (r.line != 0 && i + 1 < rows.size() && rows[i + 1].addr > r.addr)
                spans.push_back(Span{r.addr, rows[i + 1].addr, r.file, r.line});
        }
    }
    std::stable_sort(blocks.begin(), blocks.end(),
                     [](const Block& a, const Block& b) { return a.addr < b.addr; });
    std::stable_sort(spans.begin(), spans.end(),
                     [](const Span& a, const Span& b) { return a.lo < b.lo; });
    return {};
}

Result<void> DebugInfo::Impl::walk_die(Dwarf_Die* die, size_t unit, int depth,
                                       std::optional<size_t> enclosing) {
    if (depth > kMaxDieDepth) return corrupt("DIEs nested too deeply");
    int tag = dwarf_tag(die);
    std::optional<size_t> self = enclosing;
    if (tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine) {
        std::vector<std::pair<uint64_t, uint64_t>> ranges;
        Dwarf_Addr base, start, end;
        ptrdiff_t off = 0;
        while ((off = dwarf_ranges(die, off, &base, &start, &end)) > 0) {
            if (end > start) ranges.emplace_back(start, end);
            if (ranges.size() > 100000) return corrupt("too many address ranges");
        }
        if (off < 0) return corrupt("address ranges: " + libdw_error());
        if (!ranges.empty()) {
            Func f;
            f.inst.name = attr_string(die, DW_AT_name);
            f.inst.linkage_name = attr_string(die, DW_AT_linkage_name);
            if (f.inst.linkage_name.empty())
                f.inst.linkage_name = attr_string(die, DW_AT_MIPS_linkage_name);
            if (f.inst.name.empty()) f.inst.name = demangle(f.inst.linkage_name);
            f.inst.file = units[unit].name;
            const char* decl = dwarf_decl_file(die);
            f.inst.decl_file = decl ? decl : "";
            int decl_line = 0;
            if (dwarf_decl_line(die, &decl_line) == 0 && decl_line > 0)
                f.inst.decl_line = uint32_t(decl_line);
            f.inst.inlined = tag == DW_TAG_inlined_subroutine;
            uint64_t lowest = ranges.front().first;
            for (auto& r : ranges) lowest = std::min(lowest, r.first);
            std::optional<uint64_t> entry;
            Dwarf_Attribute attr;
            if (dwarf_attr(die, DW_AT_entry_pc, &attr)) {
                Dwarf_Addr a;
                Dwarf_Word w;
                if (is_addr_form(dwarf_whatform(&attr))) {
                    if (dwarf_formaddr(&attr, &a) == 0) entry = a;
                } else if (dwarf_formudata(&attr, &w) == 0) {
                    // DWARF 5: a constant entry_pc is an offset from the base address.
                    Dwarf_Addr low;
                    entry = (dwarf_lowpc(die, &low) == 0 ? low : lowest) + w;
                }
            }
            Dwarf_Addr low;
            if (!entry && dwarf_lowpc(die, &low) == 0) entry = low;
            // A hot/cold split function lists its hot part first, and the
            // cold part may be linked below it.
            if (!entry) entry = f.inst.inlined ? lowest : ranges.front().first;
            f.inst.entry = *entry;
            f.die_offset = dwarf_dieoffset(die);
            f.unit = unit;
            if (f.inst.inlined && enclosing) {
                auto& outer = funcs[*enclosing].inlined_ranges;
                outer.insert(outer.end(), ranges.begin(), ranges.end());
            }
            f.inst.ranges = std::move(ranges);
            self = funcs.size();
            funcs.push_back(std::move(f));
        }
    }
    bool descend = tag == DW_TAG_compile_unit || tag == DW_TAG_partial_unit ||
                   tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine ||
                   tag == DW_TAG_lexical_block || tag == DW_TAG_namespace ||
                   tag == DW_TAG_try_block || tag == DW_TAG_catch_block;
    if (!descend) return {};
    Dwarf_Die child;
    int rc = dwarf_child(die, &child);
    if (rc < 0) return corrupt("children of DIE: " + libdw_error());
    while (rc == 0) {
        UPROBE_CHECK(walk_die(&child, unit, depth + 1, self));
        rc = dwarf_siblingof(&child, &child);
        if (rc < 0) return corrupt("siblings of DIE: " + libdw_error());
    }
    return {};
}

Result<void> DebugInfo::Impl::build_funcs() {
    if (funcs_built) {
        if (funcs_error) return *funcs_error;
        return {};
    }
    funcs_built = true;
    for (size_t u = 0; u < units.size(); ++u) {
        Dwarf_Die cudie;
        if (!dwarf_offdie(dbg, units[u].die_offset, &cudie)) {
            funcs_error = corrupt("unit DIE: " + libdw_error());
            return *funcs_error;
        }
        auto r = walk_die(&cudie, u, 0, std::nullopt);
        if (!r) {
            funcs_error = r.error();
            return *funcs_error;
        }
    }
    for (size_t i = 0; i < funcs.size(); ++i)
        for (auto& [lo, hi] : funcs[i].inst.ranges) func_ranges.push_back(RangeRef{lo, hi, i});
    std::stable_sort(func_ranges.begin(), func_ranges.end(),
                     [](const RangeRef& a, const RangeRef& b) { return a.lo < b.lo; });
    for (size_t i = 0; i < funcs.size(); ++i)
        if (!funcs[i].inst.inlined) func_by_entry.emplace(funcs[i].inst.entry, i);
    return {};
}

// The innermost function instance (inlined or not) whose code contains addr.
// Inlined ranges lie inside their caller's, and out-of-line functions do not
// overlap, so the search walks back from addr only to the out-of-line one.
const DebugInfo::Impl::Func* DebugInfo::Impl::innermost(uint64_t addr) const {
    auto it = std::upper_bound(func_ranges.begin(), func_ranges.end(), addr,
                               [](uint64_t a, const RangeRef& r) { return a < r.lo; });
    const RangeRef* best = nullptr;
    while (it != func_ranges.begin()) {
        --it;
        bool inside = addr < it->hi;
        if (inside && (!best || it->hi - it->lo < best->hi - best->lo)) best = &*it;
        if (!funcs[it->func].inst.inlined) break;
    }
    return best ? &funcs[best->func] : nullptr;
}

const DebugInfo::Impl::Func* DebugInfo::Impl::outer_function(uint64_t addr) const {
    auto it = std::upper_bound(func_ranges.begin(), func_ranges.end(), addr,
                               [](uint64_t a, const RangeRef& r) { return a < r.lo; });
    while (it != func_ranges.begin()) {
        --it;
        if (funcs[it->func].inst.inlined) continue;
        return addr < it->hi ? &funcs[it->func] : nullptr;
    }
    return nullptr;
}

const Type* DebugInfo::Impl::type_of(Dwarf_Die* die) {
    auto t = attr_die(die, DW_AT_type);
    if (!t) return nullptr;
    return build_type(&*t, 0);
}

const Type* DebugInfo::Impl::build_type(Dwarf_Die* die, int depth) {
    Dwarf_Off key = dwarf_dieoffset(die);
    if (auto it = type_cache.find(key); it != type_cache.end()) return it->second;
    Type& t = types.emplace_back();
    type_cache[key] = &t;
    if (depth > kMaxTypeDepth) {
        t.name = "<too deep>";
        return &t;
    }
    // Peel qualifiers and typedefs, remembering the outermost typedef name.
    Dwarf_Die cur = *die;
    for (int peel = 0;; ++peel) {
        int tag = dwarf_tag(&cur);
        bool qualifier = tag == DW_TAG_const_type || tag == DW_TAG_volatile_type ||
                         tag == DW_TAG_restrict_type || tag == DW_TAG_atomic_type ||
                         tag == DW_TAG_typedef;
        if (!qualifier) break;
        if (tag == DW_TAG_typedef && t.typedef_name.empty()) t.typedef_name = attr_string(&cur, DW_AT_name);
        auto next = attr_die(&cur, DW_AT_type);
        if (!next) {  // "const void"
            t.kind = Type::Kind::Void;
            return &t;
        }
        cur = *next;
        if (peel > kMaxTypeDepth) {
            t.name = "<too deep>";
            return &t;
        }
    }
    int tag = dwarf_tag(&cur);
    if (auto size = attr_udata(&cur, DW_AT_byte_size)) t.byte_size = *size;
    t.declaration = attr_flag(&cur, DW_AT_declaration);
    std::string name = attr_string(&cur, DW_AT_name);
    auto child_type = [&](Dwarf_Die* d) -> const Type* {
        auto next = attr_die(d, DW_AT_type);
        return next ? build_type(&*next, depth + 1) : nullptr;
    };
    switch (tag) {
    case DW_TAG_base_type: {
        t.kind = Type::Kind::Base;
        t.name = name;
        switch (attr_udata(&cur, DW_AT_encoding).value_or(0)) {
        case DW_ATE_signed: t.encoding = Type::Encoding::Signed; break;
        case DW_ATE_unsigned: t.encoding = Type::Encoding::Unsigned; break;
        case DW_ATE_signed_char: t.encoding = Type::Encoding::SignedChar; break;
        case DW_ATE_unsigned_char: case DW_ATE_UTF: t.encoding = Type::Encoding::UnsignedChar; break;
        case DW_ATE_float: t.encoding = Type::Encoding::Float; break;
        case DW_ATE_boolean: t.encoding = Type::Encoding::Bool; break;
        default: break;
        }
        break;
    }
    case DW_TAG_unspecified_type:
        t.kind = Type::Kind::Void;
        t.name = name;
        break;
    case DW_TAG_pointer_type:
    case DW_TAG_reference_type:
    case DW_TAG_rvalue_reference_type:
        t.kind = Type::Kind::Pointer;
        if (t.byte_size == 0) t.byte_size = 8;
        t.target = child_type(&cur);
        break;
    case DW_TAG_structure_type:
    case DW_TAG_union_type:
    case DW_TAG_class_type: {
        const char* word = tag == DW_TAG_union_type ? "union " : tag == DW_TAG_class_type ? "class " : "struct ";
        t.kind = tag == DW_TAG_union_type   ? Type::Kind::Union
                 : tag == DW_TAG_class_type ? Type::Kind::Class
                                            : Type::Kind::Struct;
        t.name = word + (name.empty() ? std::string("<anonymous>") : name);
        Dwarf_Die child;
        int rc = dwarf_child(&cur, &child);
        while (rc == 0) {
            if (dwarf_tag(&child) == DW_TAG_member && !dwarf_hasattr(&child, DW_AT_external)) {
                Type::Member m;
                m.name = attr_string(&child, DW_AT_name);
                m.type = child_type(&child);
                Dwarf_Attribute loc;
                if (dwarf_attr(&child, DW_AT_data_member_location, &loc)) {
                    Dwarf_Word w;
                    Dwarf_Op* ops;
                    size_t n;
                    if (dwarf_formudata(&loc, &w) == 0) m.offset = w;
                    else if (dwarf_getlocation(&loc, &ops, &n) == 0 && n == 1 &&
                             ops[0].atom == DW_OP_plus_uconst)
                        m.offset = ops[0].number;
                }
                if (auto bits = attr_udata(&child, DW_AT_bit_size)) {
                    m.bit_size = uint32_t(*bits);
                    if (auto dbo = attr_udata(&child, DW_AT_data_bit_offset)) {
                        m.offset = *dbo / 8;
                        m.bit_offset = uint32_t(*dbo % 8);
                    } else if (auto bo = attr_udata(&child, DW_AT_bit_offset)) {
                        // DWARF 4 counts from the most significant bit of the
                        // storage unit; x86-64 is little-endian.
                        uint64_t storage = attr_udata(&child, DW_AT_byte_size)
                                               .value_or(m.type ? m.type->byte_size : 0);
                        if (storage * 8 >= *bo + *bits) m.bit_offset = uint32_t(storage * 8 - *bo - *bits);
                    }
                }
                t.members.push_back(std::move(m));
                if (t.members.size() > 100000) break;
            }
            rc = dwarf_siblingof(&child, &child);
        }
        break;
    }
    case DW_TAG_enumeration_type: {
        t.kind = Type::Kind::Enum;
        t.name = "enum " + (name.empty() ? std::string("<anonymous>") : name);
        t.target = child_type(&cur);
        t.encoding = t.target ? t.target->encoding : Type::Encoding::Unsigned;
        Dwarf_Die child;
        int rc = dwarf_child(&cur, &child);
        while (rc == 0) {
            if (dwarf_tag(&child) == DW_TAG_enumerator) {
                Dwarf_Attribute v;
                Dwarf_Sword s;
                if (dwarf_attr(&child, DW_AT_const_value, &v) && dwarf_formsdata(&v, &s) == 0) {
                    t.enumerators.emplace_back(int64_t(s), attr_string(&child, DW_AT_name));
                    if (s < 0 && t.encoding == Type::Encoding::Unsigned) t.encoding = Type::Encoding::Signed;
                }
                if (t.enumerators.size() > 100000) break;
            }
            rc = dwarf_siblingof(&child, &child);
        }
        if (t.encoding == Type::Encoding::None) t.encoding = Type::Encoding::Unsigned;
        break;
    }
    case DW_TAG_array_type: {
        // int a[3][4] is one DIE with two subranges: model as arrays of arrays.
        const Type* element = child_type(&cur);
        std::vector<std::optional<uint64_t>> dims;
        Dwarf_Die child;
        int rc = dwarf_child(&cur, &child);
        while (rc == 0 && dims.size() < 64) {
            if (dwarf_tag(&child) == DW_TAG_subrange_type) {
                std::optional<uint64_t> n = attr_udata(&child, DW_AT_count);
                if (!n) {
                    Dwarf_Attribute ub;
                    Dwarf_Sword upper;
                    if (dwarf_attr(&child, DW_AT_upper_bound, &ub) && dwarf_formsdata(&ub, &upper) == 0 &&
                        upper >= -1) {
                        int64_t lower = int64_t(attr_udata(&child, DW_AT_lower_bound).value_or(0));
                        if (upper + 1 >= lower) n = uint64_t(upper + 1 - lower);
                    }
                }
                dims.push_back(n);
            }
            rc = dwarf_siblingof(&child, &child);
        }
        if (dims.empty()) dims.push_back(std::nullopt);
        for (size_t i = dims.size(); i-- > 1;) {
            Type& inner = types.emplace_back();
            inner.kind = Type::Kind::Array;
            inner.target = element;
            inner.count = dims[i];
            if (element && dims[i]) inner.byte_size = element->byte_size * *dims[i];
            element = &inner;
        }
        t.kind = Type::Kind::Array;
        t.target = element;
        t.count = dims[0];
        if (t.byte_size == 0 && element && dims[0]) t.byte_size = element->byte_size * *dims[0];
        break;
    }
    case DW_TAG_subroutine_type:
        t.kind = Type::Kind::Function;
        t.target = child_type(&cur);
        break;
    default:
        t.kind = Type::Kind::Other;
        t.name = name.empty() ? "?" : name;
        break;
    }
    return &t;
}

std::vector<DebugInfo::Op> DebugInfo::Impl::copy_ops(Dwarf_Attribute* attr, Dwarf_Op* ops, size_t count,
                                                     int depth) {
    std::vector<Op> out;
    for (size_t i = 0; i < count; ++i) {
        Op op;
        op.atom = ops[i].atom;
        op.number = ops[i].number;
        op.number2 = ops[i].number2;
        op.offset = ops[i].offset;
        if ((op.atom == DW_OP_entry_value || op.atom == DW_OP_GNU_entry_value) && depth < 4) {
            Dwarf_Attribute inner;
            Dwarf_Op* inner_ops;
            size_t inner_count;
            if (dwarf_getlocation_attr(attr, &ops[i], &inner) == 0 &&
                dwarf_getlocation(&inner, &inner_ops, &inner_count) == 0)
                op.nested = copy_ops(&inner, inner_ops, inner_count, depth + 1);
            op.number2 = 0;
        } else if (op.atom == DW_OP_implicit_value) {
            Dwarf_Block block;
            if (dwarf_getlocation_implicit_value(attr, &ops[i], &block) == 0 && block.data)
                op.block.assign(block.data, block.data + block.length);
            op.number2 = 0;
        }
        out.push_back(std::move(op));
    }
    return out;
}

// The expression of `attr` that applies at vaddr; nullopt when there is none.
std::optional<std::vector<DebugInfo::Op>> DebugInfo::Impl::location_at(Dwarf_Attribute* attr, uint64_t vaddr) {
    Dwarf_Op* expr = nullptr;
    size_t len = 0;
    int n = dwarf_getlocation_addr(attr, vaddr, &expr, &len, 1);
    if (n <= 0 || len == 0) return std::nullopt;
    return copy_ops(attr, expr, len, 0);
}

// ---------------------------------------------------------------------------
// DebugInfo

DebugInfo::DebugInfo(std::string path, std::unique_ptr<Impl> impl)
    : path_(std::move(path)), impl_(std::move(impl)) {}
DebugInfo::~DebugInfo() = default;

Result<std::unique_ptr<DebugInfo>> DebugInfo::open(const std::string& path) {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    elf_version(EV_CURRENT);
    impl->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (impl->fd < 0) return errno_error("opening " + path, errno);
    impl->elf = elf_begin(impl->fd, ELF_C_READ_MMAP, nullptr);
    if (!impl->elf || elf_kind(impl->elf) != ELF_K_ELF)
        return Error(path + " is not an ELF file");
    size_t shstrndx;
    if (elf_getshdrstrndx(impl->elf, &shstrndx) != 0)
        return Error(path + ": bad ELF section headers: " + elf_errmsg(-1));
    bool has_info = false;
    for (Elf_Scn* scn = elf_nextscn(impl->elf, nullptr); scn; scn = elf_nextscn(impl->elf, scn)) {
        GElf_Shdr shdr;
        if (!gelf_getshdr(scn, &shdr)) continue;
        const char* name = elf_strptr(impl->elf, shstrndx, shdr.sh_name);
        if (name && (std::strcmp(name, ".debug_info") == 0 || std::strcmp(name, ".zdebug_info") == 0) &&
            shdr.sh_type != SHT_NOBITS && shdr.sh_size > 0)
            has_info = true;
    }
    if (!has_info) return Error("no DWARF in " + path);
    impl->dbg = dwarf_begin_elf(impl->elf, DWARF_C_READ, nullptr);
    if (!impl->dbg) return impl->corrupt(libdw_error());

    Dwarf_CU* cu = nullptr;
    Dwarf_CU* next = nullptr;
    Dwarf_Half version;
    uint8_t unit_type;
    Dwarf_Die cudie, subdie;
    int rc;
    while ((rc = dwarf_get_units(impl->dbg, cu, &next, &version, &unit_type, &cudie, &subdie)) == 0) {
        cu = next;
        int tag = dwarf_tag(&cudie);
        if (tag != DW_TAG_compile_unit && tag != DW_TAG_partial_unit) continue;
        const char* name = dwarf_diename(&cudie);
        impl->units.push_back(Impl::Unit{dwarf_dieoffset(&cudie), name ? name : ""});
    }
    if (rc < 0) return impl->corrupt("unit headers: " + libdw_error());
    if (impl->units.empty()) return Error("no DWARF in " + path);
    return std::unique_ptr<DebugInfo>(new DebugInfo(path, std::move(impl)));
}

Result<std::vector<DebugInfo::LineSite>> DebugInfo::line_sites(std::string_view file, uint32_t line) const {
    std::lock_guard lock(impl_->mu);
    UPROBE_CHECK(impl_->build_lines());
    UPROBE_CHECK(impl_->build_funcs());
    std::vector<bool> file_match(impl_->files.size(), false);
    std::set<uint32_t> code_files;
    for (auto& b : impl_->blocks) code_files.insert(b.file);
    bool any_file = false;
    for (uint32_t f : code_files)
        if (path_matches(impl_->files[f], file)) file_match[f] = any_file = true;
    if (!any_file) {
        std::vector<std::string> names;
        for (uint32_t f : code_files) {
            std::string base(basename_of(impl_->files[f]));
            if (std::find(names.begin(), names.end(), base) == names.end()) names.push_back(base);
        }
        auto near = closest(basename_of(file), names);
        std::string msg = "no source file '" + std::string(file) + "'";
        if (!near.empty()) {
            msg += "; did you mean ";
            for (size_t i = 0; i < near.size(); ++i) msg += (i ? ", " : "") + near[i];
            msg += "?";
        } else {
            msg += " in " + impl_->path;
        }
        return Error(msg);
    }
    std::vector<LineSite> out;
    std::optional<uint32_t> below, above;
    for (auto& b : impl_->blocks) {
        if (!file_match[b.file]) continue;
        if (b.line != line) {
            if (b.line < line && (!below || b.line > *below)) below = b.line;
            if (b.line > line && (!above || b.line < *above)) above = b.line;
            continue;
        }
        if (!out.empty() && out.back().vaddr == b.addr) continue;
        LineSite site;
        site.vaddr = b.addr;
        site.file = impl_->files[b.file];
        site.line = b.line;
        if (auto* f = impl_->innermost(b.addr)) {
            site.function = f->inst.name;
            site.inlined = f->inst.inlined;
        }
        out.push_back(std::move(site));
    }
    if (out.empty()) {
        std::string msg = "no code at " + std::string(file) + ":" + std::to_string(line);
        if (below || above) {
            msg += "; nearest lines with code: ";
            if (below) msg += std::to_string(*below);
            if (below && above) msg += ", ";
            if (above) msg += std::to_string(*above);
        }
        return Error(msg);
    }
    return out;
}

Result<DebugInfo::FunctionLines> DebugInfo::function_lines(std::string_view function) const {
    std::lock_guard lock(impl_->mu);
    UPROBE_CHECK(impl_->build_lines());
    UPROBE_CHECK(impl_->build_funcs());
    std::vector<const Impl::Func*> matches;
    for (auto& f : impl_->funcs)
        if (f.inst.name == function || f.inst.linkage_name == function) matches.push_back(&f);
    if (matches.empty()) {
        std::vector<std::string> names;
        for (auto& f : impl_->funcs) names.push_back(f.inst.name);
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        auto near = closest(function, names);
        std::string msg = "no function '" + std::string(function) + "' with line information";
        if (!near.empty()) {
            msg += "; did you mean ";
            for (size_t i = 0; i < near.size(); ++i) msg += (i ? ", " : "") + near[i];
            msg += "?";
        }
        return Error(msg);
    }
    // Prefer the out-of-line copy's declaration.
    std::stable_sort(matches.begin(), matches.end(),
                     [](auto* a, auto* b) { return !a->inst.inlined && b->inst.inlined; });
    FunctionLines out;
    out.name = matches.front()->inst.name;
    out.file = matches.front()->inst.decl_file;
    out.decl_line = matches.front()->inst.decl_line;
    auto inside = [](const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t a) {
        for (auto& [lo, hi] : ranges)
            if (a >= lo && a < hi) return true;
        return false;
    };
    for (auto* f : matches) {
        for (auto& [lo, hi] : f->inst.ranges) {
            auto it = std::lower_bound(impl_->blocks.begin(), impl_->blocks.end(), lo,
                                       [](const Impl::Block& b, uint64_t a) { return b.addr < a; });
            for (; it != impl_->blocks.end() && it->addr < hi; ++it) {
                if (inside(f->inlined_ranges, it->addr)) continue;
                if (!out.file.empty() && !same_file(impl_->files[it->file], out.file)) continue;
                LineSite site;
                site.vaddr = it->addr;
                site.file = impl_->files[it->file];
                site.line = it->line;
                site.function = f->inst.name;
                site.inlined = f->inst.inlined;
                out.lines.push_back(std::move(site));
            }
        }
    }
    std::sort(out.lines.begin(), out.lines.end(), [](const LineSite& a, const LineSite& b) {
        return a.line != b.line ? a.line < b.line : a.vaddr < b.vaddr;
    });
    out.lines.erase(std::unique(out.lines.begin(), out.lines.end(),
                                [](const LineSite& a, const LineSite& b) { return a.vaddr == b.vaddr && a.line == b.line; }),
                    out.lines.end());
    return out;
}

std::vector<DebugInfo::FunctionInstance> DebugInfo::function_instances(std::string_view name_or_glob) const {
    std::lock_guard lock(impl_->mu);
    std::vector<FunctionInstance> out;
    if (!impl_->build_funcs()) return out;
    for (auto& f : impl_->funcs) {
        if (glob_match(name_or_glob, f.inst.name) ||
            (!f.inst.linkage_name.empty() && glob_match(name_or_glob, f.inst.linkage_name)))
            out.push_back(f.inst);
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const FunctionInstance& a, const FunctionInstance& b) { return a.entry < b.entry; });
    return out;
}

std::vector<std::string> DebugInfo::function_names() const {
    std::lock_guard lock(impl_->mu);
    std::vector<std::string> out;
    if (!impl_->build_funcs()) return out;
    for (auto& f : impl_->funcs)
        if (!f.inst.name.empty()) out.push_back(f.inst.name);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::optional<uint64_t> DebugInfo::post_prologue(uint64_t function_entry) const {
    std::lock_guard lock(impl_->mu);
    if (!impl_->build_lines() || !impl_->build_funcs()) return std::nullopt;
    auto found = impl_->func_by_entry.find(function_entry);
    if (found == impl_->func_by_entry.end()) return std::nullopt;
    const Impl::Func* func = &impl_->funcs[found->second];
    uint64_t end = function_entry;
    for (auto& [lo, hi] : func->inst.ranges)
        if (function_entry >= lo && function_entry < hi) end = hi;
    // The first line-table row after the entry, within the entry's range.
    auto& rows = impl_->rows;
    auto [begin, stop] = impl_->unit_rows[func->unit];
    auto it = std::lower_bound(rows.begin() + ptrdiff_t(begin), rows.begin() + ptrdiff_t(stop), function_entry,
                               [](const Impl::Row& r, uint64_t a) { return r.addr < a; });
    std::optional<uint64_t> best;
    for (; it != rows.begin() + ptrdiff_t(stop) && it->addr < end; ++it) {
        if (it->addr > function_entry && !it->end) {
            best = it->addr;
            break;
        }
    }
    return best.value_or(function_entry);
}

const Type* DebugInfo::return_type(uint64_t function_entry) const {
    std::lock_guard lock(impl_->mu);
    if (!impl_->build_funcs()) return nullptr;
    auto found = impl_->func_by_entry.find(function_entry);
    if (found == impl_->func_by_entry.end()) return nullptr;
    Dwarf_Die subprogram;
    if (!dwarf_offdie(impl_->dbg, impl_->funcs[found->second].die_offset, &subprogram)) return nullptr;
    // type_of integrates DW_AT_specification/DW_AT_abstract_origin: a C++
    // method's definition, or an out-of-line copy of an inline function,
    // keeps its return type on the declaration.
    const Type* type = impl_->type_of(&subprogram);
    return type && type->kind != Type::Kind::Void ? type : nullptr;
}

// Type, location at `vaddr` (or constant value) of a variable DIE.
void DebugInfo::Impl::describe_variable(Dwarf_Die* child, uint64_t vaddr, Variable& v) {
    v.type = type_of(child);
    v.type_name = v.type ? v.type->display() : "?";
    Dwarf_Attribute attr;
    if (dwarf_attr(child, DW_AT_location, &attr)) {
        if (auto loc = location_at(&attr, vaddr)) v.location = std::move(*loc);
    }
    if (v.location.empty()) {
        Dwarf_Attribute cv;
        Dwarf_Sword s;
        Dwarf_Word u;
        if (dwarf_attr_integrate(child, DW_AT_const_value, &cv)) {
            unsigned form = dwarf_whatform(&cv);
            if (form == DW_FORM_udata || form == DW_FORM_data1 || form == DW_FORM_data2 ||
                form == DW_FORM_data4 || form == DW_FORM_data8) {
                if (dwarf_formudata(&cv, &u) == 0) {
                    v.has_const_value = true;
                    v.const_value = int64_t(u);
                    // Fixed-size data of a signed type is sign-extended.
                    if (v.type && v.type->is_signed() && v.type->byte_size > 0 && v.type->byte_size < 8 &&
                        form != DW_FORM_udata) {
                        unsigned bits = unsigned(v.type->byte_size * 8);
                        uint64_t sign = uint64_t(1) << (bits - 1);
                        u &= (sign << 1) - 1;
                        v.const_value = int64_t((u ^ sign) - sign);
                    }
                }
            } else if (dwarf_formsdata(&cv, &s) == 0) {
                v.has_const_value = true;
                v.const_value = s;
            }
        }
        v.optimized_out = !v.has_const_value;
    }
}

Result<std::vector<DebugInfo::Variable>> DebugInfo::variables_at(uint64_t vaddr, std::string_view function) const {
    std::lock_guard lock(impl_->mu);
    UPROBE_CHECK(impl_->build_funcs());
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(vaddr));
    const Impl::Func* outer = impl_->outer_function(vaddr);
    if (!outer) return Error(std::string("no function at ") + hex + " in " + impl_->path);
    Dwarf_Die cudie, subprogram;
    if (!dwarf_offdie(impl_->dbg, impl_->units[outer->unit].die_offset, &cudie) ||
        !dwarf_offdie(impl_->dbg, outer->die_offset, &subprogram))
        return impl_->corrupt(libdw_error());

    std::vector<Op> frame_base;
    Dwarf_Attribute fb;
    if (dwarf_attr(&subprogram, DW_AT_frame_base, &fb))
        frame_base = impl_->location_at(&fb, vaddr).value_or(std::vector<Op>{});

    Dwarf_Die* scopes = nullptr;
    int nscopes = dwarf_getscopes(&cudie, vaddr, &scopes);
    if (nscopes < 0) return impl_->corrupt("scopes at " + std::string(hex) + ": " + libdw_error());
    std::unique_ptr<Dwarf_Die, decltype(&std::free)> hold(scopes, &std::free);

    std::vector<Variable> out;
    std::set<std::string> seen;
    std::string scope_name;
    int first = 0, last = -1;
    for (int i = 0; i < nscopes; ++i) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine) {
            scope_name = attr_string(&scopes[i], DW_AT_name);
            last = i;
            break;
        }
    }
    if (last < 0) return Error(std::string("no function at ") + hex + " in " + impl_->path);
    // dwarf_getscopes continues past an inlined instance with the scopes of
    // its abstract definition; the function it was inlined into is found
    // by walking the DIE tree outward from the instance instead.
    Dwarf_Die* physical = nullptr;
    std::unique_ptr<Dwarf_Die, decltype(&std::free)> hold_physical(nullptr, &std::free);
    if (!function.empty() && scope_name != function && dwarf_tag(&scopes[last]) == DW_TAG_inlined_subroutine) {
        int nphysical = dwarf_getscopes_die(&scopes[last], &physical);
        hold_physical.reset(physical);
        // The named function further out; its own blocks start after the
        // function instance nested in it.
        for (int i = 1, inner_end = 1; i < nphysical; ++i) {
            int tag = dwarf_tag(&physical[i]);
            if (tag != DW_TAG_subprogram && tag != DW_TAG_inlined_subroutine) continue;
            if (attr_string(&physical[i], DW_AT_name) == function) {
                scope_name = std::string(function);
                scopes = physical;
                first = inner_end;
                last = i;
                break;
            }
            inner_end = i + 1;
        }
    }
    for (int i = first; i <= last; ++i) {
        Dwarf_Die child;
        int rc = dwarf_child(&scopes[i], &child);
        if (rc < 0) return impl_->corrupt(libdw_error());
        size_t guard = 0;
        for (; rc == 0 && guard < 100000; rc = dwarf_siblingof(&child, &child), ++guard) {
            int tag = dwarf_tag(&child);
            if (tag != DW_TAG_formal_parameter && tag != DW_TAG_variable) continue;
            if (attr_flag(&child, DW_AT_declaration)) continue;
            Variable v;
            v.name = attr_string(&child, DW_AT_name);
            if (v.name.empty() || !seen.insert(v.name).second) continue;
            v.is_parameter = tag == DW_TAG_formal_parameter;
            v.scope = scope_name;
            v.frame_base = frame_base;
            impl_->describe_variable(&child, vaddr, v);
            out.push_back(std::move(v));
        }
        if (rc < 0) return impl_->corrupt(libdw_error());
    }
    return out;
}

std::string_view DebugInfo::register_name(unsigned r) {
    static constexpr std::string_view names[] = {
        "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
        "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"};
    return r < std::size(names) ? names[r] : std::string_view();
}

namespace {

std::string reg_text(unsigned r) {
    std::string out = "reg" + std::to_string(r);
    auto name = DebugInfo::register_name(r);
    if (!name.empty()) out += " (" + std::string(name) + ")";
    return out;
}

std::string breg_text(unsigned r, int64_t offset) {
    std::string out = "DW_OP_breg" + std::to_string(r);
    auto name = DebugInfo::register_name(r);
    if (!name.empty()) out += " (" + std::string(name) + ")";
    return out + " " + std::to_string(offset);
}

const char* op_name(uint8_t atom) {
    switch (atom) {
    case DW_OP_addr: return "DW_OP_addr";
    case DW_OP_deref: return "DW_OP_deref";
    case DW_OP_const1u: return "DW_OP_const1u";
    case DW_OP_const1s: return "DW_OP_const1s";
    case DW_OP_const2u: return "DW_OP_const2u";
    case DW_OP_const2s: return "DW_OP_const2s";
    case DW_OP_const4u: return "DW_OP_const4u";
    case DW_OP_const4s: return "DW_OP_const4s";
    case DW_OP_const8u: return "DW_OP_const8u";
    case DW_OP_const8s: return "DW_OP_const8s";
    case DW_OP_constu: return "DW_OP_constu";
    case DW_OP_consts: return "DW_OP_consts";
    case DW_OP_dup: return "DW_OP_dup";
    case DW_OP_drop: return "DW_OP_drop";
    case DW_OP_over: return "DW_OP_over";
    case DW_OP_pick: return "DW_OP_pick";
    case DW_OP_swap: return "DW_OP_swap";
    case DW_OP_rot: return "DW_OP_rot";
    case DW_OP_abs: return "DW_OP_abs";
    case DW_OP_and: return "DW_OP_and";
    case DW_OP_div: return "DW_OP_div";
    case DW_OP_minus: return "DW_OP_minus";
    case DW_OP_mod: return "DW_OP_mod";
    case DW_OP_mul: return "DW_OP_mul";
    case DW_OP_neg: return "DW_OP_neg";
    case DW_OP_not: return "DW_OP_not";
    case DW_OP_or: return "DW_OP_or";
    case DW_OP_plus: return "DW_OP_plus";
    case DW_OP_plus_uconst: return "DW_OP_plus_uconst";
    case DW_OP_shl: return "DW_OP_shl";
    case DW_OP_shr: return "DW_OP_shr";
    case DW_OP_shra: return "DW_OP_shra";
    case DW_OP_xor: return "DW_OP_xor";
    case DW_OP_eq: return "DW_OP_eq";
    case DW_OP_ne: return "DW_OP_ne";
    case DW_OP_lt: return "DW_OP_lt";
    case DW_OP_gt: return "DW_OP_gt";
    case DW_OP_le: return "DW_OP_le";
    case DW_OP_ge: return "DW_OP_ge";
    case DW_OP_piece: return "DW_OP_piece";
    case DW_OP_bit_piece: return "DW_OP_bit_piece";
    case DW_OP_deref_size: return "DW_OP_deref_size";
    case DW_OP_call_frame_cfa: return "DW_OP_call_frame_cfa";
    case DW_OP_stack_value: return "DW_OP_stack_value";
    case DW_OP_implicit_value: return "DW_OP_implicit_value";
    case DW_OP_implicit_pointer: case DW_OP_GNU_implicit_pointer: return "DW_OP_implicit_pointer";
    case DW_OP_convert: case DW_OP_GNU_convert: return "DW_OP_convert";
    case DW_OP_regval_type: case DW_OP_GNU_regval_type: return "DW_OP_regval_type";
    case DW_OP_deref_type: case DW_OP_GNU_deref_type: return "DW_OP_deref_type";
    case DW_OP_const_type: case DW_OP_GNU_const_type: return "DW_OP_const_type";
    case DW_OP_GNU_parameter_ref: return "DW_OP_GNU_parameter_ref";
    case DW_OP_form_tls_address: return "DW_OP_form_tls_address";
    case DW_OP_GNU_push_tls_address: return "DW_OP_GNU_push_tls_address";
    default: return nullptr;
    }
}

bool has_operand(uint8_t atom) {
    switch (atom) {
    case DW_OP_const1u: case DW_OP_const1s: case DW_OP_const2u: case DW_OP_const2s:
    case DW_OP_const4u: case DW_OP_const4s: case DW_OP_const8u: case DW_OP_const8s:
    case DW_OP_constu: case DW_OP_pick: case DW_OP_plus_uconst: case DW_OP_piece:
    case DW_OP_deref_size: case DW_OP_implicit_pointer: case DW_OP_GNU_implicit_pointer:
    case DW_OP_GNU_parameter_ref:
        return true;
    default:
        return false;
    }
}

bool is_signed_operand(uint8_t atom) {
    return atom == DW_OP_consts || atom == DW_OP_const1s || atom == DW_OP_const2s ||
           atom == DW_OP_const4s || atom == DW_OP_const8s;
}

}  // namespace

std::string DebugInfo::describe(const std::vector<Op>& ops) {
    if (ops.empty()) return "optimized out";
    // A literal computed on the stack is a constant.
    if (ops.size() == 2 && ops[1].atom == DW_OP_stack_value) {
        const Op& v = ops[0];
        if (v.atom >= DW_OP_lit0 && v.atom <= DW_OP_lit31) return "const " + std::to_string(v.atom - DW_OP_lit0);
        if (is_signed_operand(v.atom)) return "const " + std::to_string(int64_t(v.number));
        if (v.atom >= DW_OP_const1u && v.atom <= DW_OP_constu) return "const " + std::to_string(v.number);
    }
    std::string out;
    for (const Op& op : ops) {
        if (!out.empty()) out += "; ";
        uint8_t a = op.atom;
        if (a >= DW_OP_reg0 && a <= DW_OP_reg31) out += reg_text(a - DW_OP_reg0);
        else if (a == DW_OP_regx) out += reg_text(unsigned(op.number));
        else if (a >= DW_OP_breg0 && a <= DW_OP_breg31) out += breg_text(a - DW_OP_breg0, int64_t(op.number));
        else if (a == DW_OP_bregx) out += breg_text(unsigned(op.number), int64_t(op.number2));
        else if (a >= DW_OP_lit0 && a <= DW_OP_lit31) out += "DW_OP_lit" + std::to_string(a - DW_OP_lit0);
        else if (a == DW_OP_fbreg) out += "DW_OP_fbreg " + std::to_string(int64_t(op.number));
        else if (a == DW_OP_consts || is_signed_operand(a)) out += std::string(op_name(a)) + " " + std::to_string(int64_t(op.number));
        else if (a == DW_OP_entry_value || a == DW_OP_GNU_entry_value) out += "entry_value(" + describe(op.nested) + ")";
        else if (a == DW_OP_addr) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(op.number));
            out += std::string("DW_OP_addr ") + buf;
        } else if (a == DW_OP_implicit_value) {
            out += "DW_OP_implicit_value " + std::to_string(op.block.size()) + " bytes";
        } else if (const char* name = op_name(a)) {
            out += name;
            if (has_operand(a)) out += " " + std::to_string(op.number);
        } else {
            char buf[32];
            std::snprintf(buf, sizeof buf, "DW_OP_0x%x", unsigned(a));
            out += buf;
        }
    }
    return out;
}

std::optional<std::pair<std::string, uint32_t>> DebugInfo::source_of(uint64_t vaddr) const {
    std::lock_guard lock(impl_->mu);
    if (!impl_->build_lines()) return std::nullopt;
    auto& spans = impl_->spans;
    auto it = std::upper_bound(spans.begin(), spans.end(), vaddr,
                               [](uint64_t a, const Impl::Span& s) { return a < s.lo; });
    if (it == spans.begin()) return std::nullopt;
    --it;
    if (vaddr >= it->hi) return std::nullopt;
    return std::make_pair(impl_->files[it->file], it->line);
}

std::vector<std::string> DebugInfo::source_files() const {
    std::lock_guard lock(impl_->mu);
    std::vector<std::string> out;
    if (!impl_->build_lines()) return out;
    std::set<uint32_t> ids;
    for (auto& b : impl_->blocks) ids.insert(b.file);
    for (uint32_t id : ids) out.push_back(impl_->files[id]);
    std::sort(out.begin(), out.end());
    return out;
}

std::optional<DebugInfo::Variable> DebugInfo::global_variable(uint64_t vaddr, std::string_view name) const {
    std::lock_guard lock(impl_->mu);
    if (!impl_->build_funcs()) return std::nullopt;
    // The unit of `vaddr` first (its statics), then every unit.
    std::vector<size_t> order;
    if (const Impl::Func* outer = impl_->outer_function(vaddr)) order.push_back(outer->unit);
    for (size_t i = 0; i < impl_->units.size(); ++i) order.push_back(i);
    for (size_t unit : order) {
        Dwarf_Die cudie, child;
        if (!dwarf_offdie(impl_->dbg, impl_->units[unit].die_offset, &cudie)) continue;
        int rc = dwarf_child(&cudie, &child);
        for (size_t guard = 0; rc == 0 && guard < 1000000; rc = dwarf_siblingof(&child, &child), ++guard) {
            if (dwarf_tag(&child) != DW_TAG_variable || attr_flag(&child, DW_AT_declaration)) continue;
            if (attr_string(&child, DW_AT_name) != name) continue;
            Variable v;
            v.name = std::string(name);
            impl_->describe_variable(&child, vaddr, v);
            if (v.optimized_out) continue;  // a declaration elsewhere, or gone
            return v;
        }
    }
    return std::nullopt;
}

}  // namespace uprobe::dwarf

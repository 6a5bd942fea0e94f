#include "elf/binary.hpp"

#include <elf.h>
#include <elfutils/debuginfod.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <lzma.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <thread>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "base/strings.hpp"
#include "base/unique_fd.hpp"

namespace uprobe::elf {

namespace {

// Maps a whole file read-only. MAP_SHARED, not MAP_PRIVATE: the kernel's
// uprobes put their int3 into every private mapping of a file that could be
// made executable, even a read-only one like this, so while perf or bpftrace
// probes the file a private mapping would show their breakpoints instead of
// the code (and a wrong CRC). Shared mappings are left alone (valid_vma() in
// kernel/events/uprobes.c). Returns MAP_FAILED on failure.
void* map_file(int fd, size_t size) { return ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0); }

// Decompressed MiniDebugInfo larger than this is treated as corrupt input
// (real ones are a few MiB), so a crafted xz bomb cannot exhaust memory.
constexpr size_t kMaxMiniDebugInfo = 256u << 20;

std::string machine_name(uint16_t machine) {
    switch (machine) {
    case EM_AARCH64: return "ARM aarch64";
    case EM_ARM: return "ARM";
    case EM_386: return "Intel 80386";
    case EM_X86_64: return "x86-64";
    case EM_RISCV: return "RISC-V";
    case EM_PPC: return "PowerPC";
    case EM_PPC64: return "PowerPC64";
    case EM_S390: return "IBM S/390";
    case EM_MIPS: return "MIPS";
    case EM_SPARCV9: return "SPARC v9";
    case EM_LOONGARCH: return "LoongArch";
    default: return "machine " + std::to_string(machine);
    }
}

template <class T>
bool read_at(std::span<const uint8_t> bytes, uint64_t offset, T& out) {
    if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return false;
    std::memcpy(&out, bytes.data() + offset, sizeof(T));
    return true;
}

// A NUL-terminated string inside `bytes` at `offset`; nullopt when the
// offset is out of range or the string runs off the end.
std::optional<std::string_view> cstring_at(std::span<const uint8_t> bytes, uint64_t offset) {
    if (offset >= bytes.size()) return std::nullopt;
    const char* start = reinterpret_cast<const char*>(bytes.data() + offset);
    const void* nul = std::memchr(start, 0, bytes.size() - offset);
    if (!nul) return std::nullopt;
    return std::string_view(start, static_cast<const char*>(nul) - start);
}

// Checks the ELF header of a whole file image: our one-line errors.
Result<void> validate_header(std::span<const uint8_t> file) {
    if (file.size() < SELFMAG || std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) return Error("not an ELF file");
    if (file.size() < 20) return Error("truncated ELF file");
    bool big_endian = file[EI_DATA] == ELFDATA2MSB;
    uint16_t machine = big_endian ? static_cast<uint16_t>(file[18] << 8 | file[19])
                                  : static_cast<uint16_t>(file[19] << 8 | file[18]);
    if (file[EI_CLASS] != ELFCLASS64 || file[EI_DATA] != ELFDATA2LSB || machine != EM_X86_64) {
        std::string what = machine_name(machine);
        if (machine == EM_X86_64) what = file[EI_CLASS] == ELFCLASS64 ? "big-endian x86-64" : "x32";
        return Error("ELF for another architecture (" + what + "); uprobe supports x86-64");
    }
    Elf64_Ehdr ehdr;
    if (!read_at(file, 0, ehdr)) return Error("truncated ELF file");
    if (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN) {
        std::string kind = ehdr.e_type == ET_REL    ? "relocatable object"
                           : ehdr.e_type == ET_CORE ? "core dump"
                                                    : "type " + std::to_string(ehdr.e_type);
        return Error("not an executable or shared object (" + kind + ")");
    }
    auto table_fits = [&](uint64_t offset, uint64_t count, uint64_t entsize) {
        if (count == 0) return true;
        return offset <= file.size() && (file.size() - offset) / entsize >= count;
    };
    if (ehdr.e_phnum && ehdr.e_phentsize != sizeof(Elf64_Phdr))
        return Error("corrupt ELF file (bad program header size)");
    if (ehdr.e_shoff && ehdr.e_shentsize != sizeof(Elf64_Shdr))
        return Error("corrupt ELF file (bad section header size)");
    if (!table_fits(ehdr.e_phoff, ehdr.e_phnum, sizeof(Elf64_Phdr))) return Error("truncated ELF file");
    if (ehdr.e_shoff && !table_fits(ehdr.e_shoff, std::max<uint64_t>(ehdr.e_shnum, 1), sizeof(Elf64_Shdr)))
        return Error("truncated ELF file");
    return {};
}

// Walks the notes of a SHT_NOTE section or PT_NOTE segment.
void for_each_note(std::span<const uint8_t> data, uint64_t align,
                   const std::function<void(uint32_t type, std::string_view name, std::span<const uint8_t> desc)>& visit) {
    align = align == 8 ? 8 : 4;
    auto round = [align](uint64_t n) { return (n + align - 1) / align * align; };
    uint64_t pos = 0;
    while (data.size() - pos >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr header;
        std::memcpy(&header, data.data() + pos, sizeof header);
        pos += sizeof header;
        // The descriptor starts at the next aligned offset after the name:
        // in 8-aligned notes (.note.gnu.property) that is not pos + round(namesz).
        uint64_t name_end = round(pos + header.n_namesz);
        if (name_end > data.size()) return;
        std::string_view name(reinterpret_cast<const char*>(data.data() + pos), header.n_namesz);
        while (!name.empty() && name.back() == '\0') name.remove_suffix(1);
        uint64_t desc_end = name_end + header.n_descsz;
        if (desc_end > data.size()) return;
        visit(header.n_type, name, data.subspan(name_end, header.n_descsz));
        pos = std::min<uint64_t>(round(desc_end), data.size());
    }
}

// The raw ELF structures, read straight from the mapped file with every
// access bounds-checked: faster than going through libelf's translation
// (we accept only native 64-bit little-endian files), and robust by
// construction on corrupt input.
struct Image {
    std::span<const uint8_t> file;
    Elf64_Ehdr ehdr{};
    std::vector<Elf64_Shdr> sections;
    std::vector<Elf64_Phdr> programs;
    std::span<const uint8_t> section_names;

    void load() {
        std::memcpy(&ehdr, file.data(), sizeof ehdr);
        for (uint64_t i = 0; i < ehdr.e_phnum; ++i) {
            Elf64_Phdr phdr;
            if (read_at(file, ehdr.e_phoff + i * sizeof phdr, phdr)) programs.push_back(phdr);
        }
        if (ehdr.e_shoff == 0) return;
        Elf64_Shdr first;
        if (!read_at(file, ehdr.e_shoff, first)) return;
        uint64_t count = ehdr.e_shnum ? ehdr.e_shnum : first.sh_size;  // extended numbering
        uint32_t names_index = ehdr.e_shstrndx == SHN_XINDEX ? first.sh_link : ehdr.e_shstrndx;
        for (uint64_t i = 0; i < count; ++i) {
            Elf64_Shdr shdr;
            if (!read_at(file, ehdr.e_shoff + i * sizeof shdr, shdr)) break;
            sections.push_back(shdr);
        }
        if (names_index < sections.size()) section_names = data(sections[names_index]).value_or(std::span<const uint8_t>{});
    }

    std::optional<std::span<const uint8_t>> data(const Elf64_Shdr& shdr) const {
        if (shdr.sh_type == SHT_NOBITS || shdr.sh_type == SHT_NULL) return std::nullopt;
        if (shdr.sh_offset > file.size() || file.size() - shdr.sh_offset < shdr.sh_size) return std::nullopt;
        return file.subspan(shdr.sh_offset, shdr.sh_size);
    }

    std::string_view name(const Elf64_Shdr& shdr) const {
        return cstring_at(section_names, shdr.sh_name).value_or("");
    }

    const Elf64_Shdr* find(std::string_view section) const {
        for (const auto& shdr : sections)
            if (shdr.sh_type != SHT_NULL && name(shdr) == section) return &shdr;
        return nullptr;
    }

    void for_each_note(const std::function<void(uint32_t, std::string_view, std::span<const uint8_t>)>& visit,
                       std::string_view only_section = {}) const {
        bool any_section = false;
        for (const auto& shdr : sections) {
            if (shdr.sh_type != SHT_NOTE) continue;
            any_section = true;
            if (!only_section.empty() && name(shdr) != only_section) continue;
            if (auto bytes = data(shdr)) elf::for_each_note(*bytes, shdr.sh_addralign, visit);
        }
        if (any_section || !only_section.empty()) return;
        for (const auto& phdr : programs) {
            if (phdr.p_type != PT_NOTE || phdr.p_offset > file.size() || file.size() - phdr.p_offset < phdr.p_filesz)
                continue;
            elf::for_each_note(file.subspan(phdr.p_offset, phdr.p_filesz), phdr.p_align, visit);
        }
    }

    // Calls visit(name, sym) for every symbol of every table of `type`.
    void for_each_symbol(uint32_t type, const std::function<void(std::string_view, const Elf64_Sym&)>& visit) const {
        for (const auto& shdr : sections) {
            if (shdr.sh_type != type || shdr.sh_link >= sections.size()) continue;
            auto table = data(shdr);
            auto strings = data(sections[shdr.sh_link]);
            if (!table || !strings) continue;
            for (uint64_t pos = 0; pos + sizeof(Elf64_Sym) <= table->size(); pos += sizeof(Elf64_Sym)) {
                Elf64_Sym sym;
                std::memcpy(&sym, table->data() + pos, sizeof sym);
                if (sym.st_shndx == SHN_UNDEF || sym.st_name == 0) continue;
                auto symbol_name = cstring_at(*strings, sym.st_name);
                if (!symbol_name || symbol_name->empty()) continue;
                visit(*symbol_name, sym);
            }
        }
    }

    std::string build_id() const {
        std::string hex;
        for_each_note([&](uint32_t type, std::string_view note_name, std::span<const uint8_t> desc) {
            if (!hex.empty() || type != NT_GNU_BUILD_ID || note_name != "GNU") return;
            static const char digits[] = "0123456789abcdef";
            for (uint8_t byte : desc) {
                hex += digits[byte >> 4];
                hex += digits[byte & 15];
            }
        });
        return hex;
    }
};

bool same_file(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

bool is_regular_file(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string debug_root() {
    const char* root = std::getenv("UPROBE_DEBUG_ROOT");
    return root && *root ? std::string(root) : std::string("/usr/lib/debug");
}

Result<std::vector<uint8_t>> xz_decompress(std::span<const uint8_t> input) {
    lzma_stream stream = LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&stream, UINT64_MAX, 0) != LZMA_OK) return Error("cannot start the xz decoder");
    std::vector<uint8_t> output(std::max<size_t>(input.size() * 4, 4096));
    stream.next_in = input.data();
    stream.avail_in = input.size();
    stream.next_out = output.data();
    stream.avail_out = output.size();
    lzma_ret ret = LZMA_OK;
    while (true) {
        ret = lzma_code(&stream, LZMA_FINISH);
        if (ret != LZMA_OK) break;
        if (stream.avail_out == 0) {
            if (output.size() >= kMaxMiniDebugInfo) break;
            size_t used = output.size();
            output.resize(std::min(output.size() * 2, kMaxMiniDebugInfo));
            stream.next_out = output.data() + used;
            stream.avail_out = output.size() - used;
        }
    }
    size_t produced = stream.total_out;
    lzma_end(&stream);
    if (ret != LZMA_STREAM_END) return Error("corrupt xz data in .gnu_debugdata");
    output.resize(produced);
    return output;
}

int debuginfod_progress(debuginfod_client* client, long done, long total) {
    const char* name = static_cast<const char*>(debuginfod_get_user_data(client));
    if (total > 0)
        std::fprintf(stderr, "\rdownloading debug info for %s: %ld/%ld KiB", name, done / 1024, total / 1024);
    else
        std::fprintf(stderr, "\rdownloading debug info for %s: %ld KiB", name, done / 1024);
    return 0;
}

std::string_view without_parameters(std::string_view demangled) {
    // Strip trailing qualifiers (" const", "&", "&&"), then the balanced
    // parameter list that ends the name.
    size_t end = demangled.rfind(')');
    if (end == std::string_view::npos) return demangled;
    int depth = 0;
    for (size_t i = end + 1; i-- > 0;) {
        if (demangled[i] == ')') ++depth;
        else if (demangled[i] == '(' && --depth == 0) {
            if (i == 0) return demangled;
            return demangled.substr(0, i);
        }
    }
    return demangled;
}

}  // namespace

struct Binary::Impl {
    std::string path;
    UniqueFd fd;
    std::vector<uint8_t> bytes;  // from_bytes: owns the image
    void* mapped = nullptr;      // open: the file, mapped by map_file()
    size_t mapped_size = 0;
    Elf* elf = nullptr;
    Image image;
    std::vector<Segment> segments;

    bool functions_loaded = false;
    std::vector<Symbol> functions;
    uint64_t max_function_size = 0;
    bool data_symbols_loaded = false;
    std::unordered_map<std::string, uint64_t> data_symbols;
    bool functions_by_name_built = false;
    std::unordered_multimap<std::string_view, const Symbol*> functions_by_name;  // views of functions' names
    bool markers_loaded = false;
    std::vector<SdtMarker> markers;
    std::optional<Result<std::optional<DebugFile>>> debug;
    bool debug_binary_opened = false;
    std::unique_ptr<Binary> debug_binary;

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    ~Impl() {
        if (elf) elf_end(elf);
        if (mapped) ::munmap(mapped, mapped_size);
    }

    Result<void> finish_open() {
        UPROBE_CHECK(validate_header(image.file));
        image.load();
        for (const auto& phdr : image.programs)
            if (phdr.p_type == PT_LOAD)
                segments.push_back({phdr.p_vaddr, phdr.p_memsz, phdr.p_offset, phdr.p_filesz, phdr.p_flags});
        return {};
    }
};

Binary::Binary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Binary::Binary(Binary&&) noexcept = default;
Binary& Binary::operator=(Binary&&) noexcept = default;
Binary::~Binary() = default;

Result<Binary> Binary::open(const std::string& path) {
    auto fail = [&](std::string_view why) { return Error(path + ": " + std::string(why)); };
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        int err = errno;
        if (err == ENOENT) return fail("no such file");
        if (err == EISDIR) return fail("is a directory");
        return errno_error(path, err);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return errno_error(path, errno);
    if (S_ISDIR(st.st_mode)) return fail("is a directory");
    if (!S_ISREG(st.st_mode)) return fail("not an ELF file");

    uint8_t header[sizeof(Elf64_Ehdr)];
    ssize_t got = ::pread(fd.get(), header, sizeof header, 0);
    if (got < 0) return errno_error(path, errno);
    // Validate what we read as if it were the whole file, then the table
    // extents against the real size.
    std::span<const uint8_t> head(header, static_cast<size_t>(got));
    if (auto r = validate_header(head); !r && static_cast<size_t>(got) == sizeof header &&
                                         r.error().message() == "truncated ELF file") {
        // The header is whole; tables lie beyond it and are checked below.
    } else if (!r) {
        return fail(r.error().message());
    }

    auto impl = std::make_unique<Impl>();
    impl->path = path;
    static const bool version_ok = elf_version(EV_CURRENT) != EV_NONE;
    if (!version_ok) return fail("libelf is unusable");
    impl->elf = elf_begin(fd.get(), ELF_C_READ_MMAP, nullptr);
    if (!impl->elf) return fail(std::string("cannot read: ") + elf_errmsg(-1));
    size_t size = 0;
    if (!elf_rawfile(impl->elf, &size)) return fail("truncated ELF file");
    // Our own view of the bytes rather than libelf's private mapping (see
    // map_file); libelf's handle stays for libdw.
    void* raw = map_file(fd.get(), size);
    if (raw == MAP_FAILED) return fail(errno_text(errno));
    impl->mapped = raw;
    impl->mapped_size = size;
    impl->image.file = std::span<const uint8_t>(static_cast<const uint8_t*>(raw), size);
    impl->fd = std::move(fd);
    if (auto r = impl->finish_open(); !r) return fail(r.error().message());
    return Binary(std::move(impl));
}

Result<Binary> Binary::from_bytes(std::vector<uint8_t> bytes, std::string name) {
    auto impl = std::make_unique<Impl>();
    impl->path = std::move(name);
    impl->bytes = std::move(bytes);
    impl->image.file = impl->bytes;
    if (auto r = validate_header(impl->image.file); !r) return r.error().context(impl->path);
    static const bool version_ok = elf_version(EV_CURRENT) != EV_NONE;
    if (!version_ok) return Error(impl->path + ": libelf is unusable");
    impl->elf = elf_memory(reinterpret_cast<char*>(impl->bytes.data()), impl->bytes.size());
    if (auto r = impl->finish_open(); !r) return r.error().context(impl->path);
    return Binary(std::move(impl));
}

const std::string& Binary::path() const { return impl_->path; }
bool Binary::is_pie_or_shared() const { return impl_->image.ehdr.e_type == ET_DYN; }
uint16_t Binary::type() const { return impl_->image.ehdr.e_type; }
Elf* Binary::elf() const { return impl_->elf; }
int Binary::fd() const { return impl_->fd.get(); }
const std::vector<Binary::Segment>& Binary::load_segments() const { return impl_->segments; }

std::optional<uint64_t> Binary::vaddr_to_offset(uint64_t vaddr) const {
    for (const auto& s : impl_->segments)
        if (vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz) return s.offset + (vaddr - s.vaddr);
    return std::nullopt;
}

std::optional<uint64_t> Binary::offset_to_vaddr(uint64_t offset) const {
    for (const auto& s : impl_->segments)
        if (offset >= s.offset && offset - s.offset < s.filesz) return s.vaddr + (offset - s.offset);
    return std::nullopt;
}

bool Binary::is_executable(uint64_t vaddr) const {
    for (const auto& s : impl_->segments)
        if ((s.flags & PF_X) && vaddr >= s.vaddr && vaddr - s.vaddr < s.memsz) return true;
    return false;
}

Result<std::span<const uint8_t>> Binary::code(uint64_t vaddr, size_t length) const {
    for (const auto& s : impl_->segments) {
        if (vaddr < s.vaddr || vaddr - s.vaddr >= s.filesz) continue;
        uint64_t offset = s.offset + (vaddr - s.vaddr);
        uint64_t available = s.filesz - (vaddr - s.vaddr);
        const auto& file = impl_->image.file;
        if (offset >= file.size()) break;
        available = std::min<uint64_t>(available, file.size() - offset);
        return file.subspan(offset, std::min<uint64_t>(available, length));
    }
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(vaddr));
    return Error(impl_->path + ": address " + buffer + " is not in the file's loaded contents");
}

std::string Binary::build_id() const { return impl_->image.build_id(); }

bool Binary::marks_shadow_stack() const {
    // NT_GNU_PROPERTY_TYPE_0: an array of {u32 type, u32 size, data padded
    // to 8 bytes} (x86-64 psABI, "Program Property").
    constexpr uint32_t kPropertyNote = 5;                 // NT_GNU_PROPERTY_TYPE_0
    constexpr uint32_t kX86Feature1And = 0xc0000002;      // GNU_PROPERTY_X86_FEATURE_1_AND
    constexpr uint32_t kShadowStack = 2;                  // GNU_PROPERTY_X86_FEATURE_1_SHSTK
    bool marked = false;
    impl_->image.for_each_note([&](uint32_t type, std::string_view name, std::span<const uint8_t> desc) {
        if (type != kPropertyNote || name != "GNU") return;
        for (size_t pos = 0; desc.size() - pos >= 8;) {
            uint32_t property = 0, size = 0;
            std::memcpy(&property, desc.data() + pos, 4);
            std::memcpy(&size, desc.data() + pos + 4, 4);
            pos += 8;
            if (size > desc.size() - pos) return;
            if (property == kX86Feature1And && size >= 4) {
                uint32_t features = 0;
                std::memcpy(&features, desc.data() + pos, 4);
                marked |= (features & kShadowStack) != 0;
            }
            pos += std::min<size_t>((size + 7) / 8 * 8, desc.size() - pos);
        }
    });
    return marked;
}

std::optional<Binary::DebugLink> Binary::debuglink() const {
    const Elf64_Shdr* shdr = impl_->image.find(".gnu_debuglink");
    if (!shdr) return std::nullopt;
    auto bytes = impl_->image.data(*shdr);
    if (!bytes) return std::nullopt;
    auto file = cstring_at(*bytes, 0);
    if (!file || file->empty()) return std::nullopt;
    uint64_t crc_offset = (file->size() + 1 + 3) / 4 * 4;
    uint32_t crc = 0;
    if (!read_at(*bytes, crc_offset, crc)) return std::nullopt;
    return DebugLink{std::string(*file), crc};
}

const std::vector<Binary::Symbol>& Binary::functions() const {
    Impl& impl = *impl_;
    if (impl.functions_loaded) return impl.functions;
    impl.functions_loaded = true;
    std::vector<Symbol>& out = impl.functions;
    auto collect = [&](const Image& image, bool from_debug) {
        auto visit = [&](std::string_view name, const Elf64_Sym& sym) {
            unsigned kind = ELF64_ST_TYPE(sym.st_info);
            if (kind != STT_FUNC && kind != STT_GNU_IFUNC) return;
            // .symver aliases appear in .symtab as "name@@VERSION".
            if (auto at = name.find('@'); at != std::string_view::npos && at > 0) name = name.substr(0, at);
            Symbol s;
            s.name = std::string(name);
            s.vaddr = sym.st_value;
            s.size = sym.st_size;
            s.local = ELF64_ST_BIND(sym.st_info) == STB_LOCAL;
            s.ifunc = kind == STT_GNU_IFUNC;
            s.from_debug_file = from_debug;
            out.push_back(std::move(s));
        };
        image.for_each_symbol(SHT_SYMTAB, visit);
        image.for_each_symbol(SHT_DYNSYM, visit);
    };
    collect(impl.image, false);
    if (const Binary* debug = debug_binary(); debug && debug != this) collect(debug->impl_->image, true);
    if (const Elf64_Shdr* shdr = impl.image.find(".gnu_debugdata")) {
        if (auto compressed = impl.image.data(*shdr)) {
            if (auto bytes = xz_decompress(*compressed)) {
                if (auto mini = from_bytes(std::move(bytes).value(), impl.path + "[.gnu_debugdata]"))
                    collect(mini->impl_->image, true);
            }
        }
    }
    std::sort(out.begin(), out.end(), [](const Symbol& a, const Symbol& b) {
        if (a.vaddr != b.vaddr) return a.vaddr < b.vaddr;
        if (a.name != b.name) return a.name < b.name;
        return a.from_debug_file < b.from_debug_file;
    });
    size_t kept = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        if (kept > 0 && out[kept - 1].vaddr == out[i].vaddr && out[kept - 1].name == out[i].name) {
            out[kept - 1].size = std::max(out[kept - 1].size, out[i].size);
            continue;
        }
        if (kept != i) out[kept] = std::move(out[i]);
        ++kept;
    }
    out.resize(kept);
    // Demangling is most of the cost of listing a big C++ library (libjvm:
    // ~30 of ~55 ms) and independent per symbol: spread it over the cores.
    auto demangle_range = [&out](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) out[i].demangled = demangle(out[i].name);
    };
    size_t workers = out.size() > 8192 ? std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8) : 1;
    size_t chunk = (out.size() + workers - 1) / workers;
    std::vector<std::thread> helpers;
    for (size_t w = 1; w < workers; ++w)
        helpers.emplace_back(demangle_range, std::min(out.size(), w * chunk), std::min(out.size(), (w + 1) * chunk));
    demangle_range(0, std::min(out.size(), chunk));
    for (auto& t : helpers) t.join();
    for (const auto& sym : out) impl.max_function_size = std::max(impl.max_function_size, sym.size);
    return out;
}

std::vector<const Binary::Symbol*> Binary::find_functions(std::string_view pattern) const {
    std::vector<const Symbol*> found;
    bool glob = has_glob(pattern);
    auto matches = [&](std::string_view text) { return glob ? glob_match(pattern, text) : pattern == text; };
    for (const auto& s : functions()) {
        if (matches(s.name) || (s.demangled != s.name && (matches(s.demangled) || matches(without_parameters(s.demangled)))))
            found.push_back(&s);
    }
    return found;
}

std::vector<const Binary::Symbol*> Binary::functions_named(std::string_view name) const {
    Impl& impl = *impl_;
    if (!impl.functions_by_name_built) {
        impl.functions_by_name_built = true;
        for (const auto& s : functions()) impl.functions_by_name.emplace(s.name, &s);
    }
    std::vector<const Symbol*> found;
    auto [from, to] = impl.functions_by_name.equal_range(name);
    for (auto it = from; it != to; ++it) found.push_back(it->second);
    std::sort(found.begin(), found.end(), [](const Symbol* a, const Symbol* b) { return a->vaddr < b->vaddr; });
    return found;
}

const Binary::Symbol* Binary::function_containing(uint64_t vaddr) const {
    const auto& all = functions();
    auto it = std::upper_bound(all.begin(), all.end(), vaddr,
                               [](uint64_t v, const Symbol& s) { return v < s.vaddr; });
    const Symbol* best = nullptr;
    while (it != all.begin()) {
        const Symbol& s = *--it;
        if (vaddr - s.vaddr > impl_->max_function_size) break;
        if (best && s.vaddr < best->vaddr) break;
        bool inside = s.size ? vaddr - s.vaddr < s.size : vaddr == s.vaddr;
        if (inside && (!best || (best->local && !s.local))) best = &s;
    }
    return best;
}

std::optional<uint64_t> Binary::data_symbol(std::string_view name) const {
    Impl& impl = *impl_;
    if (!impl.data_symbols_loaded) {
        impl.data_symbols_loaded = true;
        auto collect = [&](const Image& image) {
            auto visit = [&](std::string_view symbol, const Elf64_Sym& sym) {
                unsigned kind = ELF64_ST_TYPE(sym.st_info);
                if (kind == STT_SECTION || kind == STT_FILE || kind == STT_TLS) return;
                impl.data_symbols.emplace(std::string(symbol), sym.st_value);
            };
            image.for_each_symbol(SHT_SYMTAB, visit);
            image.for_each_symbol(SHT_DYNSYM, visit);
        };
        collect(impl.image);
        if (const Binary* debug = debug_binary(); debug && debug != this) collect(debug->impl_->image);
    }
    auto it = impl.data_symbols.find(std::string(name));
    if (it == impl.data_symbols.end()) return std::nullopt;
    return it->second;
}

const std::vector<SdtMarker>& Binary::sdt_markers() const {
    Impl& impl = *impl_;
    if (impl.markers_loaded) return impl.markers;
    impl.markers_loaded = true;
    const Elf64_Shdr* base_section = impl.image.find(".stapsdt.base");
    impl.image.for_each_note(
        [&](uint32_t type, std::string_view owner, std::span<const uint8_t> desc) {
            if (type != 3 || owner != "stapsdt") return;
            uint64_t pc = 0, base = 0, semaphore = 0;
            if (!read_at(desc, 0, pc) || !read_at(desc, 8, base) || !read_at(desc, 16, semaphore)) return;
            auto provider = cstring_at(desc, 24);
            if (!provider) return;
            auto name = cstring_at(desc, 24 + provider->size() + 1);
            if (!name) return;
            auto args = cstring_at(desc, 24 + provider->size() + 1 + name->size() + 1);
            SdtMarker marker;
            marker.provider = std::string(*provider);
            marker.name = std::string(*name);
            marker.args_text = std::string(args.value_or(""));
            uint64_t adjust = base_section && base ? base_section->sh_addr - base : 0;
            marker.vaddr = pc + adjust;
            marker.semaphore_vaddr = semaphore ? semaphore + adjust : 0;
            if (auto parsed = parse_sdt_args(marker.args_text)) marker.args = std::move(parsed).value();
            impl.markers.push_back(std::move(marker));
        },
        ".note.stapsdt");
    return impl.markers;
}

Result<std::optional<Binary::DebugFile>> Binary::debug_file() const {
    Impl& impl = *impl_;
    if (impl.debug) return *impl.debug;
    auto finish = [&](Result<std::optional<DebugFile>> r) -> Result<std::optional<DebugFile>> {
        impl.debug = r;
        return r;
    };
    if (const Elf64_Shdr* info = impl.image.find(".debug_info"); info && info->sh_type != SHT_NOBITS && info->sh_size)
        return finish(std::optional<DebugFile>(DebugFile{impl.path, "itself"}));

    std::optional<Error> mismatch;
    std::string own_id = build_id();
    // A candidate is used when it is an ELF file whose build-id (when both
    // have one) and CRC (when `crc` is given) match.
    auto check = [&](const std::string& candidate, std::optional<uint32_t> crc) -> bool {
        if (!is_regular_file(candidate) || same_file(candidate, impl.path)) return false;
        auto refuse = [&](std::string_view why) {
            if (!mismatch)
                mismatch = Error("debug file " + candidate + " does not match " + impl.path + " (" + std::string(why) + ")");
            return false;
        };
        if (crc) {
            auto actual = file_crc32(candidate);
            if (!actual) return false;
            if (*actual != *crc) return refuse("CRC mismatch");
        }
        auto opened = open(candidate);
        if (!opened) return false;
        std::string their_id = opened->build_id();
        if (!own_id.empty() && !their_id.empty() && own_id != their_id) return refuse("build-id mismatch");
        return true;
    };

    std::string root = debug_root();
    if (own_id.size() > 2) {
        std::string candidate = root + "/.build-id/" + own_id.substr(0, 2) + "/" + own_id.substr(2) + ".debug";
        if (check(candidate, std::nullopt)) return finish(std::optional<DebugFile>(DebugFile{candidate, "build-id"}));
    }
    if (auto link = debuglink(); link && impl.fd.valid()) {
        std::string dir;
        if (char* real = ::realpath(impl.path.c_str(), nullptr)) {
            dir = real;
            std::free(real);
        } else {
            dir = impl.path;
        }
        dir = dir.substr(0, dir.rfind('/'));  // "" for files in /
        for (const std::string& candidate :
             {dir + "/" + link->file, dir + "/.debug/" + link->file, root + dir + "/" + link->file}) {
            if (check(candidate, link->crc)) return finish(std::optional<DebugFile>(DebugFile{candidate, "debuglink"}));
        }
    }
    const char* urls = std::getenv("DEBUGINFOD_URLS");
    if (urls && *urls && !own_id.empty() && own_id.size() % 2 == 0) {
        std::vector<unsigned char> id;
        for (size_t i = 0; i < own_id.size(); i += 2)
            id.push_back(static_cast<unsigned char>(std::stoul(own_id.substr(i, 2), nullptr, 16)));
        if (debuginfod_client* client = debuginfod_begin()) {
            bool tty = ::isatty(STDERR_FILENO);
            if (tty) {
                debuginfod_set_user_data(client, const_cast<char*>(impl.path.c_str()));
                debuginfod_set_progressfn(client, debuginfod_progress);
            }
            char* found = nullptr;
            int found_fd = debuginfod_find_debuginfo(client, id.data(), static_cast<int>(id.size()), &found);
            if (tty) std::fprintf(stderr, "\r\033[K");
            debuginfod_end(client);
            if (found_fd >= 0) {
                ::close(found_fd);
                std::string found_path = found ? found : "";
                std::free(found);
                if (!found_path.empty())
                    return finish(std::optional<DebugFile>(DebugFile{found_path, "debuginfod"}));
            }
            std::free(found);
        }
    }
    if (mismatch) return finish(*mismatch);
    return finish(std::optional<DebugFile>());
}

const Binary* Binary::debug_binary() const {
    Impl& impl = *impl_;
    // Not cached as a pointer: for "itself" that would dangle after a move.
    if (auto found = debug_file(); found && *found && (*found)->found_by == "itself") return this;
    if (impl.debug_binary_opened) return impl.debug_binary.get();
    impl.debug_binary_opened = true;
    auto found = debug_file();
    if (!found || !*found) return nullptr;
    if (auto opened = open((*found)->path)) impl.debug_binary = std::make_unique<Binary>(std::move(opened).value());
    return impl.debug_binary.get();
}

Result<uint32_t> file_crc32(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error(path, errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return errno_error(path, errno);
    uLong crc = crc32(0L, Z_NULL, 0);
    if (st.st_size == 0) return static_cast<uint32_t>(crc);
    void* map = map_file(fd.get(), static_cast<size_t>(st.st_size));
    if (map == MAP_FAILED) return errno_error(path, errno);
    const auto* bytes = static_cast<const Bytef*>(map);
    for (off_t done = 0; done < st.st_size;) {
        uInt chunk = static_cast<uInt>(std::min<off_t>(st.st_size - done, 1 << 30));
        crc = crc32(crc, bytes + done, chunk);
        done += chunk;
    }
    ::munmap(map, static_cast<size_t>(st.st_size));
    return static_cast<uint32_t>(crc);
}

}  // namespace uprobe::elf

// libuprobe-agent.so: the in-process half of the inline engine. It owns no
// policy: the tracer resolves probes, writes trampolines and patches code
// (src/engine/inline/); the agent only runs at a hit, from a trampoline, and
// turns the thread's registers into a ring record (or a counter bump).
//
// Rules for everything reachable from uprobe_agent_hit: it runs in the
// middle of arbitrary program code, possibly in a signal handler, so no
// malloc, no locks, no libc calls (they could touch vector registers, which
// the trampoline does not save), no errno; the only system calls are a
// thread's first-hit gettid and process_vm_readv for memory an argument
// dereferences (a bad pointer must not crash the program). The build uses
// -mgeneral-regs-only and -fno-tree-loop-distribute-patterns so the
// compiler emits no memcpy/memset calls and no SSE code.
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <ucontext.h>

#include "agent/abi.hpp"
#include "probe/fetch_eval.hpp"
#include "probe/read_window.hpp"

#define AGENT_EXPORT extern "C" __attribute__((visibility("default")))

// From <stdlib.h>, which libstdc++ wraps with long double overloads that
// clang refuses under -mgeneral-regs-only.
extern "C" {
char* getenv(const char* name) noexcept;
int unsetenv(const char* name) noexcept;
long strtol(const char* text, char** end, int base) noexcept;
unsigned long long strtoull(const char* text, char** end, int base) noexcept;
}

// The region's address in this process, for the SIGTRAP handler (the
// trampolines carry it as an immediate). Set by the agent at launch, by the
// tracer through ptrace at attach.
extern "C" {
__attribute__((visibility("default"))) uint64_t uprobe_agent_region = 0;
// See abi.hpp, ShadowStack.
__attribute__((visibility("default"))) uint64_t uprobe_agent_shadow_stacks[uprobe::agent::kShadowStacks];
}

namespace uprobe::agent {
namespace {

__thread RingControl* t_ring __attribute__((tls_model("initial-exec")));
__thread Header* t_ring_region __attribute__((tls_model("initial-exec")));  // a later session has another region
__thread uint32_t t_tid __attribute__((tls_model("initial-exec")));
__thread uint32_t t_busy __attribute__((tls_model("initial-exec")));
__thread ShadowStack* t_shadow __attribute__((tls_model("initial-exec")));
// Frames of instruction-mode return probes (kSiteExitFramed): the entry's
// time and values, found again at the ret by the stack pointer. Nothing of
// them is on the program's stack, so the tracer never needs them.
__thread ShadowStack* t_exit_frames __attribute__((tls_model("initial-exec")));
uint64_t g_exit_frame_stacks[kShadowStacks];  // for reuse, as the shadow stacks' registry
__thread uint32_t t_claim_pause __attribute__((tls_model("initial-exec")));  // hits before claiming again
__thread uint64_t t_entry_seq __attribute__((tls_model("initial-exec")));    // the last kRecordEntry's number

uint32_t g_pid;
uint32_t g_quiet;  // a forked child of a process whose children are not followed
struct sigaction g_previous_sigtrap;  // the program's handler, chained

long raw_syscall(long number, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) {
    long result;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

template <class T>
T load(const T* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
template <class T>
void add(T* p, T v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

// Reads our own memory without faulting: process_vm_readv(2) on ourselves
// returns how much it could read instead of raising SIGSEGV.
size_t safe_read(uint64_t address, void* out, size_t size) {
    iovec local{out, size};
    iovec remote{reinterpret_cast<void*>(address), size};
    long n = raw_syscall(SYS_process_vm_readv, g_pid, reinterpret_cast<long>(&local), 1,
                         reinterpret_cast<long>(&remote), 1, 0);
    return n < 0 ? 0 : static_cast<size_t>(n);
}

// The memory a hit's arguments read, a 64-byte line at a time.
struct SafeRead {
    size_t operator()(uint64_t address, void* out, size_t size) const { return safe_read(address, out, size); }
};
using ReadWindow = probe::ReadWindow<SafeRead>;

// The calling thread's ring: a free one, else one whose owner is gone
// (a process that starts threads all along has more of them over its life
// than there are rings). System calls here: once per thread, or per
// claim that finds no ring free (see ring_for).
RingControl* claim_ring(Header* h) {
    if (!t_tid) t_tid = static_cast<uint32_t>(raw_syscall(SYS_gettid));
    if (h->ring_size == 0 || (h->ring_size & (h->ring_size - 1))) return nullptr;  // positions are masked
    const uint64_t mine = t_tid | uint64_t{g_pid} << 32;
    for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t i = 0; i < h->ring_count; ++i) {
            RingControl* r = ring_of(h, i);
            uint64_t owner = load(&r->owner);
            if (owner != 0) {
                if (pass == 0) continue;
                const long gone = raw_syscall(SYS_tgkill, static_cast<long>(owner >> 32),
                                              static_cast<long>(owner & 0xffffffff), 0);
                if (gone != -ESRCH) continue;
            }
            if (__atomic_compare_exchange_n(&r->owner, &owner, mine, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                uint32_t used = load(&h->rings_used);
                while (used < i + 1 &&
                       !__atomic_compare_exchange_n(&h->rings_used, &used, i + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                }
                return r;
            }
        }
    }
    return nullptr;
}

// The calling thread's ring in region `h`, claimed on its first record.
// A thread that found none (more than ring_count threads alive) tries
// again only every 1024 hits: a claim that fails asks every owner whether
// it lives, and its records are dropped (and counted) meanwhile.
[[gnu::noinline]] RingControl* ring_claimed_for(Header* h) {
    if (t_ring_region == h && t_claim_pause && t_claim_pause--) return t_ring;
    t_ring = claim_ring(h);
    t_ring_region = h;
    t_claim_pause = t_ring ? 0 : 1024;
    return t_ring;
}
[[gnu::always_inline]] inline RingControl* ring_for(Header* h) {
    RingControl* r = t_ring;
    return r && t_ring_region == h ? r : ring_claimed_for(h);
}

uint64_t align8(uint64_t v) { return (v + 7) & ~uint64_t{7}; }

// Writes one record of `kind` for `site`; false when the ring had no room.
// A return (`entry`, its frame) takes its entry time and @entry values
// from the frame, or names the kRecordEntry that holds them; a
// kRecordEntry (sequence number `seq`) holds the @entry values alone.
// A template on `kind`, inlined into each caller: each copy keeps only
// its kind's branches, and the hot paths make no call to write a record.
template <RecordKind kind>
[[gnu::always_inline]] inline bool write_record(Header* h, RingControl* r, const Site& site, uint32_t index,
                                                const uint64_t* frame, uint64_t tsc, const ShadowFrame* entry,
                                                uint64_t seq, uint64_t& tail_seen) {
    const probe::FetchProgram* programs = programs_of(h) + site.first_program;
    const uint32_t args = site.arg_count > kMaxArgs ? kMaxArgs : site.arg_count;
    const bool registers = kind != kRecordEntry && (site.flags & kSiteRegisters);
    const bool entry_record = site.flags & kSiteEntryRecord;
    uint64_t need = sizeof(RecordHeader) + (registers ? kFrameRegisters * 8 : 0);
    if (kind == kRecordReturn) need += sizeof(uint64_t) * (entry_record ? 2 : 1);
    if (kind == kRecordEntry) need += sizeof(uint64_t);
    for (uint32_t a = 0; a < args; ++a) {
        if (kind == kRecordEntry && !programs[a].at_entry) continue;
        need += sizeof(ArgHeader);
        if (programs[a].format == probe::FetchFormat::String) need += align8(site.string_max);
    }
    const uint64_t size = h->ring_size;
    uint8_t* data = ring_data(r);
    uint64_t head = r->head;
    const uint64_t tail = tail_seen = load(&r->tail);
    uint64_t pos = head & (size - 1);
    if (pos + need > size) {
        uint64_t skip = size - pos;
        if (head + skip + need - tail > size) return false;
        auto* s = reinterpret_cast<RecordHeader*>(data + pos);
        s->size = static_cast<uint32_t>(skip);
        s->kind = kRecordSkip;
        head += skip;
        pos = 0;
    }
    if (head + need - tail > size) return false;
    auto* rec = reinterpret_cast<RecordHeader*>(data + pos);
    uint8_t* at = data + pos + sizeof(RecordHeader);
    if (kind == kRecordReturn) {
        *reinterpret_cast<uint64_t*>(at) = entry->tsc;
        at += sizeof(uint64_t);
        if (entry_record) {
            *reinterpret_cast<uint64_t*>(at) = entry->entry[0];
            at += sizeof(uint64_t);
        }
    }
    if (kind == kRecordEntry) {
        *reinterpret_cast<uint64_t*>(at) = seq;
        at += sizeof(uint64_t);
    }
    if (registers) {
        for (uint32_t i = 0; i < kFrameRegisters; ++i) reinterpret_cast<uint64_t*>(at)[i] = frame[i];
        at += kFrameRegisters * 8;
    }
    const uint8_t* xmm = reinterpret_cast<const uint8_t*>(frame) + kFrameXmmOffset;
    ReadWindow window{SafeRead{}};
    uint32_t entry_values = 0, written = 0;
    for (uint32_t a = 0; a < args; ++a) {
        const probe::FetchProgram& p = programs[a];
        if (kind == kRecordEntry && !p.at_entry) continue;
        auto* arg = reinterpret_cast<ArgHeader*>(at);
        at += sizeof(ArgHeader);
        ++written;
        arg->length = 0;
        if (p.at_entry && kind != kRecordEntry) {
            const bool kept = kind == kRecordReturn && !entry_record && entry_values < kMaxEntryValues &&
                              p.format != probe::FetchFormat::String;
            arg->kind = kept ? kArgNumber : kArgNeedsTracer;
            arg->value = kept ? entry->entry[entry_values] : 0;
            ++entry_values;
            continue;
        }
        // The usual argument, a whole register: no steps to run.
        const probe::FetchStep& first = p.steps[0];
        if (p.step_count == 1 && first.op == probe::FetchOp::LoadRegister && first.size == 8 &&
            first.slot < kFrameRegisters && probe::is_number(p.format)) {
            arg->kind = kArgNumber;
            arg->value = frame[first.slot];
            continue;
        }
        switch (p.format) {
        case probe::FetchFormat::Comm:
        case probe::FetchFormat::Pid:
        case probe::FetchFormat::Tid:
        case probe::FetchFormat::Duration:
            arg->kind = kArgNeedsTracer;
            arg->value = 0;
            continue;
        default: break;
        }
        auto result = probe::run_steps(p, frame, p.needs_fpregs ? xmm : nullptr,
                                       [&window](uint64_t address, void* out, size_t n) { return window.read(address, out, n); });
        arg->value = result.acc;
        if (result.status == probe::StepsStatus::BadAddress) {
            arg->kind = kArgBadAddress;
            continue;
        }
        if (result.status != probe::StepsStatus::Ok) {
            arg->kind = kArgNeedsTracer;
            continue;
        }
        if (p.format != probe::FetchFormat::String) {
            arg->kind = kArgNumber;
            continue;
        }
        // A string: read up to string_max bytes, one page at a time, and
        // stop at the terminating NUL.
        uint32_t got = 0;
        bool ended = false;
        uint64_t address = result.acc;
        while (got < site.string_max && !ended) {
            uint64_t room = 4096 - ((address + got) & 4095);
            uint64_t want = site.string_max - got < room ? site.string_max - got : room;
            size_t n = safe_read(address + got, at + got, want);
            for (size_t i = 0; i < n; ++i)
                if (at[got + i] == 0) {
                    n = i;
                    ended = true;
                    break;
                }
            got += static_cast<uint32_t>(n);
            if (n < want && !ended) break;
        }
        if (got == 0 && !ended && site.string_max > 0) {
            arg->kind = kArgBadAddress;
            continue;
        }
        arg->kind = ended ? kArgString : kArgTruncatedString;
        arg->length = got;
        at += align8(got);
    }
    rec->kind = kind;
    rec->site = index;
    rec->tid = t_tid;
    rec->pid = g_pid;
    rec->arg_count = written;
    rec->tsc = tsc;
    uint64_t used = static_cast<uint64_t>(at - reinterpret_cast<uint8_t*>(rec));
    rec->size = static_cast<uint32_t>(used);
    __atomic_store_n(&r->head, head + used, __ATOMIC_RELEASE);
    return true;
}

// --no-drop and a full ring: wait (not spinning: the tracer may need this
// CPU) until the tracer has consumed something since the write that found
// no room read the ring's tail (`seen`: the tracer may have emptied the
// ring in between, and then nothing more comes). A tracer that stops
// draining (killed, or gone) must not hang the program: after 2 s without
// progress the record is dropped after all, counted, and no thread waits
// again.
bool wait_for_room(Header* h, RingControl* r, uint64_t seen) {
    for (int waited = 0; waited < 40000; ++waited) {
        if (!load(&h->enabled) || !load(&h->no_drop)) return false;
        if (load(&r->tail) != seen) return true;
        timespec pause{0, 50000};
        raw_syscall(SYS_nanosleep, reinterpret_cast<long>(&pause), 0);
    }
    __atomic_store_n(&h->no_drop, 0, __ATOMIC_RELEASE);
    return false;
}

// Writes a record into the calling thread's ring (write_record), waiting
// for room with --no-drop; false when it was lost.
template <RecordKind kind = kRecordHit>
[[gnu::always_inline]] inline bool record(Header* h, const Site& site, uint32_t index, const uint64_t* frame, uint64_t tsc,
                                          const ShadowFrame* entry = nullptr, uint64_t seq = 0) {
    RingControl* ring = ring_for(h);
    if (!ring) return false;
    uint64_t seen = 0;  // the ring's tail as the write found it
    bool written = write_record<kind>(h, ring, site, index, frame, tsc, entry, seq, seen);
    while (!written && load(&h->no_drop) && wait_for_room(h, ring, seen))
        written = write_record<kind>(h, ring, site, index, frame, tsc, entry, seq, seen);
    return written;
}

// At the dynamic linker's rendezvous: a library came or went. Not a hot
// path (twice per dlopen), so it may wait for the tracer, bounded (5 s) so
// a dead tracer cannot hang the program. r_state is at offset 24 of
// struct r_debug (glibc <link.h>); RT_CONSISTENT is 0.
void wait_for_tracer(Header* h) {
    int32_t state = -1;
    if (!h->r_debug || safe_read(h->r_debug + 24, &state, sizeof state) != sizeof state || state != 0) return;
    uint32_t seq = __atomic_add_fetch(&h->notify_seq, 1, __ATOMIC_ACQ_REL);
    raw_syscall(SYS_futex, reinterpret_cast<long>(&h->notify_seq), FUTEX_WAKE, 1);
    for (int waited = 0; waited < 500; ++waited) {
        uint32_t ack = load(&h->notify_ack);
        if (static_cast<int32_t>(ack - seq) >= 0 || !load(&h->enabled)) return;
        timespec tick{0, 10000000};
        raw_syscall(SYS_futex, reinterpret_cast<long>(&h->notify_ack), FUTEX_WAIT, ack, reinterpret_cast<long>(&tick));
    }
}

// A forked child that is not followed goes quiet. g_pid is updated by the
// fork handler; the region remembers the pid that is traced.
bool quiet(const Header* h) {
    if (!g_quiet && g_pid != h->agent_pid && !h->follow_children) g_quiet = 1;
    return g_quiet;
}

// ---------------------------------------------------------------- returns

// The calling thread's stack of frames (`mine`) from `registry`: a dead
// thread's, or a new mapping (system calls on a thread's first return
// probe only).
ShadowStack* claim_stack(uint64_t* registry, ShadowStack*& mine) {
    if (mine) return mine;
    if (!t_tid) t_tid = static_cast<uint32_t>(raw_syscall(SYS_gettid));
    for (uint32_t i = 0; i < kShadowStacks; ++i) {
        auto* s = reinterpret_cast<ShadowStack*>(load(&registry[i]));
        if (!s) continue;
        uint32_t owner = load(&s->owner_tid);
        if (owner == 0 || raw_syscall(SYS_tgkill, g_pid, owner, 0) != -ESRCH) continue;
        if (__atomic_compare_exchange_n(&s->owner_tid, &owner, t_tid, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            __atomic_store_n(&s->depth, 0, __ATOMIC_RELEASE);
            return mine = s;
        }
    }
    long mapped = raw_syscall(SYS_mmap, 0, sizeof(ShadowStack), PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapped < 0 && mapped > -4096) return nullptr;
    auto* s = reinterpret_cast<ShadowStack*>(mapped);
    s->owner_tid = t_tid;
    for (uint32_t i = 0; i < kShadowStacks; ++i) {
        uint64_t expected = 0;
        if (__atomic_compare_exchange_n(&registry[i], &expected, static_cast<uint64_t>(mapped), false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return mine = s;
    }
    raw_syscall(SYS_munmap, mapped, sizeof(ShadowStack));
    return nullptr;
}

ShadowStack* shadow_stack() { return claim_stack(uprobe_agent_shadow_stacks, t_shadow); }

// Frames deeper than a new entry by less than this are on the same stack
// and were abandoned (longjmp); farther ones may be another stack's (a
// signal handler on sigaltstack) and wait for a return to sort them out.
constexpr uint64_t kSameStack = uint64_t{64} << 20;

// Whether the return address at a frame's slot is one of ours: the
// landing of `top` (the chain's topmost frame) or the return trampoline.
bool hooked_address(const ShadowFrame& top, uint64_t address, uint64_t trampoline) {
    return address == top.landing || address == trampoline;
}

// A frame's @entry values, taken at the entry: kept in the frame, or
// written as a kRecordEntry the frame names (kSiteEntryRecord).
void keep_entry_values(Header* h, const Site& site, uint32_t index, const uint64_t* frame, uint64_t tsc,
                       ShadowFrame& f) {
    const probe::FetchProgram* programs = programs_of(h) + site.first_program;
    const uint8_t* xmm = reinterpret_cast<const uint8_t*>(frame) + kFrameXmmOffset;
    ReadWindow window{SafeRead{}};
    uint32_t kept = 0;
    if (site.flags & kSiteEntryRecord) {
        // The values go to the ring now; the frame keeps their record's
        // number. A record that finds no room leaves the return's values
        // to say so (the tracer finds no record of that number).
        f.entry[0] = ++t_entry_seq;
        (void)record<kRecordEntry>(h, site, index, frame, tsc, nullptr, f.entry[0]);
        kept = kMaxEntryValues;  // nothing more to keep in the frame
    }
    for (uint32_t a = 0; a < site.arg_count && a < kMaxArgs && kept < kMaxEntryValues; ++a) {
        if (!programs[a].at_entry) continue;
        auto result = probe::run_steps(programs[a], frame, programs[a].needs_fpregs ? xmm : nullptr,
                                       [&window](uint64_t address, void* out, size_t n) { return window.read(address, out, n); });
        f.entry[kept++] = result.acc;
    }
}

// At the entry of a FUNC%return probe: take the return address. From a
// trampoline that can call the displaced instructions (`landing`, its
// Site::landing), it is left in place for the trampoline to drop: the
// call puts the landing there and keeps the return-stack buffer right.
// Elsewhere (`landing` 0) it is overwritten with the return trampoline's.
// `chained`: an earlier probe at this entry took it already. True when
// taken.
[[gnu::noinline]] bool hook_return_general(Header* h, const Site& site, uint32_t index, const uint64_t* frame,
                                           uint64_t tsc, uint64_t landing, bool chained) {
    const uint64_t trampoline = load(&h->return_trampoline);
    if (!trampoline) return false;
    ShadowStack* s = shadow_stack();
    if (!s) {
        add<uint64_t>(&h->lost_returns, 1);
        return false;
    }
    const uint64_t slot = frame[kFrameRsp];
    auto* word = reinterpret_cast<uint64_t*>(slot);
    // Chained by call, the word still holds the caller's address: the
    // earlier probe's frame holds that, this one the landing.
    const uint64_t returns_to = chained && landing ? landing : *word;
    uint32_t depth = s->depth;
    // Frames this one replaces: one at this very slot that returned without
    // us (its address was put back), or abandoned deeper in this stack.
    // A frame at this slot whose address is still ours is a tail call's
    // caller (or, chained, this entry's earlier probe): the chain shares
    // the slot.
    while (depth && !chained) {
        const ShadowFrame& top = s->frames[depth - 1];
        if ((top.slot == slot && !hooked_address(top, returns_to, trampoline)) ||
            (top.slot < slot && slot - top.slot < kSameStack))
            --depth;
        else
            break;
    }
    if (depth == kShadowDepth) {
        __atomic_store_n(&s->depth, depth, __ATOMIC_RELEASE);
        add<uint64_t>(&h->lost_returns, 1);
        return false;
    }
    ShadowFrame& f = s->frames[depth];
    f.slot = slot;
    f.original = returns_to;
    f.landing = landing ? landing : trampoline;
    f.tsc = tsc;
    f.site = index;
    f.suspended = 0;
    f.chained = chained;
    keep_entry_values(h, site, index, frame, tsc, f);
    // The frame first, then the address: a detach in between finds the
    // address still the original and leaves it.
    __atomic_store_n(&s->depth, depth + 1, __ATOMIC_RELEASE);
    if (!landing) __atomic_store_n(word, trampoline, __ATOMIC_RELEASE);
    return true;
}

// hook_return_general's usual case, straight through: a jump site's entry
// (the trampoline calls), the thread has its shadow stack, the frame on
// top is a caller's (nothing to replace), and no @entry values to keep.
[[gnu::always_inline]] inline bool hook_return(Header* h, const Site& site, uint32_t index, const uint64_t* frame,
                                               uint64_t tsc, uint64_t landing, bool chained) {
    ShadowStack* s = t_shadow;
    const uint64_t slot = frame[kFrameRsp];
    if (!s || !landing || chained || (site.flags & (kSiteEntryRecord | kSiteEntryValues)))
        return hook_return_general(h, site, index, frame, tsc, landing, chained);
    const uint32_t depth = s->depth;
    if (depth == kShadowDepth || (depth && s->frames[depth - 1].slot <= slot))
        return hook_return_general(h, site, index, frame, tsc, landing, chained);
    ShadowFrame& f = s->frames[depth];
    f.slot = slot;
    f.original = *reinterpret_cast<const uint64_t*>(slot);
    f.landing = landing;
    f.tsc = tsc;
    f.site = index;
    f.suspended = 0;
    f.chained = 0;
    __atomic_store_n(&s->depth, depth + 1, __ATOMIC_RELEASE);
    return true;
}

// The bottom and top frames of the chain sharing frames[i]'s slot.
uint32_t chain_bottom(const ShadowStack* s, uint32_t i) {
    while (i > 0 && s->frames[i - 1].slot == s->frames[i].slot) --i;
    return i;
}
uint32_t chain_top(const ShadowStack* s, uint32_t i) {
    while (i + 1 < s->depth && s->frames[i + 1].slot == s->frames[i].slot) ++i;
    return i;
}

// The C++ unwinder starts: it reads return addresses from the stack, and
// the trampolines' have no unwind info (std::terminate), so every hooked
// address goes back until a handler catches.
void unwinding(Header* h) {
    ShadowStack* s = t_shadow;
    if (!s) return;
    const uint64_t trampoline = load(&h->return_trampoline);
    for (uint32_t i = 0; i < s->depth; ++i) {
        ShadowFrame& f = s->frames[i];
        if (f.suspended) continue;
        f.suspended = 1;
        if (chain_bottom(s, i) != i) continue;
        auto* word = reinterpret_cast<uint64_t*>(f.slot);
        if (hooked_address(s->frames[chain_top(s, i)], *word, trampoline)) *word = f.original;
    }
}

// __cxa_begin_catch at stack pointer `rsp`: frames below it were unwound
// (no return to report); the others are hooked again, if their slot
// still holds the address that was put back. The return trampoline's
// address goes there: no call made it, so the return-stack buffer has no
// entry for it either way.
void caught(Header* h, uint64_t rsp) {
    ShadowStack* s = t_shadow;
    if (!s) return;
    const uint64_t trampoline = load(&h->return_trampoline);
    uint32_t keep = 0;
    for (; keep < s->depth; ++keep) {
        ShadowFrame& f = s->frames[keep];
        if (f.slot < rsp) break;
        if (!f.suspended) continue;
        if (chain_bottom(s, keep) == keep) {
            auto* word = reinterpret_cast<uint64_t*>(f.slot);
            if (*word != f.original) break;
            *word = trampoline;
        }
        f.suspended = 0;
    }
    __atomic_store_n(&s->depth, keep, __ATOMIC_RELEASE);
}

// A timed return (kSiteLatency): its duration, in ns, into its probe's
// buckets; no record.
[[gnu::noinline]] void add_latency(Header* h, uint32_t probe, uint64_t ticks) {
    if (probe >= h->latency_probes) return;
    const uint64_t ns = static_cast<uint64_t>((static_cast<unsigned __int128>(ticks) * load(&h->ns_per_tick_q32)) >> 32);
    Latency* l = latency_of(h, probe);
    add<uint64_t>(&l->counts[latency::bucket_of(ns)], 1);
    uint64_t longest = load(&l->max_ns);
    while (ns > longest &&
           !__atomic_compare_exchange_n(&l->max_ns, &longest, ns, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

[[gnu::always_inline]] inline void report_return(Header* h, const ShadowFrame& f, const uint64_t* frame) {
    if (!load(&h->enabled) || quiet(h) || f.site >= h->site_count) return;
    Site& site = sites_of(h)[f.site];
    if (site.flags & kSiteCountOnly) {
        add<uint64_t>(&site.hits, 1);
        return;
    }
    // Not ordered with the instructions around it (lfence first would be,
    // for ~12 ns a return here): a call of a few ns may read 1 tick.
    const uint64_t tsc = __builtin_ia32_rdtsc();
    if (site.flags & kSiteLatency) {
        add_latency(h, site.probe_id, tsc > f.tsc ? tsc - f.tsc : 0);
        return;
    }
    if (!record<kRecordReturn>(h, site, f.site, frame, tsc, &f)) add<uint64_t>(&site.dropped, 1);
}

// Instruction-mode frames (kSiteExitFramed). At the entry: a frame for
// this call; frames at or below its stack pointer never returned (longjmp,
// an exception) and go, unless an earlier probe of this very hit pushed
// them (`pushed`: probes sharing the entry).
[[gnu::noinline]] void enter_frame_general(Header* h, const Site& site, uint32_t index, const uint64_t* frame,
                                           uint64_t tsc, bool& pushed) {
    ShadowStack* s = claim_stack(g_exit_frame_stacks, t_exit_frames);
    if (!s) {
        add<uint64_t>(&h->lost_returns, 1);
        return;
    }
    const uint64_t slot = frame[kFrameRsp];
    uint32_t depth = s->depth;
    while (depth && !pushed && s->frames[depth - 1].slot <= slot && slot - s->frames[depth - 1].slot < kSameStack)
        --depth;
    if (depth == kShadowDepth) {
        __atomic_store_n(&s->depth, depth, __ATOMIC_RELEASE);
        add<uint64_t>(&h->lost_returns, 1);
        return;
    }
    ShadowFrame& f = s->frames[depth];
    f.slot = slot;
    f.original = 0;
    f.landing = 0;
    f.tsc = tsc;
    f.site = index;
    f.suspended = 0;
    f.chained = 0;
    if (site.flags & (kSiteEntryRecord | kSiteEntryValues)) keep_entry_values(h, site, index, frame, tsc, f);
    __atomic_store_n(&s->depth, depth + 1, __ATOMIC_RELEASE);
    pushed = true;
}

// enter_frame_general's usual case, straight through: the thread has its
// stack, the frame on top is a caller's, no @entry values to keep.
[[gnu::always_inline]] inline void enter_frame(Header* h, const Site& site, uint32_t index, const uint64_t* frame,
                                               uint64_t tsc, bool& pushed) {
    ShadowStack* s = t_exit_frames;
    const uint64_t slot = frame[kFrameRsp];
    const uint32_t depth = s ? s->depth : 0;
    if (!s || pushed || depth == kShadowDepth || (depth && s->frames[depth - 1].slot <= slot) ||
        (site.flags & (kSiteEntryRecord | kSiteEntryValues))) {
        enter_frame_general(h, site, index, frame, tsc, pushed);
        return;
    }
    ShadowFrame& f = s->frames[depth];
    f.slot = slot;
    f.tsc = tsc;
    f.site = index;
    __atomic_store_n(&s->depth, depth + 1, __ATOMIC_RELEASE);
    pushed = true;
}

constexpr uint32_t kFrameDone = 0xffffffff;  // ShadowFrame::site of a frame whose return was reported

// At a ret: the frame of this probe at this stack pointer returns; deeper
// ones were abandoned. No frame (entered before the probe was placed): no
// event, as with a return address taken at the entry.
[[gnu::noinline]] void leave_frame_general(Header* h, Site& site, uint32_t index, const uint64_t* frame, uint64_t tsc) {
    ShadowStack* s = t_exit_frames;
    if (!s) return;
    const uint64_t rsp = frame[kFrameRsp];
    uint32_t depth = s->depth;
    while (depth && s->frames[depth - 1].slot < rsp && rsp - s->frames[depth - 1].slot < kSameStack) --depth;
    for (uint32_t i = depth; i && s->frames[i - 1].slot == rsp; --i) {
        ShadowFrame& f = s->frames[i - 1];
        if (f.site != index) continue;
        if (site.flags & kSiteLatency)
            add_latency(h, site.probe_id, tsc > f.tsc ? tsc - f.tsc : 0);
        else if (!record<kRecordReturn>(h, site, index, frame, tsc, &f))
            add<uint64_t>(&site.dropped, 1);
        f.site = kFrameDone;
        break;
    }
    while (depth && s->frames[depth - 1].slot == rsp && s->frames[depth - 1].site == kFrameDone) --depth;
    __atomic_store_n(&s->depth, depth, __ATOMIC_RELEASE);
}

// leave_frame_general's usual case: this probe's frame is on top.
[[gnu::always_inline]] inline void leave_frame(Header* h, Site& site, uint32_t index, const uint64_t* frame,
                                               uint64_t tsc) {
    ShadowStack* s = t_exit_frames;
    const uint32_t depth = s ? s->depth : 0;
    if (!depth || s->frames[depth - 1].slot != frame[kFrameRsp] || s->frames[depth - 1].site != index) {
        leave_frame_general(h, site, index, frame, tsc);
        return;
    }
    const ShadowFrame& f = s->frames[depth - 1];
    if (site.flags & kSiteLatency)
        add_latency(h, site.probe_id, tsc > f.tsc ? tsc - f.tsc : 0);
    else if (!record<kRecordReturn>(h, site, index, frame, tsc, &f))
        add<uint64_t>(&site.dropped, 1);
    __atomic_store_n(&s->depth, depth - 1, __ATOMIC_RELEASE);
}

[[noreturn]] void lost_return_address() {
    static const char message[] = "uprobe agent: a return through the return trampoline has no recorded frame\n";
    raw_syscall(SYS_write, 2, reinterpret_cast<long>(message), sizeof message - 1);
    for (;;) raw_syscall(SYS_tgkill, g_pid, raw_syscall(SYS_gettid), SIGABRT);
}

// From the return trampoline: report the frames that return here and
// resume at the real return address. Runs whatever the session's state
// (after a detach, threads may still return through the trampoline).
[[gnu::noinline]] void returned_general(uint64_t* frame, Header* h, ShadowStack* s) {
    const uint64_t slot = frame[kFrameRsp];
    const uint64_t trampoline = load(&h->return_trampoline);
    uint64_t resume = 0;
    if (s) {
        // The topmost frame at this slot; those above it were abandoned.
        // Frames taken at the same entry return together; a tail call's
        // caller returns at its own landing (a ret the return-stack buffer
        // predicts), or at once when its address was the trampoline's.
        uint32_t depth = s->depth;
        while (depth && s->frames[depth - 1].slot != slot) --depth;
        while (depth && s->frames[depth - 1].slot == slot) {
            const ShadowFrame& f = s->frames[--depth];
            if (!f.suspended) report_return(h, f, frame);
            resume = f.original;
            if (!f.chained && resume != trampoline) break;
        }
        if (resume) __atomic_store_n(&s->depth, depth, __ATOMIC_RELEASE);
    }
    if (!resume || resume == trampoline) lost_return_address();
    *reinterpret_cast<uint64_t*>(slot) = resume;
}

// returned_general's usual case, straight through: the top frame returns,
// alone.
[[gnu::always_inline]] inline void returned(uint64_t* frame, Header* h) {
    const uint32_t busy = t_busy;
    t_busy = 1;  // a signal handler's probe hits now are skipped, not nested
    ShadowStack* s = t_shadow;
    const uint32_t depth = s ? s->depth : 0;
    const ShadowFrame* f = depth ? &s->frames[depth - 1] : nullptr;
    if (f && f->slot == frame[kFrameRsp] && !f->chained && !f->suspended &&
        f->original != load(&h->return_trampoline)) {
        report_return(h, *f, frame);
        __atomic_store_n(&s->depth, depth - 1, __ATOMIC_RELEASE);
        *reinterpret_cast<uint64_t*>(f->slot) = f->original;
    } else {
        returned_general(frame, h, s);
    }
    t_busy = busy;
}

// An engine-internal site (not a probe's): the dynamic linker or the C++
// unwinder at work.
[[gnu::noinline]] void engine_site(Header* h, const Site& site, const uint64_t* frame) {
    if (site.flags & kSiteNotify) wait_for_tracer(h);
    else if (site.flags & kSiteUnwind) unwinding(h);
    else caught(h, frame[kFrameRsp]);
}

// A probe site's hit, from its trampoline (`by_call`: one that can call
// the displaced instructions) or the SIGTRAP handler. True when a return
// probe took the return address and the trampoline must call.
bool hit(const uint64_t* frame, Header* h, uint32_t index, bool by_call) {
    bool taken = false;
    if (t_busy) {
        if (index < h->site_count) add<uint64_t>(&sites_of(h)[index].reentered, 1);
        return taken;
    }
    t_busy = 1;
    if (load(&h->enabled) && !quiet(h)) {
        // One timestamp for every probe at this address, read when the
        // first of them needs it (rdtsc costs ~8 ns; a count needs none).
        uint64_t tsc = 0;
        auto now = [&tsc] { return tsc ? tsc : (tsc = __builtin_ia32_rdtsc()); };
        bool framed = false;  // an instruction-mode frame was pushed in this hit
        for (uint32_t hops = 0; index < h->site_count && hops < 64; ++hops) {
            Site& site = sites_of(h)[index];
            if (site.flags & (kSiteNotify | kSiteUnwind | kSiteCatch)) {
                engine_site(h, site, frame);
                break;
            }
            // A return probe's hits are its returns (report_return).
            if ((site.flags & (kSiteReturnEntry | kSiteCountOnly)) == kSiteCountOnly) add<uint64_t>(&site.hits, 1);
            if (site.flags & kSiteReturnEntry) {
                taken |= hook_return(h, site, index, frame, now(), by_call ? site.landing : 0, taken);
            } else if (site.flags & kSiteExit) {
                // Reached from the function's entry too (kSiteExitFramed).
                const bool at_entry = frame[kFrameRip] == site.address;
                if (site.flags & kSiteExitFramed) {
                    if (at_entry) enter_frame(h, site, index, frame, now(), framed);
                    else leave_frame(h, site, index, frame, now());
                } else if (!at_entry && !record<kRecordExit>(h, site, index, frame, now())) {
                    add<uint64_t>(&site.dropped, 1);
                }
            } else if (!(site.flags & kSiteCountOnly)) {
                if (!record(h, site, index, frame, now())) add<uint64_t>(&site.dropped, 1);
            }
            if (!site.next) break;
            index = site.next - 1;
        }
    }
    t_busy = 0;
    return taken;
}

const Int3Entry* find_int3(Header* h, uint64_t address) {
    if (!h || h->int3_capacity == 0) return nullptr;
    Int3Entry* table = int3_table_of(h);
    uint32_t slot = int3_slot_of(address, h->int3_capacity);
    for (uint32_t probes = 0; probes < h->int3_capacity; ++probes) {
        const Int3Entry& e = table[slot];
        uint64_t at = load(&e.address);
        if (at == address) return &e;
        if (at == 0) return nullptr;
        slot = slot + 1 == h->int3_capacity ? 0 : slot + 1;
    }
    return nullptr;
}

void chain_sigtrap(int signal, siginfo_t* info, void* context) {
    const struct sigaction& previous = g_previous_sigtrap;
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(signal, info, context);
        return;
    }
    if (previous.sa_handler == SIG_IGN) return;
    if (previous.sa_handler != SIG_DFL && previous.sa_handler) {
        previous.sa_handler(signal);
        return;
    }
    // The default action, as if we were not here: die of SIGTRAP.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGTRAP, &dfl, nullptr);
    raw_syscall(SYS_tgkill, g_pid, raw_syscall(SYS_gettid), SIGTRAP);
}

// An int3 site: the kernel reports int3 as SIGTRAP with rip after the
// 0xcc (SDM vol. 3A, 6.15 "#BP"). The frame is built from the signal
// context in user_regs_struct order, as a trampoline would.
void on_sigtrap(int signal, siginfo_t* info, void* context) {
    auto* uc = static_cast<ucontext_t*>(context);
    greg_t* g = uc->uc_mcontext.gregs;
    Header* h = reinterpret_cast<Header*>(load(&uprobe_agent_region));
    const uint64_t address = static_cast<uint64_t>(g[REG_RIP]) - 1;
    const Int3Entry* entry = info && info->si_code == SI_KERNEL ? find_int3(h, address) : nullptr;
    if (!entry && info && info->si_code == SI_KERNEL) {
        // An earlier session's site (the trap was taken before it ended,
        // the signal handled only now): the instruction is back, or this
        // session's jump; run what is there now.
        const Header* earlier = h ? reinterpret_cast<const Header*>(h->previous_region) : nullptr;
        for (int hops = 0; earlier && hops < 64; ++hops) {
            if (earlier->magic == kMagic && find_int3(const_cast<Header*>(earlier), address)) {
                g[REG_RIP] = static_cast<greg_t>(address);
                return;
            }
            earlier = earlier->magic == kMagic ? reinterpret_cast<const Header*>(earlier->previous_region) : nullptr;
        }
    }
    if (!entry) {
        chain_sigtrap(signal, info, context);
        return;
    }
    if (load(&entry->removed)) {
        g[REG_RIP] = static_cast<greg_t>(address);
        return;
    }
    uint64_t frame[kFrameXmmOffset / 8 + 32];
    const int order[] = {REG_R15, REG_R14, REG_R13, REG_R12, REG_RBP, REG_RBX, REG_R11, REG_R10,
                         REG_R9,  REG_R8,  REG_RAX, REG_RCX, REG_RDX, REG_RSI, REG_RDI};
    for (int i = 0; i < 15; ++i) frame[i] = static_cast<uint64_t>(g[order[i]]);
    for (int i = 15; i < static_cast<int>(kFrameXmmOffset / 8); ++i) frame[i] = 0;
    frame[16] = address;
    frame[18] = static_cast<uint64_t>(g[REG_EFL]);
    frame[19] = static_cast<uint64_t>(g[REG_RSP]);
    auto* xmm = reinterpret_cast<uint8_t*>(frame) + kFrameXmmOffset;
    const uint8_t* saved = uc->uc_mcontext.fpregs ? reinterpret_cast<const uint8_t*>(uc->uc_mcontext.fpregs->_xmm) : nullptr;
    for (int i = 0; i < 256; ++i) xmm[i] = saved ? saved[i] : 0;
    hit(frame, h, entry->site, false);
    g[REG_RIP] = static_cast<greg_t>(entry->resume);
}

void after_fork_in_child() {
    g_pid = static_cast<uint32_t>(raw_syscall(SYS_getpid));
    auto* h = reinterpret_cast<Header*>(load(&uprobe_agent_region));
    if (h && load(&h->enabled) && !h->follow_children) {
        // Not followed: take back what the tracer raised in our copy.
        const uint32_t count = load(&h->semaphore_count);
        for (uint32_t i = 0; i < count && i < kMaxSemaphores; ++i) {
            auto* value = reinterpret_cast<uint16_t*>(h->semaphores[i].address);
            const auto raised = static_cast<uint16_t>(h->semaphores[i].raised);
            if (value && raised) *value = *value >= raised ? static_cast<uint16_t>(*value - raised) : 0;
        }
    }
    t_ring = nullptr;  // the parent's ring stays the parent's
    t_claim_pause = 0;
    t_tid = static_cast<uint32_t>(raw_syscall(SYS_gettid));
    // The shadow stacks are private memory, copied by fork: this thread's
    // is its own now; the other threads' (gone in the child) are free.
    if (t_shadow) t_shadow->owner_tid = t_tid;
    if (t_exit_frames) t_exit_frames->owner_tid = t_tid;
}

// Waits until the tracer sets `*word` to `until`; bounded (30 s), as a
// tracer that died must not hang the program, which then runs untraced.
void wait_for_tracer_word(Header* h, uint32_t* word, uint32_t until) {
    for (int waited = 0; waited < 300 && load(&h->enabled); ++waited) {
        uint32_t now = load(word);
        if (now == until) return;
        timespec tenth{0, 100000000};
        raw_syscall(SYS_futex, reinterpret_cast<long>(word), FUTEX_WAIT, now, reinterpret_cast<long>(&tenth));
    }
}

// Asks the tracer to attach to this process (abi.hpp, pending_children)
// and waits until it has, so the new program's code does not run unprobed.
void wait_for_adoption(Header* h) {
    for (uint32_t i = 0; i < kMaxPendingChildren; ++i) {
        uint32_t expected = 0;
        if (!__atomic_compare_exchange_n(&h->pending_children[i], &expected, g_pid, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        __atomic_add_fetch(&h->children_seq, 1, __ATOMIC_ACQ_REL);
        raw_syscall(SYS_futex, reinterpret_cast<long>(&h->children_seq), FUTEX_WAKE, 1);
        wait_for_tracer_word(h, &h->pending_children[i], 0);
        // Given up (a tracer that is gone): free the slot.
        uint32_t mine = g_pid;
        __atomic_compare_exchange_n(&h->pending_children[i], &mine, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        return;
    }
}

// Launch mode: the tracer passed the region as an inherited fd in the
// environment ("FD,SIZE"). Map it, say so, and wait until the tracer has
// patched the probes, so that none of the program's own code runs first.
// The fd and the variable stay for the traced process's next execve
// (abi.hpp, exec_seq); any other process that inherits them lets go.
void init_from_environment() {
    const char* value = getenv(kRegionFdEnv);
    if (!value) return;
    char* end = nullptr;
    long fd = strtol(value, &end, 10);
    unsigned long long size = end && *end == ',' ? strtoull(end + 1, nullptr, 10) : 0;
    auto let_go = [fd] {
        unsetenv(kRegionFdEnv);
        if (fd >= 0) raw_syscall(SYS_close, fd);
    };
    if (fd < 0 || size < sizeof(Header)) return let_go();
    void* mapped = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), 0);
    if (mapped == MAP_FAILED) return let_go();
    auto* h = static_cast<Header*>(mapped);
    const bool after_exec = h->magic == kMagic && load(&h->agent_ready);
    if (after_exec && h->abi_version == kAbiVersion && h->region_size == size && h->agent_pid != g_pid &&
        h->follow_children && load(&h->enabled)) {
        // A followed child's new program: the tracer attaches to it (a
        // session of its own); this region stays the parent's.
        wait_for_adoption(h);
        munmap(mapped, size);
        return let_go();
    }
    if (h->magic != kMagic || h->abi_version != kAbiVersion || h->region_size != size ||
        (after_exec && h->agent_pid != g_pid) || !load(&h->enabled)) {
        // Not ours to use: another version, a descendant of the traced
        // process (its own exec is not followed), or a finished session.
        munmap(mapped, size);
        return let_go();
    }
    h->self = reinterpret_cast<uint64_t>(h);
    __atomic_store_n(&uprobe_agent_region, h->self, __ATOMIC_RELEASE);
    if (after_exec) {
        uint32_t seq = __atomic_add_fetch(&h->exec_seq, 1, __ATOMIC_ACQ_REL);
        raw_syscall(SYS_futex, reinterpret_cast<long>(&h->exec_seq), FUTEX_WAKE, 1);
        wait_for_tracer_word(h, &h->exec_ack, seq);
        return;
    }
    h->agent_pid = g_pid;
    __atomic_store_n(&h->agent_ready, 1, __ATOMIC_RELEASE);
    raw_syscall(SYS_futex, reinterpret_cast<long>(&h->agent_ready), FUTEX_WAKE, 1);
    wait_for_tracer_word(h, &h->go, 1);
}

void install_sigtrap_handler() {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigtrap;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTRAP, &sa, &g_previous_sigtrap);
}

__attribute__((constructor)) void agent_init() {
    g_pid = static_cast<uint32_t>(raw_syscall(SYS_getpid));
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
    install_sigtrap_handler();
    init_from_environment();
}

}  // namespace
}  // namespace uprobe::agent

using namespace uprobe::agent;

AGENT_EXPORT const uint32_t uprobe_agent_abi_version = kAbiVersion;


// Called by a trampoline; see abi.hpp.
AGENT_EXPORT uint32_t uprobe_agent_hit(const uint64_t* frame, Header* h, uint32_t index) {
    return hit(frame, h, index, true);
}

// Called by the return trampoline (arch::make_return_trampoline).
AGENT_EXPORT void uprobe_agent_return(uint64_t* frame, Header* h, uint32_t) { returned(frame, h); }

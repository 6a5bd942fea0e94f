// The shared-memory interface between the tracer (src/engine/inline/) and
// the in-process agent (libuprobe-agent.so): one memfd region, mapped
// MAP_SHARED by both, laid out as
//
//   Header | Site[site_capacity] | FetchProgram[program_capacity] |
//   Int3Entry[int3_capacity] | Ring[ring_count] | Latency[latency_probes]
//
// Bump kAbiVersion whenever the layout or the meaning of a field changes:
// the agent refuses a region of another version (it never guesses).
//
// Who writes what: the tracer writes the header, sites and programs while
// every thread of the target is stopped (or before the agent runs), and
// only reads counters afterwards. The agent writes counters and ring
// records; each ring has one producer (the thread that claimed it) and one
// consumer (the tracer). Every field both sides touch concurrently is a
// naturally aligned 32- or 64-bit word accessed with __atomic builtins.
//
// Nothing here may use the heap or the C++ runtime: the agent includes it
// with -fno-exceptions -fno-rtti and links no libstdc++.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "probe/fetch_program.hpp"
#include "uprobe/latency.hpp"

namespace uprobe::agent {

constexpr uint32_t kMagic = 0x75707262;  // "uprb"
constexpr uint32_t kAbiVersion = 15;

// Environment variable naming the inherited region fd at launch.
constexpr const char kRegionFdEnv[] = "UPROBE_AGENT_FD";

constexpr uint32_t kMaxArgs = 64;  // leaf values per site (a DWARF struct is one per field)
constexpr uint32_t kRecordAlign = 8;

enum SiteFlags : uint32_t {
    kSiteCountOnly = 1,  // count hits, write no record
    // The dynamic linker's rendezvous (r_brk): when the link map is
    // consistent again (r_state == RT_CONSISTENT) after a dlopen/dlclose,
    // ask the tracer to place pending probes, and wait (bounded) until it
    // has, so the new library's code does not run unprobed.
    kSiteNotify = 2,
    // The entry of a FUNC%return probe: replace the return address with the
    // return trampoline and push the original on the thread's shadow stack;
    // the record is written at the return (kRecordReturn).
    kSiteReturnEntry = 4,
    // The C++ unwinder starts (_Unwind_RaiseException and friends): put the
    // hijacked return addresses back, since it reads them from the stack.
    kSiteUnwind = 8,
    // A handler catches (__cxa_begin_catch): hijack again the frames the
    // exception did not unwind.
    kSiteCatch = 16,
    // Records carry the frame's general registers (kFrameRegisters words,
    // user_regs_struct order) right after the header (and entry time).
    kSiteRegisters = 32,
    // A FUNC%return entry whose @entry values do not fit a shadow frame
    // (a string, or more than kMaxEntryValues): they go into a
    // kRecordEntry at the entry, which the return record names.
    kSiteEntryRecord = 64,
    // A FUNC%return entry with @entry values for its frame to keep.
    kSiteEntryValues = 128,
    // A ret of a FUNC%return probe placed by instructions: the hit is the
    // return (kRecordExit; with kSiteExitFramed, below, kRecordReturn).
    kSiteExit = 256,
    // A FUNC%return entry whose returns are only timed (--latency): the
    // return adds its duration to its probe's Latency, and writes no record.
    kSiteLatency = 512,
    // A kSiteExit site that is also in the chain at its function's entry
    // (Site::address): there (rip == address) it keeps a frame with the
    // entry's time and @entry values, which its ret (rip != address) finds
    // by the stack pointer; the return is a kRecordReturn.
    kSiteExitFramed = 1024,
};
constexpr uint32_t kInternalProbe = 0xffffffff;  // Site::probe_id of engine-internal sites

// One patched probe site (one probe at one address).
struct Site {
    uint32_t probe_id;
    uint32_t flags;
    uint64_t address;        // runtime address of the site
    uint32_t first_program;  // index into the program table
    uint32_t arg_count;
    uint32_t string_max;     // bound of a :string read
    uint32_t next;           // index + 1 of the next site at the same address, 0: none
    // atomic: the hits of a count-only site (a return probe's: its
    // returns). A site that writes records counts nothing here: its hits
    // are the records the tracer drains plus `dropped`.
    uint64_t hits;
    uint64_t dropped;        // atomic: records lost to a full ring or no free ring
    uint64_t reentered;      // atomic: hits inside the handler, skipped
    // A FUNC%return entry at a jump site: where the function returns when
    // its trampoline calls the displaced instructions (the handler's
    // non-zero result asks for that; see arch::TrampolineRequest). 0: the
    // return address is overwritten with the return trampoline's instead.
    uint64_t landing;
};
static_assert(sizeof(Site) == 64);

// A single-producer, single-consumer byte ring. Records are 8-byte aligned
// and never wrap: a record that does not fit before the end is preceded by
// a Skip record filling the rest.
// A thread claims a free ring with a CAS of `owner`, and keeps it for its
// life; a thread that finds none free takes over the ring of a thread
// that is gone (the same CAS, from the dead owner's word), records still
// in it and all: only one thread writes a ring at a time.
struct alignas(64) RingControl {
    uint64_t owner;  // tid | pid << 32 of the owning thread; 0: free
    uint64_t pad0[7];
    uint64_t head;  // producer: bytes written (monotonic)
    uint64_t pad1[7];
    uint64_t tail;  // consumer: bytes consumed (monotonic)
    uint64_t pad2[7];
};
static_assert(sizeof(RingControl) == 192);

// kRecordReturn: a return of a FUNC%return probe; `site` is its entry
// site, and a uint64_t follows the header: rdtsc at the entry ($duration);
// with kSiteEntryRecord a second one, the sequence number of the entry's
// kRecordEntry (its @entry values; the return's own are placeholders).
// kRecordEntry: written at the entry of a kSiteEntryRecord site: a
// uint64_t sequence number (per thread, from 1), then the @entry values
// alone, in program order. It is not an event.
// kRecordExit: a return seen at a kSiteExit site (a ret), laid out as a
// kRecordHit: no entry, so no entry time.
enum RecordKind : uint32_t { kRecordHit = 1, kRecordSkip = 2, kRecordReturn = 3, kRecordEntry = 4, kRecordExit = 5 };

struct RecordHeader {
    uint32_t size;  // whole record, a multiple of kRecordAlign
    uint32_t kind;
    uint32_t site;  // index into the site table
    uint32_t tid;
    uint32_t pid;
    uint32_t arg_count;
    uint64_t tsc;   // rdtsc at the hit; the tracer converts to CLOCK_MONOTONIC
};
static_assert(sizeof(RecordHeader) == 32);

// Return probes in the program: each thread that enters a probed function
// gets a shadow stack (private memory, lazily mapped, so a forked child
// has its own copy) listed in the agent's exported registry, which the
// tracer reads at detach to put every hijacked return address back.
// Frames that share a slot are a tail-call chain: the lowest of them holds
// the real return address, each other one the landing of the frame below
// (or, `chained`, it was taken at the same entry as the frame below).
constexpr uint32_t kMaxEntryValues = 4;  // @entry values a frame keeps
constexpr uint32_t kShadowDepth = 8192;
constexpr uint32_t kShadowStacks = 1024;

struct ShadowFrame {
    uint64_t slot;      // stack address of the return address
    uint64_t original;  // what it held
    uint64_t landing;   // what it holds while hooked: Site::landing or the return trampoline
    uint64_t tsc;       // rdtsc at the entry
    uint32_t site;      // the entry site (index into the site table)
    uint16_t suspended; // 1: put back for the C++ unwinder (kSiteUnwind)
    uint16_t chained;   // 1: taken at the same entry as the frame below
    uint64_t entry[kMaxEntryValues];  // @entry values, in program order (kSiteEntryRecord: [0] is
                                      // the kRecordEntry's sequence number)
};
static_assert(sizeof(ShadowFrame) == 72);

struct ShadowStack {
    uint32_t owner_tid;  // the thread using it; a dead owner's stack is reused
    uint32_t depth;      // atomic: frames in use
    uint64_t pad[7];
    ShadowFrame frames[kShadowDepth];
};

// Exported by the agent: uint64_t[kShadowStacks], the shadow stacks'
// addresses (0: free), and the return trampoline's handler.
constexpr const char kShadowRegistrySymbol[] = "uprobe_agent_shadow_stacks";
constexpr const char kReturnHandlerSymbol[] = "uprobe_agent_return";
constexpr uint32_t kFrameRsp = 19;  // the rsp word of a frame (user_regs_struct order)
constexpr uint32_t kFrameRip = 16;

enum ArgKind : uint32_t {
    kArgNumber = 0,      // value: the raw accumulator
    kArgString = 1,      // length bytes follow (padded to 8); value: the address
    kArgBadAddress = 2,  // value: the address that could not be read
    kArgTruncatedString = 3,
    kArgNeedsTracer = 4, // comm/pid/tid and values the agent leaves to the tracer
};

struct ArgHeader {
    uint32_t kind;
    uint32_t length;
    uint64_t value;
};
static_assert(sizeof(ArgHeader) == 16);

// An int3 site (where a jump cannot go): the agent's SIGTRAP handler looks
// the trapping address up in an open-addressing table (linear probing from
// int3_slot_of(address)), runs the probe, and resumes at `resume` (the
// displaced instruction relocated, arch::relocate). Entries are never
// removed: a removed probe's entry says `removed`, and the handler resumes
// at the (restored) original instruction, because a thread may have
// executed the int3 just before the byte was restored.
struct Int3Entry {
    uint64_t address;  // 0: empty
    uint64_t resume;
    uint32_t site;     // index into the site table
    uint32_t removed;  // 1: the original byte is back; resume at `address`
};
static_assert(sizeof(Int3Entry) == 24);

inline uint32_t int3_slot_of(uint64_t address, uint32_t capacity) {
    return static_cast<uint32_t>((address * 0x9E3779B97F4A7C15ull) >> 40) % capacity;
}

// An SDT semaphore the tracer raised (by `raised`): a forked child that is
// not followed gets it lowered again by the agent's fork handler, before
// the child runs on, as the ptrace engine does from outside.
struct SemaphoreEntry {
    uint64_t address;
    uint64_t raised;
};
constexpr uint32_t kMaxSemaphores = 128;
constexpr uint32_t kMaxPendingChildren = 16;

// The durations of one probe's returns (kSiteLatency), in the buckets of
// uprobe/latency.hpp; every word atomic.
struct Latency {
    uint64_t max_ns;
    uint64_t counts[latency::kBuckets];
};

struct Header {
    uint32_t magic;
    uint32_t abi_version;
    uint64_t region_size;
    uint64_t self;              // the region's address in the target (set by the agent)
    uint32_t agent_ready;       // futex word: the agent mapped the region (launch)
    uint32_t go;                // futex word: the tracer patched the probes (launch)
    uint32_t enabled;           // 0: the handler returns at once
    uint32_t agent_pid;
    uint32_t site_count;
    uint32_t site_capacity;
    uint32_t program_count;
    uint32_t program_capacity;
    uint32_t ring_count;
    uint32_t follow_children;   // forked children keep reporting (else they go quiet)
    uint64_t ring_size;         // bytes of data per ring, a power of two
    uint64_t sites_offset;
    uint64_t programs_offset;
    uint64_t rings_offset;      // RingControl + data, ring_stride apart
    uint64_t ring_stride;
    uint64_t int3_offset;
    uint32_t int3_capacity;
    uint32_t int3_count;
    uint32_t tracer_pid;        // the session's tracer: a second session is refused while it lives
    uint32_t no_drop;           // a full ring: wait for the tracer to drain it (bounded)
    uint64_t r_debug;           // the dynamic linker's struct r_debug (0: none)
    uint32_t notify_seq;        // futex word: bumped by the agent at kSiteNotify
    uint32_t notify_ack;        // futex word: set to notify_seq by the tracer once done
    // Launch mode keeps the region's fd (and its environment variable)
    // across execve, so the traced process's next image maps the region
    // again: its agent bumps exec_seq and waits (bounded) until the tracer
    // has placed the probes in the new image and set exec_ack to it.
    uint32_t exec_seq;          // futex word
    uint32_t exec_ack;          // futex word
    uint64_t return_trampoline; // 0: no return probes in this process
    uint64_t lost_returns;      // atomic: returns not hooked (no shadow stack, or one full)
    uint32_t semaphore_count;   // entries of `semaphores` in use
    uint32_t children_seq;      // futex word: bumped when a child claims a pending slot
    SemaphoreEntry semaphores[kMaxSemaphores];
    // With follow_children, a forked child that runs execve gets its own
    // session from the tracer (an attach: its new image's agent, preloaded,
    // is reused): its agent claims a slot with its pid and waits (bounded)
    // until the tracer, done, sets the slot back to 0.
    uint32_t pending_children[kMaxPendingChildren];  // futex words
    // The region of the session before this one in the process (0: none):
    // its mapping stays, and a thread that trapped on one of that session's
    // int3 sites may run the SIGTRAP handler only now.
    uint64_t previous_region;
    // atomic: 1 + the highest ring index ever claimed (threads claim the
    // lowest free ring), so the tracer scans only rings that may hold records.
    uint32_t rings_used;
    uint32_t latency_probes;    // Latency tables, one per probe id below this
    uint64_t latency_offset;
    // rdtsc ticks to ns: ns = ticks * ns_per_tick_q32 >> 32 (atomic; the
    // tracer calibrates it before the probes go in, and refines it).
    uint64_t ns_per_tick_q32;
};
static_assert(sizeof(Header) <= 4096, "the header has its own page (Layout::sites_offset)");

struct Layout {
    uint32_t site_capacity;
    uint32_t program_capacity;
    uint32_t ring_count;
    uint64_t ring_size;
    uint32_t int3_capacity;
    uint32_t latency_probes;

    static constexpr uint64_t align(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
    constexpr uint64_t sites_offset() const { return align(sizeof(Header), 4096); }
    constexpr uint64_t programs_offset() const { return align(sites_offset() + uint64_t{site_capacity} * sizeof(Site), 64); }
    constexpr uint64_t int3_offset() const {
        return align(programs_offset() + uint64_t{program_capacity} * sizeof(probe::FetchProgram), 64);
    }
    constexpr uint64_t rings_offset() const {
        return align(int3_offset() + uint64_t{int3_capacity} * sizeof(Int3Entry), 4096);
    }
    constexpr uint64_t ring_stride() const { return align(sizeof(RingControl) + ring_size, 4096); }
    constexpr uint64_t latency_offset() const { return rings_offset() + uint64_t{ring_count} * ring_stride(); }
    constexpr uint64_t total() const { return latency_offset() + align(uint64_t{latency_probes} * sizeof(Latency), 4096); }
};

inline Site* sites_of(Header* h) { return reinterpret_cast<Site*>(reinterpret_cast<char*>(h) + h->sites_offset); }
inline probe::FetchProgram* programs_of(Header* h) {
    return reinterpret_cast<probe::FetchProgram*>(reinterpret_cast<char*>(h) + h->programs_offset);
}
inline Int3Entry* int3_table_of(Header* h) {
    return reinterpret_cast<Int3Entry*>(reinterpret_cast<char*>(h) + h->int3_offset);
}
inline RingControl* ring_of(Header* h, uint32_t i) {
    return reinterpret_cast<RingControl*>(reinterpret_cast<char*>(h) + h->rings_offset + uint64_t{i} * h->ring_stride);
}
inline Latency* latency_of(Header* h, uint32_t probe) {
    return reinterpret_cast<Latency*>(reinterpret_cast<char*>(h) + h->latency_offset) + probe;
}
inline uint8_t* ring_data(RingControl* r) { return reinterpret_cast<uint8_t*>(r) + sizeof(RingControl); }

// The frame the trampoline builds on the stack and hands to the handler:
// general registers laid out as user_regs_struct (so fetch programs read
// the same slots as under ptrace), then xmm0..15 when the site needs them.
constexpr uint32_t kFrameRegisters = 27;
constexpr uint32_t kFrameXmmOffset = kFrameRegisters * 8 + 8;  // after one unused word

// Exported by the agent: the trampoline (arch/x86_64/trampoline.hpp) calls
// it as handler(frame, header address, site index). Its name is part of
// the ABI.
constexpr const char kHandlerSymbol[] = "uprobe_agent_hit";

}  // namespace uprobe::agent

// Draining the agent's rings into events, and the probes' counts.
#include "engine/inline/inline_engine.hpp"

#include <cstring>

#include "base/strings.hpp"

namespace uprobe::engine::inline_engine {
namespace {

// Serves a string's bytes from a record to probe::evaluate.
class RecordMemory final : public probe::MemoryReader {
public:
    RecordMemory(const uint8_t* bytes, size_t length, bool terminated)
        : bytes_(bytes), length_(length), terminated_(terminated) {}
    size_t read(uint64_t, void* out, size_t size) override {
        size_t n = std::min(size, length_);
        std::memcpy(out, bytes_, n);
        if (terminated_ && n < size) {
            static_cast<uint8_t*>(out)[n] = 0;
            ++n;
        }
        return n;
    }

private:
    const uint8_t* bytes_;
    size_t length_;
    bool terminated_;
};

// One recorded value (an ArgHeader and its bytes at `at`, `left` of them
// to go), formatted as `program` asks; moves `at` past it.
Value decode_recorded(const probe::FetchProgram& program, const probe::FetchContext& leaf_context, const uint8_t*& at,
                      const uint8_t* end, uint32_t& left, const user_regs_struct& regs) {
    if (left == 0 || at + sizeof(abi::ArgHeader) > end) return Value::make_error("not recorded");
    --left;
    const auto* arg = reinterpret_cast<const abi::ArgHeader*>(at);
    at += sizeof(abi::ArgHeader);
    if (arg->kind == abi::kArgNumber && probe::is_number(program.format))
        return probe::number_value(program, arg->value);
    probe::FetchProgram constant = program;
    constant.step_count = 1;
    constant.steps[0] = probe::FetchStep{probe::FetchOp::LoadConst, 0, 8, 1, static_cast<int64_t>(arg->value)};
    RecordMemory none(nullptr, 0, false);
    switch (arg->kind) {
    case abi::kArgBadAddress: return Value::make_error("bad address " + hex(arg->value));
    case abi::kArgString:
    case abi::kArgTruncatedString: {
        uint32_t length = std::min<uint64_t>(arg->length, static_cast<uint64_t>(end - at));
        RecordMemory memory(at, length, arg->kind == abi::kArgString);
        at += (length + 7) & ~uint32_t{7};
        return probe::evaluate(constant, regs, memory, leaf_context);
    }
    case abi::kArgNeedsTracer:
        if (program.format == probe::FetchFormat::Comm || program.format == probe::FetchFormat::Pid ||
            program.format == probe::FetchFormat::Tid || program.format == probe::FetchFormat::Duration)
            return probe::evaluate(program, regs, none, leaf_context);
        if (program.at_entry) return Value::make_error("entry value not recorded");
        return Value::make_error("floating-point registers unavailable");
    default: return probe::evaluate(constant, regs, none, leaf_context);
    }
}

// Site i's hits: counted in the program (count-only sites), or records
// drained plus records dropped (abi.hpp, Site::hits).
uint64_t site_hits(const Target& t, size_t i) {
    const abi::Site* sites = abi::sites_of(t.region);
    const size_t counted = t.sites[i].hits_from >= 0 ? static_cast<size_t>(t.sites[i].hits_from) : i;
    return __atomic_load_n(&sites[counted].hits, __ATOMIC_RELAXED) + __atomic_load_n(&t.sites[i].delivered, __ATOMIC_RELAXED) +
           (sites[i].flags & abi::kSiteCountOnly ? 0 : __atomic_load_n(&sites[i].dropped, __ATOMIC_RELAXED));
}

}  // namespace

void InlineEngine::drain(Target& t) {
    abi::Header* h = t.region;
    if (!h) return;
    Event event;
    user_regs_struct regs{};
    bool regs_filled = false;  // regs hold a record's registers (else zero but rip)
    uint64_t consumed = 0;
    clock_.calibrate();
    // Written when the rate changes (every 100 ms at most), not at every
    // drain: the agent reads it at every timed return.
    if (const uint64_t rate = clock_.ns_per_tick_q32(); rate != h->ns_per_tick_q32)
        __atomic_store_n(&h->ns_per_tick_q32, rate, __ATOMIC_RELAXED);
    const uint32_t rings = std::min(__atomic_load_n(&h->rings_used, __ATOMIC_ACQUIRE), h->ring_count);
    for (uint32_t i = 0; i < rings; ++i) {
        abi::RingControl* r = abi::ring_of(h, i);
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        uint64_t tail = r->tail;
        const uint8_t* data = abi::ring_data(r);
        while (tail < head) {
            const auto* rec = reinterpret_cast<const abi::RecordHeader*>(data + tail % h->ring_size);
            if (rec->size < 8 || rec->size > h->ring_size) break;  // corrupt: stop reading this ring
            const bool is_return = rec->kind == abi::kRecordReturn || rec->kind == abi::kRecordExit;
            if (rec->kind == abi::kRecordEntry && rec->size >= sizeof(abi::RecordHeader) + sizeof(uint64_t)) {
                const auto* at = reinterpret_cast<const uint8_t*>(rec) + sizeof(abi::RecordHeader);
                const uint64_t seq = *reinterpret_cast<const uint64_t*>(at);
                at += sizeof(uint64_t);
                const pid_t tid = static_cast<pid_t>(rec->tid);
                auto [kept, added] = t.entry_values.try_emplace({tid, seq});
                kept->second.bytes.assign(at, reinterpret_cast<const uint8_t*>(rec) + rec->size);
                kept->second.count = rec->arg_count;
                // Frames left by longjmp never return: past a shadow
                // stack's depth, the oldest entry of the thread goes.
                if (added && ++t.entry_values_of[tid] > abi::kShadowDepth) {
                    t.entry_values.erase(t.entry_values.lower_bound({tid, 0}));
                    --t.entry_values_of[tid];
                }
            }
            // After a detach was asked for, nothing more of this process
            // is delivered (or counted): its hits end there, as under ptrace.
            if ((rec->kind == abi::kRecordHit || is_return) && rec->site < t.sites.size() &&
                t.sites[rec->site].probe_id < request_.probes.size() && !t.release_requested) {
                SiteInfo& site = t.sites[rec->site];
                const ProbeSpec& spec = request_.probes[site.probe_id];
                __atomic_store_n(&site.delivered, site.delivered + 1, __ATOMIC_RELAXED);  // stats() may read it
                event.probe_id = site.probe_id;
                event.probe = spec.name;
                event.pid = static_cast<pid_t>(rec->pid);
                if (event.pid != t.pid && !std::count(ever_traced_.begin(), ever_traced_.end(), event.pid))
                    ever_traced_.push_back(event.pid);  // a followed child (fork keeps the shared region)
                event.tid = static_cast<pid_t>(rec->tid);
                // A recalibration may move a conversion by a few ns either
                // way; a thread's events keep their order.
                Target::ThreadSeen& thread = t.threads[event.tid];
                event.ts_ns = thread.last_ts = std::max(thread.last_ts, clock_.to_ns(rec->tsc));
                if (thread.comm.empty()) thread.comm = proc::read_comm(event.pid, event.tid);
                event.comm = thread.comm;
                event.addr = site.address;
                event.is_return = is_return;
                const uint8_t* at = reinterpret_cast<const uint8_t*>(rec) + sizeof(abi::RecordHeader);
                const uint8_t* end = reinterpret_cast<const uint8_t*>(rec) + rec->size;
                uint32_t left = rec->arg_count;
                probe::FetchContext context;
                context.pid = event.pid;
                context.tid = event.tid;
                context.comm = event.comm;
                context.string_max = request_.string_max;
                event.duration_ns = 0;
                if (rec->kind == abi::kRecordReturn && at + sizeof(uint64_t) <= end) {
                    uint64_t entry_tsc = *reinterpret_cast<const uint64_t*>(at);
                    at += sizeof(uint64_t);
                    event.duration_ns = clock_.interval_ns(rec->tsc > entry_tsc ? rec->tsc - entry_tsc : 0);
                    context.duration_ns = event.duration_ns;
                }
                // The @entry values of a kSiteEntryRecord frame: its entry's
                // record, and with it those of frames entered later (they
                // returned, or were left by longjmp or an exception).
                const bool entry_record = abi::sites_of(h)[rec->site].flags & abi::kSiteEntryRecord;
                Target::EntryValues entry_values;
                bool have_entry_values = false;
                if (is_return && entry_record && at + sizeof(uint64_t) <= end) {
                    const uint64_t seq = *reinterpret_cast<const uint64_t*>(at);
                    at += sizeof(uint64_t);
                    const pid_t tid = static_cast<pid_t>(rec->tid);
                    auto first = t.entry_values.lower_bound({tid, seq});
                    if (first != t.entry_values.end() && first->first == std::make_pair(tid, seq)) {
                        entry_values = std::move(first->second);
                        have_entry_values = true;
                    }
                    const auto last = t.entry_values.lower_bound({tid + 1, 0});
                    t.entry_values_of[tid] -= static_cast<size_t>(std::distance(first, last));
                    t.entry_values.erase(first, last);
                }
                // Zeroed only after a record that filled them: clearing 216
                // bytes per event was a tenth of the consumer's time.
                if ((abi::sites_of(h)[rec->site].flags & abi::kSiteRegisters) && at + sizeof regs <= end) {
                    static_assert(sizeof(user_regs_struct) == abi::kFrameRegisters * 8);
                    std::memcpy(&regs, at, sizeof regs);
                    at += sizeof regs;
                    regs_filled = true;
                } else if (regs_filled) {
                    regs = user_regs_struct{};
                    regs_filled = false;
                }
                // The agent ran each leaf program in the program and recorded
                // its result; here they are formatted, in the same order.
                // @entry values kept in an entry record come from there.
                const uint8_t* entry_at = entry_values.bytes.data();
                const uint8_t* entry_end = entry_at + entry_values.bytes.size();
                uint32_t entry_left = entry_values.count;
                auto recorded = [&](const probe::FetchProgram& program, const probe::FetchContext& leaf_context) -> Value {
                    if (!program.at_entry || !entry_record)
                        return decode_recorded(program, leaf_context, at, end, left, regs);
                    // The return record's own value is a placeholder.
                    if (left == 0 || at + sizeof(abi::ArgHeader) > end) return Value::make_error("not recorded");
                    --left;
                    at += sizeof(abi::ArgHeader);
                    if (!have_entry_values) return Value::make_error("entry values lost (a full ring dropped them)");
                    return decode_recorded(program, leaf_context, entry_at, entry_end, entry_left, regs);
                };
                // A plain argument's value goes into the slot the last event
                // left (its name and text keep their storage); a DWARF one
                // may be several values.
                size_t used = 0;
                for (size_t a = 0; a < site.args.size() && a < spec.args.size(); ++a) {
                    if (site.args[a].is_dwarf) {
                        event.args.resize(used);
                        probe::evaluate_arg(spec.args[a].name, site.args[a], recorded, context, event.args);
                        used = event.args.size();
                        continue;
                    }
                    if (used == event.args.size()) event.args.emplace_back();
                    EventArg& slot = event.args[used++];
                    slot.name = spec.args[a].name;
                    slot.value = recorded(site.args[a].plain, context);
                }
                event.args.resize(used);
                // Registers are in the record when asked for (TraceRequest::
                // registers), else consumers see rip only; rip is the probe's
                // address either way. Hold needs a stopped thread, which this
                // engine never has: it acts as Continue (the API refuses a
                // hold callback with this engine). Detach takes the probes
                // out after this drain (run).
                regs.rip = site.address;
                if (consumer_->on_hit(event, regs) == HitAction::Detach) {
                    if (event.pid == t.pid) t.release_requested = true;
                    else if (t.child_detach_noted.insert(event.pid).second)
                        note("process " + std::to_string(event.pid) +
                             ": a followed child shares its parent's probes in the inline engine and stays traced");
                }
            }
            tail += rec->size;
            // Room back to the writer as we go, not after the whole ring:
            // a writer waiting for room (--no-drop) runs beside us.
            if (++consumed % 256 == 0) __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
}

namespace {

// The durations a region's agent counted for each probe (kSiteLatency),
// added to `stats`: each is a hit too.
void add_latencies(abi::Header* h, std::vector<ProbeStats>& stats) {
    for (uint32_t probe = 0; probe < h->latency_probes && probe < stats.size(); ++probe) {
        const abi::Latency* table = abi::latency_of(h, probe);
        ProbeStats& s = stats[probe];
        for (uint32_t k = 0; k < latency::kBuckets; ++k) {
            const uint64_t n = __atomic_load_n(&table->counts[k], __ATOMIC_RELAXED);
            if (!n) continue;
            if (s.latency.empty()) s.latency.resize(latency::kBuckets);
            s.latency[k] += n;
            s.hits += n;
        }
        s.latency_max_ns = std::max(s.latency_max_ns, __atomic_load_n(&table->max_ns, __ATOMIC_RELAXED));
    }
}

}  // namespace

std::vector<ProbeStats> InlineEngine::stats() const {
    std::vector<ProbeStats> out = stats_;
    for (const auto& t : targets_) {
        if (!t->region) continue;
        add_latencies(t->region, out);
        for (size_t i = 0; i < t->sites.size(); ++i) {
            if (t->sites[i].probe_id >= out.size()) continue;  // internal
            out[t->sites[i].probe_id].hits += site_hits(*t, i);
            out[t->sites[i].probe_id].dropped += __atomic_load_n(&abi::sites_of(t->region)[i].dropped, __ATOMIC_RELAXED);
        }
    }
    return out;
}

// Moves the sites' counters into stats_ (the region is about to go, or to
// be reused for a new image) and forgets the sites.
void InlineEngine::bank_counters(Target& t) {
    // No agent writes now: the process is gone, or past an execve with
    // no probe placed yet.
    add_latencies(t.region, stats_);
    std::memset(abi::latency_of(t.region, 0), 0, t.region->latency_probes * sizeof(abi::Latency));
    for (size_t i = 0; i < t.sites.size(); ++i) {
        if (t.sites[i].probe_id >= stats_.size()) continue;  // internal
        stats_[t.sites[i].probe_id].hits += site_hits(t, i);
        stats_[t.sites[i].probe_id].dropped += __atomic_load_n(&abi::sites_of(t.region)[i].dropped, __ATOMIC_RELAXED);
    }
    t.sites.clear();
}

}  // namespace uprobe::engine::inline_engine

// The floor of the inline engine's per-hit cost: the trampolines alone,
// with handlers that do (almost) nothing, run in this process on a copy of
// bench/targets/hotloop_sites.S's `site_push` (the same bytes as
// make_trampoline gets from a traced program). Three loops of calls:
//   plain  - the function unpatched
//   entry  - its entry patched: trampoline, an empty handler, the displaced
//            instruction, back (an entry probe without its record)
//   pair   - the same, but the handler takes the return address (a return
//            probe's entry): the trampoline calls the displaced instruction,
//            the function returns to the landing, and the return trampoline
//            calls a handler that gives the address back (what a return
//            probe pays besides its record and its shadow-stack frame)
// Usage: trampoline_floor N  ->  "plain=X entry=Y pair=Z" (ns per call, the
// fastest of 20 rounds of N calls each)
#include <sys/mman.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "arch/x86_64/trampoline.hpp"

namespace {

using namespace uprobe::arch;

// push rbp; mov rbp, rsp; lea rax, [rdi+rsi]; pop rbp; ret
const std::vector<uint8_t> kSitePush = {0x55, 0x48, 0x89, 0xE5, 0x48, 0x8D, 0x04, 0x37, 0x5D, 0xC3};
constexpr size_t kRsp = 19;  // the frame's rsp word (user_regs_struct order)

// The return addresses taken, as a shadow stack would keep them.
uint64_t g_taken[64];
int g_depth;

extern "C" uint32_t keep_return(const uint64_t*, uint64_t, uint32_t) { return 0; }
extern "C" uint32_t take_return(const uint64_t* frame, uint64_t, uint32_t) {
    g_taken[g_depth++ & 63] = *reinterpret_cast<const uint64_t*>(frame[kRsp]);
    return 1;
}
extern "C" uint32_t give_return(uint64_t* frame, uint64_t, uint32_t) {
    *reinterpret_cast<uint64_t*>(frame[kRsp]) = g_taken[--g_depth & 63];
    return 0;
}

using Site = long (*)(long, long);

class Code {
public:
    Code() {
        void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            std::perror("mmap");
            std::exit(1);
        }
        base_ = static_cast<uint8_t*>(p);
    }
    uint64_t address(size_t offset) const { return reinterpret_cast<uint64_t>(base_ + offset); }
    void put(size_t offset, const std::vector<uint8_t>& bytes) { std::memcpy(base_ + offset, bytes.data(), bytes.size()); }

    // A copy of the site at `offset`, patched to a trampoline 2 KiB above
    // it when `handler` is given.
    Site site(size_t offset, uint64_t handler = 0, uint64_t return_code = 0) {
        put(offset, kSitePush);
        if (handler) {
            auto displaced = check_jump_site(kSitePush, address(offset), address(offset));
            TrampolineRequest r;
            r.site = address(offset);
            r.original = std::span<const uint8_t>(base_ + offset, kSitePush.size() + 16);
            r.displaced = displaced ? *displaced : 0;
            r.address = address(offset + 2048);
            r.handler = handler;
            r.return_code = return_code;
            auto t = make_trampoline(r);
            if (!t) {
                std::fprintf(stderr, "trampoline_floor: %s\n", t.error().message().c_str());
                std::exit(1);
            }
            put(offset + 2048, t->code);
            put(offset, t->patch);
        }
        return reinterpret_cast<Site>(base_ + offset);
    }

private:
    static constexpr size_t kSize = 1 << 16;
    uint8_t* base_;
};

double ns_per_call(Site site, long n) {
    double best = 0;
    long sum = 0;
    for (int round = 0; round < 20; ++round) {
        timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < n; ++i) sum += site(i, 1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = static_cast<double>(t1.tv_sec - t0.tv_sec) * 1e9 + static_cast<double>(t1.tv_nsec - t0.tv_nsec);
        if (round == 0 || ns < best) best = ns;
    }
    if (sum != 20 * (n * (n - 1) / 2 + n)) {
        std::fprintf(stderr, "trampoline_floor: the patched function computed a wrong sum\n");
        std::exit(1);
    }
    return best / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
    const long n = argc > 1 ? std::atol(argv[1]) : 1000000;
    Code code;
    const size_t return_code = 8 * 4096;
    code.put(return_code, make_return_trampoline(code.address(return_code), reinterpret_cast<uint64_t>(&give_return),
                                                 0, ReturnExit::kRet, false));
    Site plain = code.site(0);
    Site entry = code.site(4096, reinterpret_cast<uint64_t>(&keep_return));
    Site pair = code.site(2 * 4096, reinterpret_cast<uint64_t>(&take_return), code.address(return_code));
    std::printf("plain=%.2f entry=%.2f pair=%.2f\n", ns_per_call(plain, n), ns_per_call(entry, n),
                ns_per_call(pair, n));
    return 0;
}

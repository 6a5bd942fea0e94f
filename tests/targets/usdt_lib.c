// A shared library with SDT markers, linked (usdt_linked) and dlopen'ed
// (usdt_dlopen): usdt_lib:plain(i, -i) unconditionally and, while a tracer
// holds its semaphore up, usdt_lib:gated(i), for i in 0..n-1.
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

__attribute__((visibility("hidden"))) unsigned short usdt_lib_gated_semaphore
    __attribute__((section(".probes")));
__attribute__((visibility("hidden"))) unsigned short usdt_lib_plain_semaphore
    __attribute__((section(".probes")));

// Returns how many gated markers fired.
int usdt_lib_work(int n) {
    int fired = 0;
    for (int i = 0; i < n; ++i) {
        int negative = -i;
        STAP_PROBE2(usdt_lib, plain, i, negative);
        if (usdt_lib_gated_semaphore) {
            ++fired;
            STAP_PROBE1(usdt_lib, gated, i);
        }
    }
    return fired;
}

unsigned usdt_lib_semaphore(void) { return usdt_lib_gated_semaphore; }

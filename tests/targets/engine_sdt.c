// SDT markers: engine:plain(i, -i) for i in 0..4, unconditional; and
// engine:gated(i), fired only while a tracer holds its semaphore up. Prints
// how many gated markers fired (0 untraced, 5 when traced).
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <sys/sdt.h>

unsigned short engine_gated_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short engine_plain_semaphore __attribute__((unused)) __attribute__((section(".probes")));

int main(void) {
    int gated = 0;
    for (long i = 0; i < 5; ++i) {
        int negative = (int)-i;
        STAP_PROBE2(engine, plain, i, negative);
        if (engine_gated_semaphore) {
            ++gated;
            STAP_PROBE1(engine, gated, i);
        }
    }
    printf("gated %d\n", gated);
    return 0;
}

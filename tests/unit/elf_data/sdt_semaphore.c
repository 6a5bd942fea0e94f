/* A marker guarded by a semaphore: the tracer increments
   elftest_busy_semaphore while attached. */
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <sys/sdt.h>

__extension__ unsigned short elftest_busy_semaphore __attribute__((unused, section(".probes")));

void elf_test_busy(int value) {
    if (elftest_busy_semaphore) STAP_PROBE1(elftest, busy, value);
    printf("busy %d\n", value);
}

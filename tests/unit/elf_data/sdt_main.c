/* Test program for the ELF layer: SDT markers with register, memory and
   immediate arguments, a local function, a global object. Never run by the
   tests, only read; it prints so that the compiler keeps every value. */
#include <stdio.h>
#include <sys/sdt.h>

long elf_test_counter = 3;
void elf_test_busy(int value);

static __attribute__((noinline)) long elf_test_local_work(int x, long y) {
    long sum = x + y + elf_test_counter;
    STAP_PROBE2(elftest, args, x, y);
    STAP_PROBE(elftest, noargs);
    STAP_PROBE3(elftest, mixed, sum, 5, &elf_test_counter);
    STAP_PROBE1(elftest, global, elf_test_counter);
    return sum;
}

int main(int argc, char** argv) {
    (void)argv;
    long total = elf_test_local_work(argc, (long)argc * 7);
    elf_test_busy((int)total);
    printf("%ld\n", total);
    return 0;
}

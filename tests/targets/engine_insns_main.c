// Calls each function of engine_insns.S three times and prints the results.
#include <stdio.h>
#include <string.h>
#include <unistd.h>

long riprel_load(void);
void riprel_store(long);
long call_rel(void);
long jmp_rel(void);
long jcc_fn(long);
long loop_fn(long);
void ret_fn(void);
long push_rip(void);
void rep_movsb_fn(char *dst, const char *src, long n);
long syscall_getpid(void);
unsigned cpuid_fn(void);
long flags_roundtrip(long flags);

int main(void) {
    for (long round = 0; round < 3; ++round) {
        long before = riprel_load();
        riprel_store(before + round);
        char buffer[16] = {0};
        rep_movsb_fn(buffer, "hello, world", 12);
        ret_fn();
        printf("round %ld: load %lx stored %lx call %ld jmp %ld jcc %ld %ld loop %ld push %lx copy '%s' "
               "getpid %d cpuid %x\n",
               round, before, riprel_load(), call_rel(), jmp_rel(), jcc_fn(0), jcc_fn(1), loop_fn(10),
               push_rip(), buffer, syscall_getpid() == getpid(), cpuid_fn());
        // CF, PF, AF, ZF, SF, DF, OF, none, all (bit 1 is always set).
        static const long patterns[] = {0x3, 0x6, 0x12, 0x42, 0x82, 0x402, 0x802, 0x2, 0xcd7};
        for (int i = 0; i < 9; ++i) printf(" %lx", flags_roundtrip(patterns[i]));
        printf("\n");
    }
    return 0;
}

// Target for attach/detach and refused-request tests of SDT semaphores.
// Prints "ready"; then each SIGUSR1 runs one round of ten iterations of
//
//   if (usdt_gated_semaphore) STAP_PROBE1(usdt, gated, i)
//   if (usdt_badarg_semaphore) usdt:badarg
//
// and prints "round R fired F semaphores G B": how many gated markers
// fired in that round and both semaphores' values. SIGTERM ends it.
// usdt:badarg's argument specs are written by hand below: "8@%fs:0x28" is
// a segment-relative operand that a tracer cannot evaluate from registers
// alone, and "-4@%edi" is an ordinary one.
#define _SDT_HAS_SEMAPHORES 1
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/sdt.h>

unsigned short usdt_gated_semaphore __attribute__((section(".probes")));
unsigned short usdt_badarg_semaphore __attribute__((section(".probes")));

// The note layout is the one sys/sdt.h emits (see _SDT_ASM_BODY there).
__attribute__((noinline)) static void badarg(int i) {
    __asm__ volatile(
        "990: nop\n"
        ".pushsection .note.stapsdt,\"?\",\"note\"\n"
        ".balign 4\n"
        ".4byte 992f-991f, 994f-993f, 3\n"
        "991: .asciz \"stapsdt\"\n"
        "992: .balign 4\n"
        "993: .8byte 990b\n"
        ".8byte _.stapsdt.base\n"
        ".8byte usdt_badarg_semaphore\n"
        ".asciz \"usdt\"\n"
        ".asciz \"badarg\"\n"
        ".asciz \"8@%%fs:0x28 -4@%%edi\"\n"
        "994: .balign 4\n"
        ".popsection\n"
        ".ifndef _.stapsdt.base\n"
        ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"
        ".weak _.stapsdt.base\n"
        ".hidden _.stapsdt.base\n"
        "_.stapsdt.base: .space 1\n"
        ".size _.stapsdt.base, 1\n"
        ".popsection\n"
        ".endif\n" ::"D"(i));
}

int main(void) {
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGUSR1);
    sigaddset(&wanted, SIGTERM);
    sigprocmask(SIG_BLOCK, &wanted, NULL);
    printf("ready\n");
    fflush(stdout);
    for (int round = 1;; ++round) {
        int sig = sigwaitinfo(&wanted, NULL);
        if (sig < 0 && errno == EINTR) {  // a tracer attaching interrupts the wait
            --round;
            continue;
        }
        if (sig != SIGUSR1) break;
        int fired = 0;
        for (int i = 0; i < 10; ++i) {
            if (usdt_gated_semaphore) {
                ++fired;
                STAP_PROBE1(usdt, gated, i);
            }
            if (usdt_badarg_semaphore) badarg(i);
        }
        printf("round %d fired %d semaphores %u %u\n", round, fired, (unsigned)usdt_gated_semaphore,
               (unsigned)usdt_badarg_semaphore);
        fflush(stdout);
    }
    return 0;
}

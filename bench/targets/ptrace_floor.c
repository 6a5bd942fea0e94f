// The floor of any ptrace design: the cost of one breakpoint stop and
// resume with the least work a tracer can do (wait, read registers, write
// rip, continue), tracer and tracee pinned to the same CPU.
// Usage: ptrace_floor N  ->  prints "ns_per_stop=X"
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);  // inherited by the child
    int pipefd[2];
    if (pipe(pipefd)) return 1;
    pid_t child = fork();
    if (child == 0) {
        raise(SIGSTOP);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < n; i++) __asm__ volatile("int3");
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
        printf("ns_per_stop=%.1f\n", ns / n);
        return 0;
    }
    if (ptrace(PTRACE_SEIZE, child, 0, 0)) return 1;
    int status;
    waitpid(child, &status, 0);  // the SIGSTOP
    ptrace(PTRACE_CONT, child, 0, 0);
    for (;;) {
        if (waitpid(child, &status, 0) < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
        if (WSTOPSIG(status) == SIGTRAP) {
            struct user_regs_struct regs;
            ptrace(PTRACE_GETREGS, child, 0, &regs);
            ptrace(PTRACE_POKEUSER, child, (void*)__builtin_offsetof(struct user_regs_struct, rip), (void*)regs.rip);
            ptrace(PTRACE_CONT, child, 0, 0);
        } else {
            ptrace(PTRACE_CONT, child, 0, (void*)(long)WSTOPSIG(status));
        }
    }
    return 0;
}

// A guarded marker before and after fork(). Parent: three usdt:gated(0)
// checks, fork, wait for the child, three more usdt:gated(2). Child: three
// usdt:gated(1). Each process prints how many of its guarded markers fired
// and its semaphore's value at the end:
//
//   child fired C semaphore S
//   parent fired P semaphore S
//
// Untraced all are 0. The child inherits the parent's memory, and with it
// a semaphore raised by a tracer, by copy.
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <sys/sdt.h>
#include <sys/wait.h>
#include <unistd.h>

unsigned short usdt_gated_semaphore __attribute__((section(".probes")));

static int checks(int which) {
    int fired = 0;
    for (int i = 0; i < 3; ++i) {
        if (usdt_gated_semaphore) {
            ++fired;
            STAP_PROBE1(usdt, gated, which);
        }
    }
    return fired;
}

int main(void) {
    int fired = checks(0);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        int mine = checks(1);
        printf("child fired %d semaphore %u\n", mine, (unsigned)usdt_gated_semaphore);
        return 0;
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    fired += checks(2);
    printf("parent fired %d semaphore %u\n", fired, (unsigned)usdt_gated_semaphore);
    return 0;
}

// Target for hold tests that count exactly: names itself (comm) after
// argv[1], says "ready", then for each SIGUSR1 runs one round of exactly
// three round_work() calls and says "round R done"; SIGTERM ends it with
// "rounds=R bad=B" (B counts calls whose result was not intact).
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>

__attribute__((noinline)) long round_work(long round, long k) { return round * 10 + k; }

int main(int argc, char** argv) {
    if (argc > 1) prctl(PR_SET_NAME, argv[1], 0, 0, 0);
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGUSR1);
    sigaddset(&wanted, SIGTERM);
    sigprocmask(SIG_BLOCK, &wanted, NULL);
    printf("ready\n");
    fflush(stdout);
    long round = 0, bad = 0;
    for (;;) {
        int signal = sigwaitinfo(&wanted, NULL);
        if (signal == SIGTERM) break;
        if (signal != SIGUSR1) continue;
        for (long k = 0; k < 3; ++k) bad += round_work(round, k) != round * 10 + k;
        printf("round %ld done\n", round);
        fflush(stdout);
        round++;
    }
    printf("rounds=%ld bad=%ld\n", round, bad);
    return 0;
}

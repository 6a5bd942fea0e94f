// Parent calls work(1) 100 times, forks a child that calls work(2) 100
// times, then calls work(3) 100 times. Both print their sums.
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long work(long what) { return what * 10; }

static long run(long what) {
    long sum = 0;
    for (int i = 0; i < 100; ++i) sum += work(what);
    return sum;
}

int main(void) {
    long first = run(1);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("child %ld\n", run(2));
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("parent %ld %ld child-status %d\n", first, run(3), status);
    return 0;
}

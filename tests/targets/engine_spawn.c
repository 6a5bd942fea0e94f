// posix_spawn (a vfork: the child shares our memory until it execs) of
// itself three times with "child", which calls work(5); the parent calls
// work(1) before and work(2) after. Prints the sum of everything.
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

__attribute__((noinline)) long work(long x) { return x; }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) return (int)work(5) - 5;
    long sum = work(1);
    char *child_argv[] = {argv[0], "child", NULL};
    for (int i = 0; i < 3; ++i) {
        pid_t pid;
        if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, child_argv, environ) != 0) return 1;
        int status = 0;
        waitpid(pid, &status, 0);
        sum += 10 + status;
    }
    sum += work(2);
    printf("spawned sum %ld\n", sum);
    return 0;
}

// Target of the return-probe tests (engine_return_test.cpp). Each mode
// prints what it computed, so a traced run can be compared with an
// untraced one; every return value is known by construction.
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) long square(long x) { return x * x; }

// depth(n) returns n; its frames return 0, 1, ..., n, innermost first.
__attribute__((noinline)) long depth(long n) { return n == 0 ? 0 : depth(n - 1) + 1; }

// What a program that walks its own stack sees: the return address, which
// instruction-mode return probes never change.
__attribute__((noinline)) unsigned long own_return_address(void) {
    return (unsigned long)__builtin_return_address(0);
}

// Sleeps `us` microseconds: a call of known least duration.
__attribute__((noinline)) long nap(long us) {
    struct timespec t = {0, us * 1000};
    while (nanosleep(&t, &t) != 0) {
    }
    return us;
}

__attribute__((noinline)) double half(double x) { return x / 2; }
__attribute__((noinline)) float third(float x) { return x / 3; }

// Three probed functions nested: outer(x) = middle(x) + 1 = inner(x) * 2 + 1.
__attribute__((noinline)) long inner(long x) { return x + 10; }
__attribute__((noinline)) long middle(long x) { return inner(x) * 2; }
__attribute__((noinline)) long outer(long x) { return middle(x) + 1; }

static jmp_buf jump_target;
static sigjmp_buf sigjump_target;

// Recurses n levels, then leaves every level at once by longjmp.
__attribute__((noinline)) long jumper(long n) {
    if (n == 0) longjmp(jump_target, 1);
    return jumper(n - 1) + 1;
}
__attribute__((noinline)) long sigjumper(long n) {
    if (n == 0) siglongjmp(sigjump_target, 1);
    return sigjumper(n - 1) + 1;
}

// Forks inside a probed function: both processes return from it.
__attribute__((noinline)) long forker(long x) {
    pid_t pid = fork();
    if (pid < 0) exit(3);
    return pid == 0 ? x * 2 : x * 3;
}

// Waits for one byte on `fd` at the bottom of a recursion: the test detaches
// while every level is live.
static int wait_fd = -1;
__attribute__((noinline)) void bottom(void) {
    char byte;
    while (read(wait_fd, &byte, 1) < 0) {}
}
__attribute__((noinline)) long waiting_depth(long n) {
    if (n == 0) {
        bottom();
        return 0;
    }
    return waiting_depth(n - 1) + 1;
}

// Strings at entry: suffixes(s, m) recurses m levels on s + 1 and
// returns strlen(s); leap(s, m) does the same but leaves by longjmp.
static const char* const labels[] = {"alpha", "beta", "gamma", "delta"};
__attribute__((noinline)) long label_length(const char* s) { return (long)strlen(s); }
__attribute__((noinline)) long suffixes(const char* s, long m) { return m == 0 ? label_length(s) : suffixes(s + 1, m - 1) + 1; }
__attribute__((noinline)) long leap(const char* s, long m) {
    if (m == 0) longjmp(jump_target, 1);
    return leap(s + 1, m - 1) + 1;
}

static long per_thread = 0;
static void* thread_main(void* arg) {
    long base = (long)arg * 1000000;
    long sum = 0;
    for (long i = 0; i < per_thread; ++i) sum += square(base + i);
    return (void*)sum;
}

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "basic";
    long n = argc > 2 ? atol(argv[2]) : 100;
    if (strcmp(mode, "basic") == 0) {
        long sum = 0;
        for (long i = 0; i < n; ++i) sum += square(i);
        printf("sum %ld\n", sum);
    } else if (strcmp(mode, "nap") == 0) {
        long slept = 0;
        for (long i = 0; i < n; ++i) slept += nap(1000);
        printf("slept %ld us\n", slept);
    } else if (strcmp(mode, "caller") == 0) {
        for (long i = 0; i < n; ++i) printf("main+%lx\n", own_return_address() - (unsigned long)&main);
    } else if (strcmp(mode, "float") == 0) {
        double dsum = 0;
        float fsum = 0;
        for (long i = 0; i < n; ++i) {
            dsum += half((double)i + 0.5);
            fsum += third((float)i);
        }
        printf("%.3f %.3f\n", dsum, (double)fsum);
    } else if (strcmp(mode, "nested") == 0) {
        long sum = 0;
        for (long i = 0; i < n; ++i) sum += outer(i);
        printf("nested %ld\n", sum);
    } else if (strcmp(mode, "labels") == 0) {
        long sum = 0;
        for (long i = 0; i < n; ++i) {
            if (setjmp(jump_target) == 0) leap(labels[i % 4], 3);
            sum += suffixes(labels[i % 4], 2);
        }
        printf("labels %ld\n", sum);
    } else if (strcmp(mode, "recurse") == 0) {
        printf("depth %ld\n", depth(n));
    } else if (strcmp(mode, "longjmp") == 0) {
        long rounds = 0;
        for (int round = 0; round < 3; ++round) {
            if (setjmp(jump_target) == 0) jumper(n);
            else rounds++;
            if (sigsetjmp(sigjump_target, 1) == 0) sigjumper(n);
            else rounds++;
            printf("after jumps %ld: %ld\n", rounds, square(round + 2));
        }
    } else if (strcmp(mode, "threads") == 0) {
        enum { kThreads = 4 };
        per_thread = n;
        pthread_t threads[kThreads];
        for (long t = 0; t < kThreads; ++t) pthread_create(&threads[t], NULL, thread_main, (void*)(t + 1));
        for (long t = 0; t < kThreads; ++t) {
            void* sum;
            pthread_join(threads[t], &sum);
            printf("thread %ld: %ld\n", t + 1, (long)sum);
        }
    } else if (strcmp(mode, "fork") == 0) {
        long got = forker(n);
        if (got == n * 2) {
            printf("child %ld\n", got);
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        wait(&status);
        printf("parent %ld, child %s\n", got, WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ok" : "crashed");
    } else if (strcmp(mode, "detach") == 0) {
        wait_fd = argc > 3 ? atoi(argv[3]) : 0;
        printf("waited %ld\n", waiting_depth(n));
    } else {
        return 2;
    }
    return 0;
}

// dlopen()s the library named by argv[1] and calls plugin_fn(i) for i in
// 0..49. With "wait" as argv[2] it first prints "ready" and waits for a
// line on stdin (so a tracer can attach before the library exists in it).
// With "reopen N" it does that N times, with a dlclose after each (the
// library usually comes back at the same address).
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    const int rounds = argc > 3 && strcmp(argv[2], "reopen") == 0 ? atoi(argv[3]) : 1;
    for (int round = 0; round < rounds; ++round) {
        void *lib = dlopen(argv[1], RTLD_NOW);
        if (!lib) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        int (*fn)(int) = (int (*)(int))dlsym(lib, "plugin_fn");
        long sum = 0;
        for (int i = 0; i < 50; ++i) sum += fn(i);
        printf("plugin sum %ld\n", sum);
        if (rounds > 1) dlclose(lib);
    }
    return 0;
}

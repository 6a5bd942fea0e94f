// Loads the library named by argv[1] (RTLD_NOW), prints "ready" and waits
// for a signal: a process for bench/attach.sh to put probes into.
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2 || !dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL)) {
        fprintf(stderr, "library_holder: %s\n", argc < 2 ? "usage: library_holder LIBRARY" : dlerror());
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    pause();
    return 0;
}

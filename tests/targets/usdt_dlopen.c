// dlopen()s the library at argv[1] (libusdt_lib.so), calls its
// usdt_lib_work(4) and prints "fired F semaphore S" (0 and 0 untraced).
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    int (*work)(int) = (int (*)(int))dlsym(lib, "usdt_lib_work");
    unsigned (*semaphore)(void) = (unsigned (*)(void))dlsym(lib, "usdt_lib_semaphore");
    if (!work || !semaphore) return 1;
    int fired = work(4);
    printf("fired %d semaphore %u\n", fired, semaphore());
    return 0;
}

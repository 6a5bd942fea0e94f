// Throws and catches an int N times (N = argv[1]). libstdc++ fires its
// libstdcxx:throw marker once per throw (arguments: the exception object,
// its std::type_info) and libstdcxx:catch once per catch. Prints the
// address of typeid(int) and of each caught exception object, so a test
// can check the markers' pointer arguments:
//
//   typeinfo 0x...
//   caught I at 0x...     (one line per throw)
#include <cstdio>
#include <cstdlib>
#include <typeinfo>

__attribute__((noinline)) static void thrower(int i) { throw i; }

int main(int argc, char **argv) {
    int n = argc > 1 ? std::atoi(argv[1]) : 3;
    std::printf("typeinfo %p\n", static_cast<const void *>(&typeid(int)));
    for (int i = 0; i < n; ++i) {
        try {
            thrower(i);
        } catch (int &caught) {
            std::printf("caught %d at %p\n", caught, static_cast<void *>(&caught));
        }
    }
    return 0;
}

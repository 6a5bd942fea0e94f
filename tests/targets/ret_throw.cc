// C++ exceptions thrown through probed frames (engine_return_test.cpp):
// the traced run must print exactly what the untraced run prints.
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

static int destroyed = 0;
struct Guard {
    ~Guard() { ++destroyed; }
};

// Throws from n levels down; a Guard per level runs a cleanup (the
// unwinder resumes through _Unwind_Resume after each).
__attribute__((noinline)) int thrower(int n) {
    Guard guard;
    if (n == 0) throw std::runtime_error("boom");
    return thrower(n - 1) + 1;
}

__attribute__((noinline)) int catcher(int n) {
    try {
        return thrower(n);
    } catch (const std::exception& e) {
        std::printf("caught %s\n", e.what());
        return -n;
    }
}

// Rethrows once from a nested handler.
__attribute__((noinline)) int rethrower(int n) {
    try {
        return thrower(n);
    } catch (...) {
        throw;
    }
}

__attribute__((noinline)) int calm(int n) { return n + 100; }

int main(int argc, char** argv) {
    int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
    for (int i = 0; i < rounds; ++i) {
        std::printf("catcher %d\n", catcher(4));
        try {
            rethrower(2);
        } catch (const std::exception& e) {
            std::printf("rethrown %s\n", e.what());
        }
        std::printf("calm %d\n", calm(i));
    }
    std::printf("destroyed %d\n", destroyed);
    return 0;
}

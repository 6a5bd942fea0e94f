// Switches that gcc -O2 compiles to jump tables (an indirect jmp through a
// table in .rodata), for instruction-mode return probes
// (engine_return_test.cpp checks the jmp with objdump). Built as a PIE
// (relative table: movslq + add) and without PIC (absolute table:
// jmp *TABLE(,%rdi,8)). Each call's value is known by construction.
#include <stdio.h>
#include <stdlib.h>

volatile long sink;  // side effects keep gcc from turning the switch into a value table

__attribute__((noipa)) long pick(long x) {
    switch (x) {
    case 0: sink = 5; return 1;
    case 1: sink = 7; return x + 17;
    case 2: sink = 9; return x ^ 5;
    case 3: sink = 2; return x << 4;
    case 4: sink = 1; return x - 40;
    case 5: sink = 8; return x * x;
    case 6: sink = 3; return 106;
    case 7: sink = 4; return 77;
    default: return -1;
    }
}

// A 32-bit index: the table code zero-extends it first.
__attribute__((noipa)) int pick32(unsigned x) {
    switch (x) {
    case 0: sink = 15; return 10;
    case 1: sink = 17; return 11;
    case 2: sink = 19; return 12;
    case 3: sink = 12; return 13;
    case 4: sink = 11; return 14;
    case 5: sink = 18; return 15;
    case 6: sink = 13; return 16;
    default: return -2;
    }
}

// A byte index: compared as a byte, zero-extended for the table.
__attribute__((noipa)) int pick8(unsigned char c) {
    switch (c) {
    case 'a': sink = 1; return 100;
    case 'b': sink = 2; return 200;
    case 'c': sink = 3; return 300;
    case 'd': sink = 4; return 400;
    case 'e': sink = 5; return 500;
    case 'f': sink = 6; return 600;
    default: return 0;
    }
}

int main(int argc, char** argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long sum = 0;
    for (long i = 0; i < n; ++i) {
        sum += pick(i % 10);
        sum += pick32((unsigned)(i % 9));
        sum += pick8((unsigned char)('a' - 1 + i % 8));
    }
    printf("switch %ld\n", sum);
    return 0;
}

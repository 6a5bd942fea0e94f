// C++ test program for the DWARF layer: namespaced and overloaded
// functions, found by DW_AT_name or by linkage (mangled) name.
#include <cstdio>

namespace ns {
__attribute__((noinline)) int scale(int v) { return v * 3; } // MARK:scale
__attribute__((noinline)) double scale(double v) { return v * 2.5; }
}  // namespace ns

int main(int argc, char**) {
    std::printf("%d %f\n", ns::scale(argc), ns::scale(argc * 1.0));
    return 0;
}

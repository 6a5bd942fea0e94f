# A Python program whose calls are known by construction, for tracing
# python3.11's SDT markers (tests/integration/cli_usdt_test.cpp).
#
#   main() calls f(i) for i in 0..4; f(i) calls g(i), and g(i + 1) as well
#   when i is odd; main() then sums gen(3) (three yields and a return), and
#   resumes two suspended generators with close() and throw(), which is when
#   CPython 3.11 fires function__entry (see docs/probes.md).
#
# Options (each run prints the same "total ..." line on stdout):
#   --profile           also report the return events sys.setprofile sees for
#                       this file's functions on stderr ("return FUNC LINE"):
#                       an oracle from the interpreter itself
#   --semaphores A B    also print the 16-bit values at addresses A and B
#                       (the markers' semaphores) on stderr at the end
import sys


def profile(frame, event, arg):
    if event == "return" and frame.f_code.co_filename == __file__:
        print("return", frame.f_code.co_name, frame.f_lineno, file=sys.stderr)


if "--profile" in sys.argv:
    sys.setprofile(profile)


def g(n):
    return n * 2


def f(n):
    if n % 2:
        return g(n) + g(n + 1)
    return g(n)


def gen(k):
    for j in range(k):
        yield j


class Stop(Exception):
    pass


def main():
    total = 0
    for i in range(5):
        total += f(i)
    total += sum(gen(3))
    closed = gen(10)
    next(closed)
    closed.close()
    thrown = gen(10)
    next(thrown)
    try:
        thrown.throw(Stop())
    except Stop:
        total += 100
    print("total", total)


main()
sys.setprofile(None)
if "--semaphores" in sys.argv:
    import ctypes
    at = sys.argv.index("--semaphores")
    values = [ctypes.c_ushort.from_address(int(a, 0)).value for a in sys.argv[at + 1:at + 3]]
    print("semaphores", *values, file=sys.stderr)

// Calls usdt_lib_work(4) of the linked libusdt_lib.so and prints
// "fired F semaphore S" (0 and 0 untraced).
#include <stdio.h>

int usdt_lib_work(int n);
unsigned usdt_lib_semaphore(void);

int main(void) {
    int fired = usdt_lib_work(4);
    printf("fired %d semaphore %u\n", fired, usdt_lib_semaphore());
    return 0;
}

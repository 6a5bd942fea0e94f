// Deep recursion in Go (engine_return_test.cpp): the runtime moves the
// goroutine stack while frames are live, so entry stack pointers go stale;
// every return must still be reported with its value.
package main

import "fmt"

//go:noinline
func rec(n int) int {
	var pad [64]int
	pad[n%64] = n
	if n == 0 {
		return pad[0]
	}
	return rec(n-1) + 1 + pad[(n+1)%64]*0
}

func main() {
	total := 0
	for i := 0; i < 5; i++ {
		total += rec(2000)
	}
	fmt.Println("rec", total)
}

// A Go program with return probes (engine_return_test.cpp): Go's runtime
// checks return addresses, so only instruction-mode return probes are
// safe. Results come back in rax (Go's register ABI).
package main

import (
	"fmt"
	"os"
	"strconv"
)

//go:noinline
func addmul(a, b int) int {
	return a*b + a
}

func main() {
	n := 10
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	sum := 0
	for i := 0; i < n; i++ {
		sum += addmul(i, 7)
	}
	fmt.Println("go sum", sum)
}

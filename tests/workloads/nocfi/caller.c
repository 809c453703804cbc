/* Callers of spin_no_cfi (spin.S), with unwind information: one calls it directly, one
 * through a pointer (as OpenBLAS calls its kernels). Before each call, `litter` leaves
 * 200 frames of a recursion (made through a pointer, so that their return addresses
 * follow indirect calls) on the stack where spin_no_cfi's buffer will lie: a return
 * address found there is not spin_no_cfi's, and must not be taken for it. */
#include <stdint.h>

void spin_no_cfi(uint64_t count);

typedef uint64_t (*step_fn)(int);
typedef void (*spin_fn)(uint64_t);
static uint64_t litter_step(int depth);
static volatile step_fn step = litter_step;
static volatile spin_fn spin = spin_no_cfi;

__attribute__((noinline)) static uint64_t litter_step(int depth)
{
    volatile char pad[48];
    pad[0] = (char)depth;
    return depth ? step(depth - 1) + (uint64_t)pad[0] : 0;
}

__attribute__((noinline)) uint64_t litter(void) { return step(200); }

__attribute__((noinline)) void spin_directly(uint64_t count) { spin_no_cfi(count); }

__attribute__((noinline)) void spin_through_pointer(uint64_t count) { spin(count); }

uint64_t work(uint64_t count)
{
    uint64_t left = litter();
    spin_directly(count);
    left += litter();
    spin_through_pointer(count);
    return left;
}

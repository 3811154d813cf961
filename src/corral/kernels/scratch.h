/*
 * Per-thread scratch buffers shared by corral's C kernels: each module keeps its own
 * thread-local pointer and capacity (calls from several Python threads run at once with the
 * GIL released) and grows them here. Header-only, like half.h.
 */
#ifndef CORRAL_SCRATCH_H
#define CORRAL_SCRATCH_H

#include <stdlib.h>

/* The buffer *buf of at least `bytes`, 64-byte aligned; grown (never shrunk) in 64 KiB steps
 * so that steady-state calls allocate nothing. NULL (and an empty buffer) when it cannot be
 * allocated. */
static inline void *grow_scratch(void **buf, size_t *cap, size_t bytes) {
    if (bytes > *cap) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
        const size_t want = (bytes + 65535) & ~(size_t)65535;
        void *p = NULL;
        if (posix_memalign(&p, 64, want) != 0) return NULL;
        *buf = p;
        *cap = want;
    }
    return *buf;
}

#endif

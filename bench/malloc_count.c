/* malloc_count.so — LD_PRELOAD allocation counter for `make bench`.
 *
 * Counts calls to malloc, calloc, realloc, posix_memalign, aligned_alloc,
 * memalign and valloc (and operator new, which calls malloc) per process.
 * Each process (nginx's master and every forked worker) writes its counts
 * into its own file MALLOC_COUNT_DIR/<pid>, a shared mapping of two 64-bit
 * counters (calls, bytes), so the bench reads a worker's counts before and
 * after N requests without signals or any help from the process.
 *
 * Build: cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static volatile uint64_t dummy[2];
static volatile uint64_t *counts = dummy;

static void map_counts(void) {
    const char *dir = getenv("MALLOC_COUNT_DIR");
    if (dir == NULL) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, 16) == 0) {
        void *p = mmap(NULL, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) counts = (volatile uint64_t *)p;
    }
    close(fd);
}

static void child_after_fork(void) {
    counts = dummy;
    map_counts();
}

__attribute__((constructor)) static void init(void) {
    map_counts();
    pthread_atfork(NULL, NULL, child_after_fork);
}

static inline void count(size_t n) {
    __atomic_add_fetch(&counts[0], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&counts[1], n, __ATOMIC_RELAXED);
}

void *malloc(size_t n) {
    count(n);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    count(a * b);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    count(n);
    return __libc_realloc(p, n);
}
void *memalign(size_t al, size_t n) {
    count(n);
    return __libc_memalign(al, n);
}
void *aligned_alloc(size_t al, size_t n) {
    count(n);
    return __libc_memalign(al, n);
}
void *valloc(size_t n) {
    count(n);
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}
int posix_memalign(void **out, size_t al, size_t n) {
    count(n);
    void *p = __libc_memalign(al, n);
    if (p == NULL) return 12; /* ENOMEM */
    *out = p;
    return 0;
}

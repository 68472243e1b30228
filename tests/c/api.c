/* The whole C allocation API, as a program sees it: alignment, usable
 * size, overflow, NULL, realloc edges, foreign pointers, errno.
 *
 * Run against glibc alone it must pass too (every check below is glibc's
 * documented behaviour, except aligned_alloc's EINVAL, which glibc 2.38
 * adopted); with the argument "pymem" it also checks that PyMalloc is the
 * one answering (pool block sizes, mallinfo2's arenas), and with
 * "pymem-debug" that the debug allocator is (usable size = size asked).
 * Prints "api: N checks passed" and exits 0, or names the first failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc's own allocator, which a preloaded malloc does not replace: blocks
 * from here are "foreign" to PyMalloc. */
extern void *__libc_malloc(size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_calloc(size_t, size_t);
/* C23, absent from older glibc headers and libraries: weak, so the program
 * runs without them. */
extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));

static int checks;
/* Sizes the compiler must not reason about (it knows malloc's contract). */
static volatile size_t huge = SIZE_MAX, half = SIZE_MAX / 2, big = (size_t)1 << 33;
#define CHECK(cond)                                                            \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            fprintf(stderr, "api.c:%d: check failed: %s\n", __LINE__, #cond); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static int aligned(const void *p, size_t align) {
    return ((uintptr_t)p & (align - 1)) == 0;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

static void sizes_and_alignment(void) {
    void *blocks[6000];
    for (size_t n = 0; n < 6000; n++) {
        blocks[n] = malloc(n);
        CHECK(blocks[n] != NULL);
        CHECK(aligned(blocks[n], 16));
        CHECK(malloc_usable_size(blocks[n]) >= n);
        fill(blocks[n], n, (unsigned)n);
    }
    for (size_t n = 0; n < 6000; n++) {
        CHECK(intact(blocks[n], n, (unsigned)n));
        free(blocks[n]);
    }
    /* malloc(0) gives distinct pointers. */
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);
}

static void errno_and_failure(void) {
    errno = 0;
    void *p = malloc(100);
    CHECK(p && errno == 0); /* success leaves errno alone */
    free(p);
    errno = 0;
    CHECK(malloc(huge) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(half) == NULL && errno == ENOMEM);
}

static void calloc_cases(void) {
    /* Dirty blocks of every small size first, so calloc must really zero. */
    for (size_t n = 1; n <= 2048; n += 13) {
        unsigned char *d = malloc(n);
        memset(d, 0xAB, n);
        free(d);
        unsigned char *z = calloc(1, n);
        CHECK(z != NULL);
        for (size_t i = 0; i < n; i++) CHECK(z[i] == 0);
        free(z);
    }
    unsigned char *z = calloc(1000, 100); /* large */
    CHECK(z != NULL);
    for (size_t i = 0; i < 100000; i++) CHECK(z[i] == 0);
    free(z);
    errno = 0;
    CHECK(calloc(half, 3) == NULL && errno == ENOMEM); /* overflow */
    errno = 0;
    CHECK(calloc(big, big) == NULL && errno == ENOMEM);
    void *e = calloc(0, 16);
    CHECK(e != NULL);
    free(e);
}

static void realloc_cases(void) {
    /* realloc(NULL, n) is malloc(n). */
    unsigned char *p = realloc(NULL, 40);
    CHECK(p && aligned(p, 16));
    fill(p, 40, 1);
    /* Grow through every regime: small -> small -> large -> larger. */
    size_t sizes[] = {40, 64, 100, 480, 512, 513, 1000, 5000, 100000, 2000000};
    size_t have = 40;
    for (size_t i = 1; i < sizeof sizes / sizeof *sizes; i++) {
        p = realloc(p, sizes[i]);
        CHECK(p && aligned(p, 16));
        CHECK(intact(p, have, 1));
        fill(p, sizes[i], 1);
        have = sizes[i];
    }
    /* ... and shrink back down to small. */
    size_t down[] = {100000, 3000, 600, 200, 24, 1};
    for (size_t i = 0; i < sizeof down / sizeof *down; i++) {
        p = realloc(p, down[i]);
        CHECK(p != NULL);
        CHECK(intact(p, down[i], 1));
        CHECK(malloc_usable_size(p) >= down[i]);
    }
    /* A failed realloc leaves the block alone. */
    errno = 0;
    CHECK(realloc(p, half) == NULL && errno == ENOMEM);
    CHECK(intact(p, 1, 1));
    /* realloc(p, 0) frees p and returns NULL (glibc). */
    CHECK(realloc(p, 0) == NULL);
    /* Staying in place while the block fits. */
    unsigned char *q = malloc(100);
    fill(q, 100, 3);
    unsigned char *r = realloc(q, malloc_usable_size(q));
    CHECK(r != NULL && intact(r, 100, 3));
    free(r);
    /* reallocarray checks its product. */
    unsigned char *a = reallocarray(NULL, 10, 10);
    CHECK(a != NULL);
    fill(a, 100, 5);
    errno = 0;
    CHECK(reallocarray(a, half, 3) == NULL && errno == ENOMEM);
    CHECK(intact(a, 100, 5));
    a = reallocarray(a, 100, 10);
    CHECK(a != NULL && intact(a, 100, 5));
    free(a);
}

static void aligned_cases(void) {
    for (size_t align = sizeof(void *); align <= 65536; align *= 2) {
        size_t sizes[] = {0, 1, 24, align / 2 + 1, align, 300, 512, 513, 5000};
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t n = sizes[i];
            void *p = (void *)0x1;
            CHECK(posix_memalign(&p, align, n) == 0);
            CHECK(p != NULL && aligned(p, align));
            CHECK(malloc_usable_size(p) >= n);
            fill(p, n, 9);
            CHECK(intact(p, n, 9));
            free(p);
            p = aligned_alloc(align, n);
            CHECK(p != NULL && aligned(p, align));
            free(p);
            p = memalign(align, n);
            CHECK(p != NULL && aligned(p, align));
            free(p);
        }
    }
    void *p = (void *)0x1;
    CHECK(posix_memalign(&p, 24, 10) == EINVAL && p == (void *)0x1);
    CHECK(posix_memalign(&p, 4, 10) == EINVAL && p == (void *)0x1);
    CHECK(posix_memalign(&p, 0, 10) == EINVAL && p == (void *)0x1);
    CHECK(posix_memalign(&p, 64, half) == ENOMEM && p == (void *)0x1);
    /* memalign rounds a non-power-of-two alignment up... */
    void *m = memalign(24, 10);
    CHECK(m != NULL && aligned(m, 32));
    free(m);
    /* ... and refuses one above SIZE_MAX / 2 + 1. */
    errno = 0;
    CHECK(memalign(half + 2, 10) == NULL && errno == EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v != NULL && aligned(v, (size_t)page));
    free(v);
    v = pvalloc(10);
    CHECK(v != NULL && aligned(v, (size_t)page));
    CHECK(malloc_usable_size(v) >= (size_t)page);
    free(v);
    errno = 0;
    CHECK(pvalloc(huge - 10) == NULL && errno == ENOMEM);
}

static void aligned_alloc_rejects_bad_alignment(void) {
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
}

/* Blocks of glibc's own allocator, freed and resized through ours (the
 * debug allocator reports them instead: it vouches only for its own). */
static void foreign_pointers(void) {
    for (size_t n = 1; n < 3000; n += 97) {
        unsigned char *f = __libc_malloc(n);
        CHECK(f != NULL);
        CHECK(malloc_usable_size(f) >= n);
        fill(f, n, 11);
        f = realloc(f, n + 50);
        CHECK(f != NULL && intact(f, n, 11));
        free(f);
    }
    free(__libc_memalign(4096, 100));
    free(__libc_calloc(10, 10));
}

/* libc's own allocations (strdup, getline, the stdio buffer). */
static void libc_allocations(void) {
    char *s = strdup("a string duplicated by libc");
    CHECK(s && strcmp(s, "a string duplicated by libc") == 0);
    free(s);
    FILE *tmp = tmpfile();
    CHECK(tmp != NULL);
    fputs("line one\nline two\n", tmp);
    rewind(tmp);
    char *line = NULL;
    size_t cap = 0;
    CHECK(getline(&line, &cap, tmp) == 9 && strcmp(line, "line one\n") == 0);
    free(line);
    fclose(tmp);
}

static void c23_sized_frees(void) {
    if (!free_sized || !free_aligned_sized) return;
    free_sized(malloc(100), 100);
    free_sized(malloc(5000), 5000);
    free_sized(NULL, 0);
    free_aligned_sized(aligned_alloc(64, 128), 64, 128);
    free_aligned_sized(aligned_alloc(8192, 100), 8192, 100);
    checks++;
}

static void *hand_over(void *arg) {
    /* Free, on this thread, blocks another thread allocated. */
    void **blocks = arg;
    for (int i = 0; i < 1000; i++) {
        CHECK(intact(blocks[i], 40 + i % 600, (unsigned)i));
        free(blocks[i]);
    }
    return NULL;
}

static void cross_thread(void) {
    static void *blocks[1000];
    for (int i = 0; i < 1000; i++) {
        blocks[i] = malloc(40 + i % 600);
        fill(blocks[i], 40 + i % 600, (unsigned)i);
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, hand_over, blocks) == 0);
    CHECK(pthread_join(t, NULL) == 0);
}

/* A thread's first request, medium: a pool block too (the thread binds
 * its heap on the way, as for a small one). */
static void *first_block_medium(void *arg) {
    (void)arg;
    void *p = malloc(1000);
    size_t usable = malloc_usable_size(p);
    free(p);
    return (void *)usable;
}

static void introspection(int pymem) {
    struct mallinfo2 info = mallinfo2();
    CHECK(info.uordblks > 0);
    (void)malloc_trim(0);
    if (!pymem) return;
    CHECK(info.arena >= 1 << 20); /* at least one PyMalloc arena */
    if (pymem == 2) {
        /* The debug allocator's usable size is the size asked for. */
        void *d = malloc(24);
        CHECK(malloc_usable_size(d) == 24);
        free(d);
        return;
    }
    /* Pool blocks come in classes of 16 bytes: a 24-byte request gets 32
     * usable bytes (glibc would say 24). */
    void *p = malloc(24);
    CHECK(malloc_usable_size(p) == 32);
    free(p);
    /* Medium ones, up to 4,096 bytes, come in four classes per doubling
     * (640, 768, 896, 1,024, 1,280, ...: glibc would say 1,000 and 2,040);
     * a realloc across the top class moves to glibc and back, keeping the
     * contents. */
    unsigned char *m = malloc(1000);
    CHECK(malloc_usable_size(m) == 1024);
    memset(m, 0x5a, 1000);
    m = realloc(m, 2040);
    CHECK(m != NULL && malloc_usable_size(m) == 2048);
    CHECK(m[0] == 0x5a && m[999] == 0x5a);
    m[2039] = 0x33;
    m = realloc(m, 5000);
    CHECK(m != NULL && m[999] == 0x5a && m[2039] == 0x33);
    m = realloc(m, 600);
    CHECK(m != NULL && m[599] == 0x5a);
    free(m);
    pthread_t thread;
    void *usable = NULL;
    CHECK(pthread_create(&thread, NULL, first_block_medium, NULL) == 0);
    CHECK(pthread_join(thread, &usable) == 0);
    CHECK((size_t)usable == 1024);
}

int main(int argc, char **argv) {
    int pymem = argc < 2                            ? 0
                : strcmp(argv[1], "pymem") == 0       ? 1
                : strcmp(argv[1], "pymem-debug") == 0 ? 2
                                                      : 0;
    sizes_and_alignment();
    errno_and_failure();
    calloc_cases();
    realloc_cases();
    aligned_cases();
    if (pymem) aligned_alloc_rejects_bad_alignment();
    if (pymem != 2) foreign_pointers();
    libc_allocations();
    c23_sized_frees();
    cross_thread();
    introspection(pymem);
    printf("api: %d checks passed\n", checks);
    return 0;
}

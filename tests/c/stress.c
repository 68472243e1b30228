/* A multi-threaded stress of the malloc family: blocks of random sizes
 * (mostly small, some large, some aligned, some zeroed, some resized)
 * are filled with a pattern, handed between threads through shared
 * mailboxes, checked and freed by whichever thread takes them; threads are
 * created and exit in waves (thread churn), leaving their blocks to others.
 *
 *   stress [waves] [threads per wave] [operations per thread]
 *
 * Prints "stress: N blocks checked" and exits 0, or names the corruption. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAILBOXES 16
#define SLOTS 256
#define LOCAL 64

/* Every block starts with this header; the rest is a pattern derived from
 * the seed. */
struct header {
    size_t size;
    uint64_t seed;
};

struct mailbox {
    pthread_mutex_t lock;
    unsigned char *slots[SLOTS];
    int count;
};

static struct mailbox boxes[MAILBOXES];
static long ops_per_thread = 20000;
static uint64_t checked;
static pthread_mutex_t checked_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t next(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void die(const char *what, const unsigned char *p, size_t size) {
    fprintf(stderr, "stress: %s: block %p of %zu bytes\n", what, (const void *)p, size);
    abort();
}

static size_t random_size(uint64_t *rng) {
    uint64_t r = next(rng) % 100;
    if (r < 70) return sizeof(struct header) + next(rng) % 240;
    if (r < 90) return 256 + next(rng) % 3840;
    if (r < 98) return 4096 + next(rng) % 61440;
    return 65536 + next(rng) % 400000;
}

static void fill(unsigned char *p, size_t size, uint64_t seed) {
    struct header h = {size, seed};
    memcpy(p, &h, sizeof h);
    for (size_t i = sizeof h; i < size; i++) p[i] = (unsigned char)(seed >> (i % 56)) ^ (unsigned char)i;
}

static void check(const unsigned char *p) {
    struct header h;
    memcpy(&h, p, sizeof h);
    if (h.size < sizeof h || h.size > 1 << 20) die("header damaged", p, h.size);
    if (malloc_usable_size((void *)p) < h.size) die("usable size too small", p, h.size);
    for (size_t i = sizeof h; i < h.size; i++)
        if (p[i] != ((unsigned char)(h.seed >> (i % 56)) ^ (unsigned char)i)) die("contents damaged", p, h.size);
}

/* A new block, by one of the family's functions. */
static unsigned char *make(uint64_t *rng) {
    size_t size = random_size(rng);
    unsigned char *p;
    switch (next(rng) % 8) {
    case 0: {
        p = calloc(1, size);
        if (!p) die("calloc failed", NULL, size);
        for (size_t i = 0; i < size; i++)
            if (p[i]) die("calloc not zeroed", p, size);
        break;
    }
    case 1: {
        void *q = NULL;
        size_t align = (size_t)16 << (next(rng) % 9);
        if (posix_memalign(&q, align, size)) die("posix_memalign failed", NULL, size);
        if ((uintptr_t)q & (align - 1)) die("misaligned", q, size);
        p = q;
        break;
    }
    case 2: {
        /* Grown from a smaller block. */
        p = malloc(sizeof(struct header) + 8);
        if (!p) die("malloc failed", NULL, 24);
        fill(p, sizeof(struct header) + 8, 7);
        p = realloc(p, size);
        if (!p) die("realloc failed", NULL, size);
        break;
    }
    default:
        p = malloc(size);
        if (!p) die("malloc failed", NULL, size);
    }
    if ((uintptr_t)p & 15) die("not 16-aligned", p, size);
    fill(p, size, next(rng));
    return p;
}

static void retire(unsigned char *p, uint64_t *rng) {
    check(p);
    if (next(rng) % 8 == 0) {
        /* Resize on the way out (by another thread than the allocator's). */
        struct header h;
        memcpy(&h, p, sizeof h);
        size_t size = random_size(rng);
        p = realloc(p, size);
        if (!p) die("realloc failed", NULL, size);
        size_t keep = size < h.size ? size : h.size;
        for (size_t i = sizeof h; i < keep; i++)
            if (p[i] != ((unsigned char)(h.seed >> (i % 56)) ^ (unsigned char)i)) die("realloc lost data", p, keep);
    }
    free(p);
}

static void *worker(void *arg) {
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    unsigned char *local[LOCAL] = {0};
    uint64_t mine = 0;
    for (long op = 0; op < ops_per_thread; op++) {
        uint64_t r = next(&rng) % 4;
        if (r == 0) {
            /* Same-thread churn. */
            int i = (int)(next(&rng) % LOCAL);
            if (local[i]) {
                retire(local[i], &rng);
                mine++;
            }
            local[i] = make(&rng);
        } else {
            struct mailbox *box = &boxes[next(&rng) % MAILBOXES];
            unsigned char *taken = NULL, *given = NULL;
            if (r == 1) given = make(&rng);
            pthread_mutex_lock(&box->lock);
            if (given && box->count < SLOTS) {
                box->slots[box->count++] = given;
                given = NULL;
            } else if (!given && box->count > 0) {
                taken = box->slots[--box->count];
            }
            pthread_mutex_unlock(&box->lock);
            if (given) taken = given; /* box full: retire it ourselves */
            if (taken) {
                retire(taken, &rng);
                mine++;
            }
        }
    }
    /* Half of the thread's own blocks are left to others, in the boxes. */
    for (int i = 0; i < LOCAL; i++) {
        if (!local[i]) continue;
        struct mailbox *box = &boxes[next(&rng) % MAILBOXES];
        pthread_mutex_lock(&box->lock);
        if (i % 2 == 0 && box->count < SLOTS) {
            box->slots[box->count++] = local[i];
            local[i] = NULL;
        }
        pthread_mutex_unlock(&box->lock);
        if (local[i]) {
            retire(local[i], &rng);
            mine++;
        }
    }
    pthread_mutex_lock(&checked_lock);
    checked += mine;
    pthread_mutex_unlock(&checked_lock);
    return NULL;
}

int main(int argc, char **argv) {
    int waves = argc > 1 ? atoi(argv[1]) : 8;
    int threads = argc > 2 ? atoi(argv[2]) : 6;
    if (argc > 3) ops_per_thread = atol(argv[3]);
    for (int i = 0; i < MAILBOXES; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    for (int wave = 0; wave < waves; wave++) {
        for (int t = 0; t < threads; t++)
            if (pthread_create(&ids[t], NULL, worker, (void *)(uintptr_t)(wave * threads + t + 1))) die("pthread_create", NULL, 0);
        for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    }
    uint64_t rng = 99;
    for (int i = 0; i < MAILBOXES; i++)
        while (boxes[i].count > 0) {
            retire(boxes[i].slots[--boxes[i].count], &rng);
            checked++;
        }
    free(ids);
    printf("stress: %llu blocks checked\n", (unsigned long long)checked);
    return 0;
}

/* Producer/consumer: producers allocate blocks of 16..256 bytes and hand
 * them in batches through a shared queue to consumers, which free them: every
 * free is a cross-thread free (the pattern of xmalloc-test and of
 * message-passing servers).
 *   prodcons [pairs] [blocks per producer (millions)] */
#include <pthread.h>
#include <stdio.h>
#include "common.h"

#define BATCH 256
#define QUEUE 64

struct batch { unsigned char *blocks[BATCH]; };

static struct batch *queue[QUEUE];
static int head, tail, count, producers_left;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static long per_producer;

static void *producer(void *arg) {
    uint64_t rng = (uintptr_t)arg * 7919 + 1;
    for (long done = 0; done < per_producer; done += BATCH) {
        struct batch *b = malloc(sizeof *b);
        for (int i = 0; i < BATCH; i++) {
            size_t size = 16 + xorshift(&rng) % 241;
            b->blocks[i] = malloc(size);
            touch(b->blocks[i], size, (unsigned char)i);
        }
        pthread_mutex_lock(&lock);
        while (count == QUEUE) pthread_cond_wait(&not_full, &lock);
        queue[tail] = b;
        tail = (tail + 1) % QUEUE;
        count++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    producers_left--;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consumer(void *arg) {
    unsigned long sum = 0;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (count == 0 && producers_left > 0) pthread_cond_wait(&not_empty, &lock);
        if (count == 0) {
            pthread_mutex_unlock(&lock);
            break;
        }
        struct batch *b = queue[head];
        head = (head + 1) % QUEUE;
        count--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < BATCH; i++) {
            sum += b->blocks[i][0];
            free(b->blocks[i]);
        }
        free(b);
    }
    *(unsigned long *)arg = sum;
    return NULL;
}

int main(int argc, char **argv) {
    int pairs = (int)arg_or(argc, argv, 1, 2);
    per_producer = arg_or(argc, argv, 2, 4) * 1000000L;
    producers_left = pairs;
    pthread_t p[64], c[64];
    unsigned long sums[64];
    for (int i = 0; i < pairs; i++) {
        pthread_create(&p[i], NULL, producer, (void *)(uintptr_t)(i + 1));
        pthread_create(&c[i], NULL, consumer, &sums[i]);
    }
    unsigned long total = 0;
    for (int i = 0; i < pairs; i++) {
        pthread_join(p[i], NULL);
        pthread_join(c[i], NULL);
        total += sums[i];
    }
    printf("prodcons: %lu\n", total);
    return 0;
}

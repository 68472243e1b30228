/* Under the preload, glibc's own allocator (which serves the large blocks)
 * must be set up before main, while the process has one thread: glibc's
 * fork only protects an allocator that is already initialised. Its first
 * allocation extends the program break, so the break has moved from where
 * the kernel put it (start_brk, field 47 of /proc/self/stat). Nothing here
 * allocates before the check.
 *   glibc_ready   (prints "ready" or "not ready") */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    uintptr_t now = (uintptr_t)sbrk(0);
    char buf[4096];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0) return 2;
    close(fd);
    buf[n] = 0;
    /* Fields are separated by spaces; the command name (field 2) is in
     * parentheses and may hold spaces, so count from its closing one. */
    char *p = buf;
    for (char *q = buf; *q; q++)
        if (*q == ')') p = q;
    int field = 2;
    while (*p && field < 47) {
        if (*p == ' ') field++;
        p++;
    }
    if (field != 47) return 3;
    uintptr_t start = (uintptr_t)strtoull(p, NULL, 10);
    puts(now != start ? "ready" : "not ready");
    return 0;
}

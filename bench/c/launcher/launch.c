/* Runs a program and prints its wall time and peak RSS on stderr as
 * "launch: <seconds> <KiB>". A small launcher, because a child's ru_maxrss
 * counts the memory of the process it was forked from until it execs.
 *   launch [NAME=VALUE]... program [args]
 * The variables are set in the child just before it execs the program, as
 * env(1) would, but without a process of its own: ru_maxrss is the largest
 * resident set of every image the child ran, and env's own (1.4 MiB, its
 * locale set-up) was larger than a small C program's on glibc, so routing
 * the preloaded runs through it raised their figure to env's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int first = 1;
    while (first < argc && strchr(argv[first], '=') != NULL) first++;
    if (first >= argc) return 2;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 1; i < first; i++) putenv(argv[i]);
        execv(argv[first], argv + first);
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0) return 2;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double wall = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    fprintf(stderr, "launch: %.6f %ld\n", wall, usage.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * sysprobe: raw syscalls for the seccomp tests and bench/seccomp.py, run inside a container
 * (busybox has no tool for most of these). Built static at test time: gcc -static -O2.
 *
 *   sysprobe call NR [ARG...]     syscall(NR, ARG...), numbers in C syntax (0x.., decimal)
 *   sysprobe clone FLAGS          clone(FLAGS | SIGCHLD); the child exits at once
 *   sysprobe loop rw N            N syscalls: read 1 byte of /dev/zero, write it to /dev/null
 *   sysprobe loop personality N   N x personality(0xffffffff), the query, which the
 *                                 containers-common profile filters by argument
 *   sysprobe loop getppid N       N x getppid, allowed by any argument
 *
 * call and clone print "ok RESULT" or "errno N" and exit 0; loop prints "ns_per_syscall X",
 * the cheapest of 20 equal slices of the loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long num(const char *s)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || *end) {
        fprintf(stderr, "sysprobe: %s is not a number\n", s);
        exit(2);
    }
    return v;
}

static int report(long r)
{
    if (r == -1)
        printf("errno %d\n", errno);
    else
        printf("ok %ld\n", r);
    return 0;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The cheapest of BATCHES slices of the loop, per syscall: a slice the scheduler preempted
 * (other load on the machine) only makes that slice slower. */
#define BATCHES 20

static int loop(const char *what, unsigned long n)
{
    char c = 0;
    int in = -1, out = -1, per_iter = 1;
    enum { RW, PERSONALITY, GETPPID } kind;
    if (!strcmp(what, "rw")) {
        kind = RW;
        per_iter = 2;
        in = open("/dev/zero", O_RDONLY);
        out = open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0) {
            perror("sysprobe: open /dev/zero or /dev/null");
            return 1;
        }
    } else if (!strcmp(what, "personality")) {
        kind = PERSONALITY;
    } else if (!strcmp(what, "getppid")) {
        kind = GETPPID;
    } else {
        fprintf(stderr, "sysprobe: unknown loop %s\n", what);
        return 2;
    }
    unsigned long per_batch = n / per_iter / BATCHES;
    if (per_batch == 0)
        per_batch = 1;
    double best = -1;
    for (int b = 0; b < BATCHES; b++) {
        double start = now_ns();
        for (unsigned long i = 0; i < per_batch; i++) {
            long r = 0;
            switch (kind) {
            case RW:
                r = (read(in, &c, 1) == 1 && write(out, &c, 1) == 1) ? 0 : -1;
                break;
            case PERSONALITY:
                r = syscall(SYS_personality, 0xffffffffUL);
                break;
            case GETPPID:
                syscall(SYS_getppid);
                break;
            }
            if (r == -1) {
                perror("sysprobe: loop");
                return 1;
            }
        }
        double ns = (now_ns() - start) / (double)(per_batch * per_iter);
        if (best < 0 || ns < best)
            best = ns;
    }
    printf("ns_per_syscall %.2f\n", best);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "call") && argc <= 9) {
        unsigned long a[6] = {0};
        for (int i = 3; i < argc; i++)
            a[i - 3] = num(argv[i]);
        return report(syscall(num(argv[2]), a[0], a[1], a[2], a[3], a[4], a[5]));
    }
    if (argc == 3 && !strcmp(argv[1], "clone")) {
        long pid = syscall(SYS_clone, num(argv[2]) | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        return report(pid == -1 ? -1 : 0);
    }
    if (argc == 4 && !strcmp(argv[1], "loop"))
        return loop(argv[2], num(argv[3]));
    fprintf(stderr, "usage: sysprobe call NR [ARG...] | clone FLAGS | loop rw|personality|getppid N\n");
    return 2;
}

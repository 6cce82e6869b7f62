/*
 * Faults for hookd's integration tests, injected with LD_PRELOAD into the real binary.
 *
 * FAULT_SHIM_CTL names a 16-byte control file the test writes while hookd runs; this shim maps
 * it shared, so every change is seen at once:
 *   bytes 0..8   int64  wall-clock offset in milliseconds (CLOCK_REALTIME, gettimeofday, time)
 *   bytes 8..12  int32  WAL fsyncs still to fail with EIO (counted down)
 *   bytes 12..16 int32  milliseconds each WAL fsync is delayed by
 * A WAL fsync is an fsync or fdatasync of a file whose name ends in ".log" (RocksDB's WAL).
 * The monotonic clock is left alone: that is the point of the clock tests.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct ctl {
    int64_t clock_offset_ms;
    int32_t fsync_fail;
    int32_t fsync_delay_ms;
};

static struct ctl *ctl;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    const char *path = getenv("FAULT_SHIM_CTL");
    if (!path) return;
    int fd = open(path, O_RDWR);
    if (fd < 0) return;
    void *p = mmap(NULL, sizeof(struct ctl), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) ctl = p;
}

static struct ctl *get_ctl(void) {
    pthread_once(&once, init);
    return ctl;
}

static int64_t offset_ms(void) {
    struct ctl *c = get_ctl();
    return c ? __atomic_load_n(&c->clock_offset_ms, __ATOMIC_RELAXED) : 0;
}

static void shift(struct timespec *ts, int64_t ms) {
    int64_t ns = (int64_t)ts->tv_nsec + (ms % 1000) * 1000000;
    ts->tv_sec += ms / 1000 + ns / 1000000000;
    ns %= 1000000000;
    if (ns < 0) { ns += 1000000000; ts->tv_sec -= 1; }
    ts->tv_nsec = ns;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        int64_t ms = offset_ms();
        if (ms) shift(ts, ms);
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    (void)tz;
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

static int is_wal(int fd) {
    char link[64], name[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, name, sizeof name - 1);
    if (n < 4) return 0;
    name[n] = 0;
    return strcmp(name + n - 4, ".log") == 0;
}

/* 1: fail this WAL sync. */
static int wal_fault(int fd) {
    struct ctl *c = get_ctl();
    if (!c || !is_wal(fd)) return 0;
    int32_t delay = __atomic_load_n(&c->fsync_delay_ms, __ATOMIC_RELAXED);
    if (delay > 0) usleep((useconds_t)delay * 1000);
    int32_t left = __atomic_load_n(&c->fsync_fail, __ATOMIC_RELAXED);
    while (left > 0) {
        if (__atomic_compare_exchange_n(&c->fsync_fail, &left, left - 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return 1;
    }
    return 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    if (wal_fault(fd)) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    if (wal_fault(fd)) { errno = EIO; return -1; }
    return real(fd);
}

/*
 * C <-> C benchmark of libvchan-kvm (two processes, host vchan through the
 * daemon named by KVMCHAN_RUNTIME_DIR) with an AF_UNIX socketpair baseline
 * measured the same way in the same run. Prints one JSON object per line.
 *
 *   kvmchan-bench [--quick] [--seconds S] [--reps N] [--ring BYTES] [--only throughput|pingpong] [--pin A,B]
 *                 [--probe-writes N] [--min-round-trips N] [--progress]
 *
 * --probe-writes: writes of the calibration run and the least per run (default 4096);
 * --min-round-trips: the least round trips per ping-pong run (default 2000). Both only
 * exist to make a smoke run (npm run bench -- --smoke) short. --progress prints a line
 * "progress <test> <impl> <size> <run>" on stderr as each run starts (for a watchdog).
 *
 * --pin puts the two processes on the given CPUs (the same CPU twice shows the
 * cost of waiting when the peer cannot run meanwhile).
 *
 * Throughput: the server writes fixed-size chunks (64 B, 1 KiB, 64 KiB) with
 * blocking stream writes; the client reads with a 256 KiB buffer. Ping-pong:
 * 64-byte packets echoed back (send/recv), round trips per second and latency.
 */
#define _GNU_SOURCE
#include <libvchan.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds_per_test = 1.0;
static int show_progress;
static int pin_parent = -1, pin_child = -1; /* --pin A,B: CPUs of the two processes */
static size_t ring = 1 << 20;
static int port_base = 60000;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        perror("bench: sched_setaffinity");
}

/* A transport: either a vchan or a socket. */
struct xport {
    libvchan_t *v;
    int fd;
};

static int x_write(struct xport *x, const void *b, size_t n)
{
    if (x->v != NULL)
        return libvchan_write(x->v, b, n);
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(x->fd, (const char *)b + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return (int)n;
}

static int x_read(struct xport *x, void *b, size_t n)
{
    if (x->v != NULL)
        return libvchan_read(x->v, b, n);
    ssize_t r;
    do
        r = read(x->fd, b, n);
    while (r < 0 && errno == EINTR);
    return r <= 0 ? -1 : (int)r;
}

static int x_recv_all(struct xport *x, void *b, size_t n)
{
    if (x->v != NULL)
        return libvchan_recv(x->v, b, n);
    size_t done = 0;
    while (done < n) {
        int r = x_read(x, (char *)b + done, n - done);
        if (r < 0)
            return -1;
        done += (size_t)r;
    }
    return (int)n;
}

static int x_send(struct xport *x, const void *b, size_t n)
{
    return x->v != NULL ? libvchan_send(x->v, b, n) : x_write(x, b, n);
}

/*
 * Bulk: the writer (server side) writes `chunk`-byte pieces for about
 * seconds_per_test, then sends nothing more and waits; the reader counts bytes
 * until it has read the announced total. The total is decided in advance from
 * a calibration so both sides agree without a side channel.
 */
static void bulk_writer(struct xport *x, size_t chunk, uint64_t total)
{
    char *buf = malloc(chunk);
    memset(buf, 0xA5, chunk);
    for (uint64_t done = 0; done < total; done += chunk)
        if (x_write(x, buf, chunk) != (int)chunk) {
            fprintf(stderr, "bench: write failed\n");
            exit(1);
        }
    free(buf);
}

static double bulk_reader(struct xport *x, uint64_t total)
{
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    uint64_t done = 0;
    double t0 = 0;
    while (done < total) {
        int r = x_read(x, buf, cap);
        if (r <= 0) {
            fprintf(stderr, "bench: read failed after %llu\n", (unsigned long long)done);
            exit(1);
        }
        if (done == 0)
            t0 = now();
        done += (uint64_t)r;
    }
    free(buf);
    return now() - t0;
}

static double pingpong_client(struct xport *x, long iters)
{
    char msg[64] = { 1 };
    double t0 = now();
    for (long i = 0; i < iters; i++) {
        if (x_send(x, msg, sizeof(msg)) != (int)sizeof(msg) || x_recv_all(x, msg, sizeof(msg)) != (int)sizeof(msg)) {
            fprintf(stderr, "bench: ping-pong failed\n");
            exit(1);
        }
    }
    return now() - t0;
}

static void pingpong_server(struct xport *x, long iters)
{
    char msg[64];
    for (long i = 0; i < iters; i++)
        if (x_recv_all(x, msg, sizeof(msg)) != (int)sizeof(msg) || x_send(x, msg, sizeof(msg)) != (int)sizeof(msg))
            exit(1);
}

/* Runs `child` in a forked process connected to the parent by the transport. */
enum kind { VCHAN, SOCKET };

static void connect_pair(enum kind k, int port, struct xport *parent, struct xport *child_side, int *sv)
{
    memset(parent, 0, sizeof(*parent));
    memset(child_side, 0, sizeof(*child_side));
    if (k == SOCKET) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            perror("socketpair");
            exit(1);
        }
        int sz = (int)ring;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        parent->fd = sv[0];
        child_side->fd = sv[1];
        child_side->v = NULL;
    } else {
        parent->v = libvchan_server_init(0, port, ring, ring);
        if (parent->v == NULL) {
            fprintf(stderr, "bench: server_init: %s (is KVMCHAN_RUNTIME_DIR set to a running kvmchand?)\n",
                    strerror(errno));
            exit(1);
        }
    }
}

static struct xport child_connect(enum kind k, int port, struct xport *pre)
{
    if (k == SOCKET)
        return *pre;
    struct xport x = { .v = libvchan_client_init(0, port), .fd = -1 };
    if (x.v == NULL) {
        fprintf(stderr, "bench: client_init: %s\n", strerror(errno));
        _exit(1);
    }
    return x;
}

static void x_close(struct xport *x)
{
    if (x->v != NULL)
        libvchan_close(x->v);
    else if (x->fd >= 0)
        close(x->fd);
}

/* Bulk transfer of `total` bytes in `chunk` writes, parent reads; returns seconds. */
static const char *impl_name(enum kind k);

static void progress(const char *test, enum kind k, size_t size, int run)
{
    if (show_progress)
        fprintf(stderr, "progress %s %s %zu %d\n", test, impl_name(k), size, run);
}

static double run_bulk(enum kind k, size_t chunk, uint64_t total)
{
    struct xport p, c;
    int sv[2] = { -1, -1 };
    int port = port_base++;
    connect_pair(k, port, &p, &c, sv);
    pid_t pid = fork();
    if (pid == 0) {
        pin(pin_child);
        if (k == SOCKET)
            close(sv[0]);
        struct xport x = child_connect(k, port, &c);
        bulk_writer(&x, chunk, total);
        /* Let the reader finish before closing (a vchan reader drains anyway). */
        char b;
        x_read(&x, &b, 1);
        x_close(&x);
        _exit(0);
    }
    if (k == SOCKET)
        close(sv[1]);
    double secs = bulk_reader(&p, total);
    x_write(&p, "x", 1);
    x_close(&p);
    int st;
    waitpid(pid, &st, 0);
    return secs;
}

static double run_pingpong(enum kind k, long iters)
{
    struct xport p, c;
    int sv[2] = { -1, -1 };
    int port = port_base++;
    connect_pair(k, port, &p, &c, sv);
    pid_t pid = fork();
    if (pid == 0) {
        pin(pin_child);
        if (k == SOCKET)
            close(sv[0]);
        struct xport x = child_connect(k, port, &c);
        pingpong_server(&x, iters);
        char b;
        x_read(&x, &b, 1);
        x_close(&x);
        _exit(0);
    }
    if (k == SOCKET)
        close(sv[1]);
    double secs = pingpong_client(&p, iters);
    x_write(&p, "x", 1);
    x_close(&p);
    int st;
    waitpid(pid, &st, 0);
    return secs;
}

static const char *impl_name(enum kind k)
{
    return k == VCHAN ? "libvchan-kvm" : "unix-socketpair";
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAX_REPS 15
static int reps = 5;
static uint64_t probe_writes = 4096;
static long min_round_trips = 2000;
static const char *only; /* "throughput" or "pingpong" */

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            seconds_per_test = 0.2;
            reps = 3;
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds_per_test = atof(argv[++i]);
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            reps = reps < 1 ? 1 : reps > MAX_REPS ? MAX_REPS : reps;
        } else if (strcmp(argv[i], "--pin") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &pin_parent, &pin_child) != 2) {
                fprintf(stderr, "--pin wants two CPU numbers: A,B\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "--ring") == 0 && i + 1 < argc) {
            ring = strtoul(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "--probe-writes") == 0 && i + 1 < argc) {
            probe_writes = strtoull(argv[++i], NULL, 0);
            probe_writes = probe_writes < 1 ? 1 : probe_writes;
        } else if (strcmp(argv[i], "--progress") == 0) {
            show_progress = 1;
        } else if (strcmp(argv[i], "--min-round-trips") == 0 && i + 1 < argc) {
            min_round_trips = atol(argv[++i]);
            min_round_trips = min_round_trips < 1 ? 1 : min_round_trips;
        } else {
            fprintf(
                stderr,
                "usage: %s [--quick] [--seconds S] [--reps N] [--ring BYTES] [--only throughput|pingpong] [--pin A,B]"
                " [--probe-writes N] [--min-round-trips N] [--progress]\n",
                argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    pin(pin_parent);
    port_base += (int)(getpid() % 1000) * 64;
    /* Each figure is the median of `reps` runs of about seconds_per_test each: this
     * machine is a VM whose vCPUs are sometimes descheduled, single runs scatter. */
    static const size_t sizes[] = { 64, 1024, 65536 };
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]) && (only == NULL || strcmp(only, "throughput") == 0);
         si++) {
        for (int k = VCHAN; k <= SOCKET; k++) {
            uint64_t probe = sizes[si] * probe_writes;
            progress("throughput", (enum kind)k, sizes[si], 0);
            double t = run_bulk((enum kind)k, sizes[si], probe);
            uint64_t total = (uint64_t)((double)probe / (t > 1e-6 ? t : 1e-6) * seconds_per_test);
            total = total / sizes[si] * sizes[si];
            if (total < probe)
                total = probe;
            double rate[MAX_REPS];
            for (int r = 0; r < reps; r++) {
                progress("throughput", (enum kind)k, sizes[si], r + 1);
                rate[r] = (double)total / run_bulk((enum kind)k, sizes[si], total);
            }
            qsort(rate, (size_t)reps, sizeof(double), cmp_double);
            double med = rate[reps / 2];
            printf("{\"suite\":\"clib\",\"test\":\"throughput\",\"impl\":\"%s\",\"write_size\":%zu,\"ring\":%zu,"
                   "\"bytes_per_run\":%llu,\"runs\":%d,\"MiB_per_s\":%.1f,\"MiB_per_s_min\":%.1f,"
                   "\"MiB_per_s_max\":%.1f,\"msgs_per_s\":%.0f}\n",
                   impl_name((enum kind)k), sizes[si], ring, (unsigned long long)total, reps, med / 1048576.0,
                   rate[0] / 1048576.0, rate[reps - 1] / 1048576.0, med / (double)sizes[si]);
            fflush(stdout);
        }
    }
    for (int k = VCHAN; k <= SOCKET && (only == NULL || strcmp(only, "pingpong") == 0); k++) {
        progress("pingpong", (enum kind)k, 64, 0);
        double t = run_pingpong((enum kind)k, min_round_trips);
        long iters = (long)((double)min_round_trips / t * seconds_per_test);
        if (iters < min_round_trips)
            iters = min_round_trips;
        double rtt[MAX_REPS];
        for (int r = 0; r < reps; r++) {
            progress("pingpong", (enum kind)k, 64, r + 1);
            rtt[r] = run_pingpong((enum kind)k, iters) / (double)iters * 1e6;
        }
        qsort(rtt, (size_t)reps, sizeof(double), cmp_double);
        double med = rtt[reps / 2];
        printf(
            "{\"suite\":\"clib\",\"test\":\"pingpong\",\"impl\":\"%s\",\"message_size\":64,\"round_trips_per_run\":%ld,"
            "\"runs\":%d,\"rtt_us\":%.2f,\"rtt_us_min\":%.2f,\"rtt_us_max\":%.2f,\"round_trips_per_s\":%.0f}\n",
            impl_name((enum kind)k), iters, reps, med, rtt[0], rtt[reps - 1], 1e6 / med);
        fflush(stdout);
    }
    return 0;
}

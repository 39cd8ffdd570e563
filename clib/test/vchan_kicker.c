/*
 * A vchan server that kicks its peer as often as it can, for the shared-eventfd attack test
 * (test/clib/kick-attack.test.ts): non-blocking libvchan_write() and libvchan_send() of 16 bytes
 * in a loop until <bytes> went through, each of which kicks the client when it asked for it.
 * Written against libvchan.h only.
 *
 *   vchan_kicker <domain> <port> <bytes>
 *
 * Prints JSON lines: {"event":"listening"}, {"event":"connected"}, then
 * {"event":"done","calls":N,"bytes":B,"ms":T} — or exits 1 with a message on stderr.
 */
#define _GNU_SOURCE
#include <libvchan.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: vchan_kicker <domain> <port> <bytes>\n");
        return 2;
    }
    unsigned long long target = strtoull(argv[3], NULL, 0);
    libvchan_t *v = libvchan_server_init(atoi(argv[1]), atoi(argv[2]), 65536, 65536);
    if (v == NULL) {
        fprintf(stderr, "vchan_kicker: server init failed: %s\n", strerror(errno));
        return 1;
    }
    printf("{\"event\":\"listening\"}\n");
    fflush(stdout);
    struct timespec ms = { .tv_sec = 0, .tv_nsec = 1000000 };
    for (int i = 0; libvchan_is_open(v) != 1; i++) {
        if (i > 30000) {
            fprintf(stderr, "vchan_kicker: no client\n");
            return 1;
        }
        nanosleep(&ms, NULL);
    }
    printf("{\"event\":\"connected\"}\n");
    fflush(stdout);
    libvchan_set_blocking(v, false);
    char buf[16];
    memset(buf, 'k', sizeof(buf));
    unsigned long long bytes = 0;
    double t0 = now_ms();
    unsigned long long calls = 0;
    while (bytes < target) {
        int a = libvchan_write(v, buf, sizeof(buf));
        int b = libvchan_send(v, buf, sizeof(buf));
        calls += 2;
        if (a < 0 || b < 0) {
            fprintf(stderr, "vchan_kicker: after %llu bytes: %s\n", bytes, strerror(errno));
            return 1;
        }
        bytes += (unsigned)a + (unsigned)b;
        if (a == 0 && b == 0)
            sched_yield(); /* the ring is full: let the peer consume */
    }
    printf("{\"event\":\"done\",\"calls\":%llu,\"bytes\":%llu,\"ms\":%.1f}\n", calls, bytes, now_ms() - t0);
    fflush(stdout);
    libvchan_close(v);
    return 0;
}

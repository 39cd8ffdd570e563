/*
 * A vchan endpoint for interop tests, written against libvchan.h only.
 * Sends `send_bytes` pseudo-random bytes in random-sized writes from one
 * thread while another thread reads `recv_bytes` (full duplex, blocking
 * calls: one reader and one writer thread on one vchan), then prints a JSON
 * line with SHA-256 digests of both directions.
 *
 *   vchan_peer probe
 *   vchan_peer server <domain> <port> <send_bytes> <recv_bytes> [read_min write_min]
 *   vchan_peer client <domain> <port> <send_bytes> <recv_bytes>
 * Environment: KVMCHAN_TEST_SEED (data and chunk sizes); KVMCHAN_PEER_SELECT=1 makes the
 * reader wait the way Qubes programs do: select() on libvchan_fd_for_select(), then
 * libvchan_wait(), then non-blocking reads while libvchan_data_ready().
 */
#define _GNU_SOURCE
#include <libvchan.h>

#include "sha256.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

struct dir {
    libvchan_t *v;
    unsigned long long total, done, seed;
    char digest[65];
    int error;
};

static unsigned long long next_rand(unsigned long long *s)
{
    unsigned long long x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t chunk_size(unsigned long long *s)
{
    unsigned long long r = next_rand(s);
    switch (r & 3) {
    case 0: return 1 + (size_t)(r >> 8) % 64;
    case 1: return 1 + (size_t)(r >> 8) % 5000;
    default: return 1 + (size_t)(r >> 8) % CHUNK;
    }
}

static void *writer(void *arg)
{
    struct dir *d = arg;
    struct sha256 h;
    uint64_t *buf = malloc(CHUNK + 8);
    unsigned long long data = d->seed * 0x9E3779B97F4A7C15ULL + 1, sizes = d->seed + 77;
    sha256_init(&h);
    while (d->done < d->total) {
        size_t n = chunk_size(&sizes);
        if (n > d->total - d->done)
            n = (size_t)(d->total - d->done);
        for (size_t i = 0; i < (n + 7) / 8; i++)
            buf[i] = next_rand(&data);
        int rc = libvchan_write(d->v, buf, n);
        if (rc != (int)n) {
            fprintf(stderr, "vchan_peer: write returned %d (%s) after %llu bytes\n", rc, strerror(errno), d->done);
            d->error = 1;
            break;
        }
        sha256_update(&h, buf, n);
        d->done += n;
    }
    sha256_hex(&h, d->digest);
    free(buf);
    return NULL;
}

/* The Qubes event-loop pattern; 0 when there is nothing more to read, -1 on error. */
static int select_and_wait(libvchan_t *v)
{
    int fd = libvchan_fd_for_select(v);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    if (select(fd + 1, &r, NULL, NULL, NULL) < 0 && errno != EINTR)
        return -1;
    if (libvchan_wait(v) < 0)
        return -1;
    return libvchan_is_open(v) || libvchan_data_ready(v) > 0 ? 1 : 0;
}

static void *reader(void *arg)
{
    struct dir *d = arg;
    int use_select = getenv("KVMCHAN_PEER_SELECT") != NULL;
    struct sha256 h;
    uint8_t *buf = malloc(CHUNK);
    unsigned long long sizes = d->seed + 99;
    sha256_init(&h);
    while (d->done < d->total) {
        size_t n = chunk_size(&sizes);
        if (n > d->total - d->done)
            n = (size_t)(d->total - d->done);
        if (use_select && libvchan_data_ready(d->v) == 0) {
            int w = select_and_wait(d->v);
            if (w < 0) {
                fprintf(stderr, "vchan_peer: wait failed (%s) after %llu bytes\n", strerror(errno), d->done);
                d->error = 1;
                break;
            }
            if (w > 0)
                continue;
        }
        int rc = libvchan_read(d->v, buf, n);
        if (rc <= 0) {
            fprintf(stderr, "vchan_peer: read returned %d (%s) after %llu bytes\n", rc, strerror(errno), d->done);
            d->error = 1;
            break;
        }
        sha256_update(&h, buf, (size_t)rc);
        d->done += (unsigned long long)rc;
    }
    sha256_hex(&h, d->digest);
    free(buf);
    return NULL;
}

static int probe(void)
{
    const char *dir = getenv("KVMCHAN_RUNTIME_DIR");
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (dir == NULL ||
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/kvmchand.sock", dir) >= (int)sizeof(addr.sun_path))
        return 2;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "probe") == 0)
        return probe();
    if (argc < 6) {
        fprintf(stderr,
                "usage: vchan_peer server|client <domain> <port> <send_bytes> <recv_bytes> [read_min write_min]\n");
        return 2;
    }
    int server = strcmp(argv[1], "server") == 0;
    int domain = atoi(argv[2]), port = atoi(argv[3]);
    const char *s = getenv("KVMCHAN_TEST_SEED");
    unsigned long long seed = s != NULL ? strtoull(s, NULL, 0) : 12345;
    size_t rmin = argc > 7 ? strtoul(argv[6], NULL, 0) : 65536, wmin = argc > 7 ? strtoul(argv[7], NULL, 0) : 65536;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    libvchan_t *v = server ? libvchan_server_init(domain, port, rmin, wmin) : libvchan_client_init(domain, port);
    if (v == NULL) {
        fprintf(stderr, "vchan_peer: %s init failed: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (server) {
        printf("{\"event\":\"listening\",\"buffer_space\":%d}\n", libvchan_buffer_space(v));
        fflush(stdout);
    } else {
        printf("{\"event\":\"connected\"}\n");
        fflush(stdout);
    }
    struct dir out = { .v = v, .total = strtoull(argv[4], NULL, 0), .seed = seed + (unsigned)server };
    struct dir in = { .v = v, .total = strtoull(argv[5], NULL, 0), .seed = seed + 1000 + (unsigned)server };
    pthread_t tw, tr;
    pthread_create(&tw, NULL, writer, &out);
    pthread_create(&tr, NULL, reader, &in);
    pthread_join(tw, NULL);
    pthread_join(tr, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"event\":\"done\",\"sent\":%llu,\"sent_sha256\":\"%s\",\"received\":%llu,\"received_sha256\":\"%s\","
           "\"seconds\":%.3f}\n",
           out.done, out.digest, in.done, in.digest, secs);
    fflush(stdout);
    libvchan_close(v);
    return out.error || in.error ? 1 : 0;
}

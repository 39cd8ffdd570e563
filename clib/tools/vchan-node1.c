/*
 * vchan-node1: one-way streaming through a vchan, in random-sized chunks.
 * Written only against libvchan.h (build with pkg-config vchan-kvm).
 *
 *   vchan-node1 server|client read|write <domain> <port>
 *
 * The writer copies stdin into the vchan in chunks of 1..4999 bytes and closes
 * at end of input; the reader copies the vchan to stdout in random chunks until
 * the writer has closed and everything was read. The server uses the smallest
 * rings (1 KiB each way), so the chunks keep straddling the ring's wrap point.
 * The random seed is printed on stderr; set VCHAN_NODE_SEED to repeat a run.
 */
#include <libvchan.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHUNK 5000

static unsigned long rng_state;

static size_t chunk(void)
{
    rng_state = rng_state * 6364136223846793005UL + 1442695040888963407UL;
    return 1 + (size_t)((rng_state >> 33) % (MAX_CHUNK - 1));
}

static int write_stdout(const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int do_write(libvchan_t *v)
{
    char buf[MAX_CHUNK];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, chunk());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("vchan-node1: stdin");
            return 1;
        }
        if (n == 0)
            return 0;
        /* Blocking mode: libvchan_write returns only when everything is in the ring. */
        if (libvchan_write(v, buf, (size_t)n) != n) {
            fprintf(stderr, "vchan-node1: vchan write failed: %s\n", strerror(errno));
            return 1;
        }
    }
}

static int do_read(libvchan_t *v)
{
    char buf[MAX_CHUNK];
    for (;;) {
        int n = libvchan_read(v, buf, chunk());
        if (n < 0)
            return 0; /* the writer closed and the ring is drained */
        if (write_stdout(buf, (size_t)n) < 0) {
            perror("vchan-node1: stdout");
            return 1;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0) ||
        (strcmp(argv[2], "read") != 0 && strcmp(argv[2], "write") != 0)) {
        fprintf(stderr, "usage: %s server|client read|write <domain> <port>\n", argv[0]);
        return 2;
    }
    const char *s = getenv("VCHAN_NODE_SEED");
    rng_state = s != NULL ? strtoul(s, NULL, 0) : (unsigned long)time(NULL) ^ (unsigned long)getpid();
    fprintf(stderr, "vchan-node1: seed %lu\n", rng_state);

    int domain = atoi(argv[3]), port = atoi(argv[4]);
    libvchan_t *v =
        strcmp(argv[1], "server") == 0 ? libvchan_server_init(domain, port, 0, 0) : libvchan_client_init(domain, port);
    if (v == NULL) {
        fprintf(stderr, "vchan-node1: %s init failed: %s\n", argv[1], strerror(errno));
        return 1;
    }
    libvchan_set_blocking(v, true);
    /* A server that wrote everything and closed before its client arrived
     * would leave that client waiting for a server that no longer exists. */
    while (libvchan_is_open(v) == VCHAN_WAITING)
        libvchan_wait(v);
    int rc = strcmp(argv[2], "write") == 0 ? do_write(v) : do_read(v);
    libvchan_close(v);
    return rc;
}

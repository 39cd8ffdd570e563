/*
 * Programs written for Xen's libvchan, in Xen's call sequences (docs/clib.md, "Wake-ups"):
 * a client that select()s on libvchan_fd_for_select() before it ever calls
 * libvchan_data_ready() must wake at once when the server wrote before the client attached,
 * and a server blocked on a full ring must be released by such a client. The loop is the one
 * of Xen's vchan-node2: select, libvchan_wait, then read while data_ready.
 */
#define _GNU_SOURCE
#include <libvchan.h>

#include "harness.h"

#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

/* select() on the vchan fd; the timeout only turns a lost wake-up into a failure. */
static int select_readable(int fd)
{
    fd_set rfds;
    FD_ZERO(&rfds);
    FD_SET(fd, &rfds);
    struct timeval tv = { .tv_sec = 10 };
    int n;
    do
        n = select(fd + 1, &rfds, NULL, NULL, &tv);
    while (n < 0 && errno == EINTR);
    return n == 1;
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 131u + 7u);
}

/* The vchan-node2 receive loop until `total` bytes arrived; returns how many did. */
static size_t node2_receive(libvchan_t *c, size_t total)
{
    size_t got = 0;
    unsigned char buf[4096];
    while (got < total) {
        if (!select_readable(libvchan_fd_for_select(c))) {
            fprintf(stderr, "select timed out after %zu of %zu bytes\n", got, total);
            break;
        }
        if (libvchan_wait(c) < 0)
            break;
        while (libvchan_data_ready(c) > 0) {
            int n = libvchan_read(c, buf, sizeof(buf));
            if (n <= 0)
                return got;
            for (int i = 0; i < n; i++)
                if (buf[i] != pattern(got + (size_t)i))
                    return got;
            got += (size_t)n;
        }
        if (!libvchan_is_open(c) && libvchan_data_ready(c) == 0)
            break;
    }
    return got;
}

/* The server wrote 100 bytes before the client attached: the client's first select returns. */
static void test_early_data(int port)
{
    libvchan_t *s = libvchan_server_init(0, port, 1024, 1024);
    REQUIRE(s != NULL, "server_init");
    unsigned char data[100];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = pattern(i);
    libvchan_set_blocking(s, false);
    CHECK_EQ(libvchan_write(s, data, sizeof(data)), (int)sizeof(data), "write before the client exists");

    libvchan_t *c = libvchan_client_init(0, port);
    REQUIRE(c != NULL, "client_init");
    /* No data_ready() before the select: Xen leaves the client's event pending on bind. */
    REQUIRE(select_readable(libvchan_fd_for_select(c)), "the client's first select returns");
    CHECK_EQ(libvchan_wait(c), 0, "wait consumes the event");
    CHECK_EQ(libvchan_data_ready(c), (int)sizeof(data), "the early bytes are there");
    unsigned char buf[100];
    CHECK_EQ(libvchan_read(c, buf, sizeof(buf)), (int)sizeof(buf), "read them");
    CHECK(memcmp(buf, data, sizeof(buf)) == 0, "bytes");
    libvchan_close(c);
    libvchan_close(s);
}

/*
 * A server (another process) fills its ring and blocks writing three rings' worth more before
 * any client exists; a client that runs the vchan-node2 loop from its first call receives all.
 */
static void test_blocked_server(int port)
{
    const size_t total = 4 * 1024;
    int ready[2];
    REQUIRE(pipe(ready) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned char data[4 * 1024];
        for (size_t i = 0; i < sizeof(data); i++)
            data[i] = pattern(i);
        libvchan_t *s = libvchan_server_init(0, port, 1024, 1024);
        if (s == NULL)
            _exit(2);
        libvchan_set_blocking(s, false);
        int first = libvchan_write(s, data, sizeof(data)); /* fills the ring */
        if (first != 1024 || write(ready[1], "r", 1) != 1)
            _exit(3);
        libvchan_set_blocking(s, true);
        int n = libvchan_write(s, data + first, sizeof(data) - (size_t)first); /* waits for the reader */
        /* Stay until the client is done so that nothing is cut short by our close. */
        while (n == (int)sizeof(data) - first && libvchan_is_open(s) == VCHAN_CONNECTED)
            libvchan_wait(s);
        libvchan_close(s);
        _exit(n == (int)sizeof(data) - first ? 0 : 1);
    }
    close(ready[1]);
    char r;
    REQUIRE(read(ready[0], &r, 1) == 1, "the server filled its ring");
    close(ready[0]);

    libvchan_t *c = libvchan_client_init(0, port);
    REQUIRE(c != NULL, "client_init");
    CHECK_EQ(node2_receive(c, total), total, "all bytes of the blocked server arrive");
    libvchan_close(c);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server exit %d", WEXITSTATUS(status));
}

int main(void)
{
    test_early_data(7000);
    test_blocked_server(7001);
    return t_report("Xen call sequences");
}

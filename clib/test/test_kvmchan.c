/*
 * libkvmchan.h API over the same core: the original library's test_library
 * exchange in its own call sequence (the server select()s on the event fd
 * before every message without ever asking data_ready, reads a length and a
 * string with stream reads, then clears the event fd; the client writes ten
 * messages and closes), states from shared memory, packet/stream calls, close.
 */
#define _GNU_SOURCE
#include <libkvmchan.h>

#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static const char hello[] = "Hello, libkvmchan server!";

/* The original client: client_init, 10 x (write length, write string, get_state, pause), close. */
static int client_main(uint32_t port, unsigned pause_us)
{
    struct libkvmchan *c = libkvmchan_client_init(0, port);
    if (c == NULL)
        return 10;
    for (int i = 0; i < 10; i++) {
        size_t len = sizeof(hello);
        if (libkvmchan_write(c, &len, sizeof(len)) != (int)sizeof(len) ||
            libkvmchan_write(c, (void *)hello, len) != (int)len)
            return 12;
        if (libkvmchan_get_state(c) != VCHAN_CONNECTED)
            return 11;
        usleep(pause_us);
    }
    return libkvmchan_close(c) ? 0 : 14;
}

static int read_all(struct libkvmchan *s, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        int rc = libkvmchan_read(s, (char *)buf + done, n - done);
        if (rc <= 0)
            return rc;
        done += (size_t)rc;
    }
    return (int)n;
}

/*
 * The original server loop. `late`: the server only starts selecting once the client has
 * written everything and exited, so all ten messages wait in the ring and each select() must
 * still return (the fd stays readable while data is there). Otherwise the client pauses between
 * messages and the server mostly selects before the data arrives.
 */
static void exchange(uint32_t port, int late)
{
    struct libkvmchan *s = libkvmchan_server_init(0, port, 100, 100);
    REQUIRE(s != NULL, "server_init");
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_WAITING, "waiting for a client");

    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        libkvmchan_close(s); /* the parent's: only our copy is released */
        _exit(client_main(port, late ? 0 : 20000));
    }
    int status;
    if (late) {
        REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client exit %d", WEXITSTATUS(status));
    }

    for (int i = 0; i < 10; i++) {
        int efd = libkvmchan_get_eventfd(s);
        REQUIRE(efd >= 0, "eventfd");
        fd_set rfds;
        FD_ZERO(&rfds);
        FD_SET(efd, &rfds);
        /* The original waits forever; the timeout only turns a lost wake-up into a failure. */
        struct timeval tv = { .tv_sec = 10 };
        int n = select(efd + 1, &rfds, NULL, NULL, &tv);
        REQUIRE(n == 1, "%s: select on the event fd fires for message %d", late ? "late" : "paced", i + 1);
        size_t len = 0;
        char msg[64];
        REQUIRE(read_all(s, &len, sizeof(len)) == (int)sizeof(len), "length");
        REQUIRE(len == sizeof(hello), "length value %zu", len);
        REQUIRE(read_all(s, msg, len) == (int)len, "message");
        CHECK(strcmp(msg, hello) == 0, "message text");
        libkvmchan_clear_eventfd(s);
        int st = libkvmchan_get_state(s);
        CHECK(st == VCHAN_CONNECTED || st == VCHAN_DISCONNECTED, "state %d", st);
    }
    if (!late) {
        REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client exit %d", WEXITSTATUS(status));
    }
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_DISCONNECTED, "client gone");
    CHECK(libkvmchan_close(s), "close");
}

/*
 * A client killed mid-vchan: the daemon reports it on the server's connection, not on its
 * eventfd (wire-protocol.md §7.3); the event fd must fire all the same, and stay readable while
 * the peer is closed (docs/clib.md, "Wake-ups").
 */
static void peer_killed(uint32_t port)
{
    struct libkvmchan *s = libkvmchan_server_init(0, port, 1024, 1024);
    REQUIRE(s != NULL, "server_init");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        libkvmchan_close(s);
        struct libkvmchan *c = libkvmchan_client_init(0, port);
        if (c == NULL)
            _exit(1);
        for (;;)
            pause();
    }
    int efd = libkvmchan_get_eventfd(s);
    struct pollfd p = { .fd = efd, .events = POLLIN };
    while (libkvmchan_get_state(s) == VCHAN_WAITING) {
        REQUIRE(poll(&p, 1, 10000) == 1, "connect kick");
        libkvmchan_clear_eventfd(s);
    }
    CHECK_EQ(poll(&p, 1, 0), 0, "nothing pending once the connect kick was cleared");
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK_EQ(poll(&p, 1, 10000), 1, "the event fd fires on the peer's death");
    libkvmchan_clear_eventfd(s);
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_DISCONNECTED, "client gone");
    char b[1];
    errno = 0;
    CHECK(libkvmchan_read(s, b, 1) == -1 && errno == EPIPE, "end of stream, not a lost daemon");
    CHECK(libkvmchan_close(s), "close");
}

int main(void)
{
    uint32_t port = 5000;
    exchange(port++, 0);
    exchange(port++, 1);
    peer_killed(port++);

    struct libkvmchan *s = libkvmchan_server_init(0, port, 100, 100);
    REQUIRE(s != NULL, "server_init");
    CHECK_EQ(libkvmchan_buffer_space(s), 1024, "real ring size");
    CHECK_EQ(libkvmchan_data_ready(s), 0, "no data");
    CHECK(libkvmchan_get_eventfd(s) >= 0, "eventfd");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        libkvmchan_close(s);
        struct libkvmchan *c = libkvmchan_client_init(0, port);
        char ack[4];
        _exit(c != NULL && libkvmchan_recv(c, ack, 4) == 4 && memcmp(ack, "done", 4) == 0 && libkvmchan_close(c) ? 0
                                                                                                                 : 13);
    }
    while (libkvmchan_get_state(s) == VCHAN_WAITING) {
        struct pollfd p = { .fd = libkvmchan_get_eventfd(s), .events = POLLIN };
        REQUIRE(poll(&p, 1, 10000) == 1, "connect kick");
        libkvmchan_clear_eventfd(s);
    }
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_CONNECTED, "connected");
    CHECK_EQ(libkvmchan_send(s, "done", 4), 4, "send");
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client exit %d", WEXITSTATUS(status));
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_DISCONNECTED, "client gone");
    char b[8];
    errno = 0;
    CHECK(libkvmchan_read(s, b, 1) == -1 && errno == EPIPE, "read after the peer left: -1 EPIPE");
    CHECK(libkvmchan_send(s, b, 1) == -1 && errno == EPIPE, "send after the peer left");
    CHECK(libkvmchan_close(s), "close");
    CHECK(!libkvmchan_close(NULL), "close(NULL) is false");
    CHECK_EQ(libkvmchan_get_state(NULL), -1, "get_state(NULL)");

    /* Packet too large for the ring fails instead of waiting forever (unlike the original). */
    s = libkvmchan_server_init(0, port + 1, 1024, 1024);
    struct libkvmchan *c = libkvmchan_client_init(0, port + 1);
    REQUIRE(s != NULL && c != NULL, "pair");
    static char big[2048];
    CHECK(libkvmchan_send(c, big, sizeof(big)) == -1 && errno == EMSGSIZE, "oversized send");
    CHECK_EQ(libkvmchan_write(c, big, 1000), 1000, "write");
    CHECK_EQ(libkvmchan_data_ready(s), 1000, "data_ready");
    CHECK_EQ(libkvmchan_buffer_space(c), 24, "buffer_space");
    CHECK_EQ(libkvmchan_recv(s, big, 1000), 1000, "recv");
    libkvmchan_close(c);
    libkvmchan_close(s);
    return t_report("libkvmchan API");
}

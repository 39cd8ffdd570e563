/*
 * libkvmchan.h API over the same core: the original library's test_library
 * exchange (length-prefixed strings, the server waiting with select() on the
 * event fd), states from shared memory, packet/stream calls, close.
 */
#define _GNU_SOURCE
#include <libkvmchan.h>

#include "harness.h"

#include <poll.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static const char hello[] = "Hello, libkvmchan server!";

static int client_main(uint32_t port)
{
    struct libkvmchan *c = libkvmchan_client_init(0, port);
    if (c == NULL)
        return 10;
    if (libkvmchan_get_state(c) != VCHAN_CONNECTED)
        return 11;
    for (int i = 0; i < 10; i++) {
        size_t len = sizeof(hello);
        if (libkvmchan_write(c, &len, sizeof(len)) != (int)sizeof(len) ||
            libkvmchan_write(c, (void *)hello, len) != (int)len)
            return 12;
    }
    char ack[4];
    if (libkvmchan_recv(c, ack, 4) != 4 || memcmp(ack, "done", 4) != 0)
        return 13;
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

int main(void)
{
    uint32_t port = 5000;
    struct libkvmchan *s = libkvmchan_server_init(0, port, 100, 100);
    REQUIRE(s != NULL, "server_init");
    CHECK_EQ(libkvmchan_get_state(s), VCHAN_WAITING, "waiting for a client");
    CHECK_EQ(libkvmchan_buffer_space(s), 1024, "real ring size");
    CHECK_EQ(libkvmchan_data_ready(s), 0, "no data");
    int efd = libkvmchan_get_eventfd(s);
    CHECK(efd >= 0, "eventfd");

    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        libkvmchan_close(s); /* the parent's: only our copy is released */
        _exit(client_main(port));
    }

    int messages = 0;
    while (messages < 10) {
        if (libkvmchan_data_ready(s) == 0) {
            fd_set rfds;
            FD_ZERO(&rfds);
            FD_SET(efd, &rfds);
            struct timeval tv = { .tv_sec = 5 };
            int n = select(efd + 1, &rfds, NULL, NULL, &tv);
            REQUIRE(n == 1, "select on the event fd");
            libkvmchan_clear_eventfd(s);
            continue;
        }
        size_t len = 0;
        char msg[64];
        REQUIRE(read_all(s, &len, sizeof(len)) == (int)sizeof(len), "length");
        REQUIRE(len == sizeof(hello), "length value %zu", len);
        REQUIRE(read_all(s, msg, len) == (int)len, "message");
        CHECK(strcmp(msg, hello) == 0, "message text");
        messages++;
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

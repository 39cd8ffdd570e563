/*
 * vchan-node2: a bidirectional netcat over a vchan, driven by one select()
 * loop over stdin, stdout and libvchan_fd_for_select(). Written only against
 * libvchan.h (build with pkg-config vchan-kvm).
 *
 *   vchan-node2 server|client <domain> <port> [read_min write_min]
 *
 * The vchan is non-blocking; 5000-byte staging buffers sit between it and the
 * (non-blocking) stdio descriptors. End of stdin flushes what is pending and
 * closes the vchan; the peer closing makes this side copy what is left in the
 * ring to stdout and exit.
 */
#include <libvchan.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#define BUFSZ 5000

static char to_vchan[BUFSZ], to_stdout[BUFSZ];
static size_t to_vchan_len, to_stdout_len;

static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Copies everything still in the vchan, and in our buffer, to stdout; then exits. */
static void finish(libvchan_t *v, int status)
{
    char buf[BUFSZ];
    int n;
    set_nonblock(STDOUT_FILENO, 0);
    if (write_all(STDOUT_FILENO, to_stdout, to_stdout_len) < 0)
        status = 1;
    libvchan_set_blocking(v, false);
    while ((n = libvchan_read(v, buf, sizeof(buf))) > 0)
        if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
            status = 1;
    libvchan_close(v);
    exit(status);
}

int main(int argc, char **argv)
{
    if ((argc != 4 && argc != 6) || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
        fprintf(stderr, "usage: %s server|client <domain> <port> [read_min write_min]\n", argv[0]);
        return 2;
    }
    int domain = atoi(argv[2]), port = atoi(argv[3]);
    size_t rmin = argc == 6 ? strtoul(argv[4], NULL, 0) : 0, wmin = argc == 6 ? strtoul(argv[5], NULL, 0) : 0;
    libvchan_t *v = strcmp(argv[1], "server") == 0 ? libvchan_server_init(domain, port, rmin, wmin)
                                                   : libvchan_client_init(domain, port);
    if (v == NULL) {
        fprintf(stderr, "vchan-node2: %s init failed: %s\n", argv[1], strerror(errno));
        return 1;
    }
    while (libvchan_is_open(v) == VCHAN_WAITING)
        libvchan_wait(v);
    libvchan_set_blocking(v, false);
    set_nonblock(STDIN_FILENO, 1);
    set_nonblock(STDOUT_FILENO, 1);
    int vfd = libvchan_fd_for_select(v);
    int stdin_open = 1;

    for (;;) {
        /* Move what can move without waiting. */
        if (to_stdout_len < BUFSZ) {
            int n = libvchan_read(v, to_stdout + to_stdout_len, BUFSZ - to_stdout_len);
            if (n < 0)
                finish(v, 0); /* peer closed, ring drained */
            to_stdout_len += (size_t)n;
        }
        if (to_vchan_len > 0) {
            int n = libvchan_write(v, to_vchan, to_vchan_len);
            if (n < 0) {
                fprintf(stderr, "vchan-node2: peer closed with %zu bytes unsent\n", to_vchan_len);
                finish(v, 1);
            }
            memmove(to_vchan, to_vchan + n, to_vchan_len - (size_t)n);
            to_vchan_len -= (size_t)n;
        }
        if (!libvchan_is_open(v))
            finish(v, 0);

        /* Arm the notifications we need, re-checking: data_ready/buffer_space ask the
         * peer to signal, so nothing that happens after this check can be missed. */
        if (to_stdout_len < BUFSZ && libvchan_data_ready(v) > 0)
            continue;
        if (to_vchan_len > 0 && libvchan_buffer_space(v) > 0)
            continue;

        fd_set rfds, wfds;
        FD_ZERO(&rfds);
        FD_ZERO(&wfds);
        FD_SET(vfd, &rfds);
        int maxfd = vfd;
        if (stdin_open && to_vchan_len < BUFSZ) {
            FD_SET(STDIN_FILENO, &rfds);
            maxfd = maxfd > STDIN_FILENO ? maxfd : STDIN_FILENO;
        }
        if (to_stdout_len > 0) {
            FD_SET(STDOUT_FILENO, &wfds);
            maxfd = maxfd > STDOUT_FILENO ? maxfd : STDOUT_FILENO;
        }
        if (select(maxfd + 1, &rfds, &wfds, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            perror("vchan-node2: select");
            finish(v, 1);
        }
        if (FD_ISSET(vfd, &rfds))
            libvchan_wait(v);
        if (FD_ISSET(STDIN_FILENO, &rfds)) {
            ssize_t n = read(STDIN_FILENO, to_vchan + to_vchan_len, BUFSZ - to_vchan_len);
            if (n > 0) {
                to_vchan_len += (size_t)n;
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* End of input: push out what is pending, then close. */
                stdin_open = 0;
                libvchan_set_blocking(v, true);
                int status = 0;
                if (to_vchan_len > 0 && libvchan_write(v, to_vchan, to_vchan_len) != (int)to_vchan_len)
                    status = 1;
                to_vchan_len = 0;
                set_nonblock(STDOUT_FILENO, 0);
                if (write_all(STDOUT_FILENO, to_stdout, to_stdout_len) < 0)
                    status = 1;
                libvchan_close(v);
                return status;
            }
        }
        if (FD_ISSET(STDOUT_FILENO, &wfds)) {
            ssize_t n = write(STDOUT_FILENO, to_stdout, to_stdout_len);
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                perror("vchan-node2: stdout");
                finish(v, 1);
            }
            if (n > 0) {
                memmove(to_stdout, to_stdout + n, to_stdout_len - (size_t)n);
                to_stdout_len -= (size_t)n;
            }
        }
    }
}

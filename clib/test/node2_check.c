/*
 * Drives two vchan-node2 processes (server and client) connected through a
 * vchan: random data goes into each one's stdin and must come out of the
 * other's stdout byte for byte. Once both outputs are complete, the server's
 * stdin is closed: it closes the vchan, and the client must exit by itself.
 *
 *   node2_check <vchan-node2> <port> <bytes>
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdint.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

struct proc {
    pid_t pid;
    int in, out;   /* our ends: its stdin, its stdout */
    uint8_t *feed; /* what we write into its stdin */
    size_t fed;
    uint8_t *expect; /* what must come out of its stdout */
    size_t got;
    int mismatch;
};

static void spawn(struct proc *p, const char *prog, const char *role, const char *port)
{
    int pin[2], pout[2];
    REQUIRE(pipe2(pin, O_CLOEXEC) == 0 && pipe2(pout, O_CLOEXEC) == 0, "pipe");
    p->pid = fork();
    REQUIRE(p->pid >= 0, "fork");
    if (p->pid == 0) {
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        execl(prog, prog, role, "0", port, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    p->in = pin[1];
    p->out = pout[0];
    fcntl(p->in, F_SETFL, O_NONBLOCK);
    fcntl(p->out, F_SETFL, O_NONBLOCK);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: node2_check <vchan-node2> <port> <bytes>\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    size_t total = strtoul(argv[3], NULL, 0);
    unsigned long long seed = t_seed(0x2222);
    uint8_t *a = malloc(total), *b = malloc(total);
    REQUIRE(a != NULL && b != NULL, "malloc");
    for (size_t i = 0; i < total; i++) {
        a[i] = (uint8_t)t_rand(&seed);
        b[i] = (uint8_t)t_rand(&seed);
    }
    struct proc srv = { .feed = a, .expect = b }, cli = { .feed = b, .expect = a };
    spawn(&srv, argv[1], "server", argv[2]);
    usleep(20 * 1000);
    spawn(&cli, argv[1], "client", argv[2]);
    struct proc *ps[2] = { &srv, &cli };
    uint8_t buf[65536];
    double t0 = t_now();
    while (srv.got < total || cli.got < total) {
        struct pollfd pf[4];
        int n = 0;
        for (int i = 0; i < 2; i++) {
            pf[n++] = (struct pollfd){ .fd = ps[i]->fed < total ? ps[i]->in : -1, .events = POLLOUT };
            pf[n++] = (struct pollfd){ .fd = ps[i]->out, .events = POLLIN };
        }
        int r = poll(pf, 4, 10000);
        REQUIRE(r > 0, "stalled: server got %zu, client got %zu of %zu", srv.got, cli.got, total);
        for (int i = 0; i < 2; i++) {
            struct proc *p = ps[i];
            if (pf[2 * i].revents & (POLLOUT | POLLERR)) {
                size_t k = total - p->fed < 32768 ? total - p->fed : 32768;
                ssize_t w = write(p->in, p->feed + p->fed, k);
                if (w > 0)
                    p->fed += (size_t)w;
            }
            if (pf[2 * i + 1].revents & (POLLIN | POLLHUP)) {
                ssize_t rd = read(p->out, buf, sizeof(buf));
                REQUIRE(rd != 0 || p->got == total, "%s stdout closed after %zu bytes", i ? "client" : "server",
                        p->got);
                if (rd > 0) {
                    REQUIRE(p->got + (size_t)rd <= total, "too much output");
                    if (memcmp(buf, p->expect + p->got, (size_t)rd) != 0)
                        p->mismatch = 1;
                    p->got += (size_t)rd;
                }
            }
        }
    }
    double dt = t_now() - t0;
    CHECK(!srv.mismatch, "server output differs");
    CHECK(!cli.mismatch, "client output differs");
    /* End of the server's input: it closes, the client must notice and exit. */
    close(srv.in);
    int st;
    REQUIRE(waitpid(srv.pid, &st, 0) == srv.pid, "wait server");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit status %d", st);
    alarm(10);
    REQUIRE(waitpid(cli.pid, &st, 0) == cli.pid, "wait client");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client exit status %d", st);
    close(cli.in);
    close(srv.out);
    close(cli.out);
    printf("# vchan-node2 pair: 2 x %zu bytes in %.2f s\n", total, dt);
    free(a);
    free(b);
    return t_report("vchan-node2 bidirectional netcat");
}

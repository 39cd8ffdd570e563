/*
 * A hostile client holding a file whose close() fails or never returns, for the passed-fd test
 * (test/daemon/fuse-fd.test.ts, docs/security.md "Passed fds"). Speaks the raw /dev/fuse
 * protocol (<linux/fuse.h>), so no libfuse is needed. Runs as root.
 *
 *   fuse_flush <eio|hang> <mountpoint> <daemon socket>
 *
 * 1. Enters a mount namespace of its own, so the mount is visible to this process and its
 *    child only and disappears with them, whatever happens to the test.
 * 2. Mounts a one-file FUSE filesystem on <mountpoint> and serves it from a child process:
 *    FLUSH — what the kernel sends on every close() of the file — is answered -EIO ("eio") or
 *    never answered ("hang": the closing process then waits uninterruptibly until the
 *    connection is aborted, which the death of the serving process does).
 * 3. Opens that file and proves the flush misbehaves: a child process closes a copy of it.
 * 4. Reads lines on stdin; each line is a list of frames in hex, sent in order on a new
 *    connection to the daemon's socket. A frame followed by N '*' carries N copies of the file's
 *    fd (SCM_RIGHTS). Then it reads the daemon's replies (closing the fds they carry) until the
 *    daemon closes the connection or stays silent for a while.
 * 5. At the end of stdin it kills the serving process first (aborting the connection, so no
 *    close of the file can block any more), then exits.
 *
 * Lines on stdout (one write each):
 *   tester pid=P                 process P closes a copy of the file (the proof of step 3)
 *   closed pid=P close=E         ... and its close() returned: E is "0" or an errno name
 *                                ("eio": before "ready"; "hang": only once the connection ends)
 *   ready                        the file is open, frames may come
 *   flush pid=P                  the filesystem received FLUSH from process P
 *   done closed|open replies=N   a line of frames was sent; the daemon closed the connection or not
 *   skip <reason>                (exit 77) this machine cannot run the test
 */
#define _GNU_SOURCE
#include <linux/fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define FILE_NODE 2
#define MAX_FDS 8
#define QUIET_MS 3000

static int hang_flush;

static void say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(STDOUT_FILENO, line, (size_t)n) < 0) {
        /* the test is gone: nothing to tell */
    }
}

static void die(const char *what)
{
    fprintf(stderr, "fuse_flush: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void skip(const char *what)
{
    say("skip %s: %s", what, strerror(errno));
    exit(77);
}

/* ---- the filesystem ---- */

static void reply(int dev, uint64_t unique, int error, const void *data, size_t len)
{
    struct fuse_out_header out = { .len = (uint32_t)(sizeof out + len), .error = error, .unique = unique };
    struct iovec iov[2] = { { &out, sizeof out }, { (void *)data, len } };
    /* ENOENT: the request was interrupted meanwhile; anything else ends the serving loop. */
    if (writev(dev, iov, len > 0 ? 2 : 1) < 0 && errno != ENOENT)
        exit(0);
}

static void fill_attr(struct fuse_attr *a, uint64_t node)
{
    memset(a, 0, sizeof *a);
    a->ino = node;
    a->mode = node == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0666;
    a->nlink = node == FUSE_ROOT_ID ? 2 : 1;
    a->blksize = 4096;
}

static void serve(int dev)
{
    static char buf[FUSE_MIN_READ_BUFFER + (1 << 20)];
    for (;;) {
        ssize_t n = read(dev, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == ENOENT || errno == EAGAIN)
                continue;
            exit(0); /* ENODEV: unmounted or aborted */
        }
        if ((size_t)n < sizeof(struct fuse_in_header))
            continue;
        const struct fuse_in_header *in = (const void *)buf;
        const char *body = buf + sizeof *in;
        switch (in->opcode) {
        case FUSE_INIT: {
            const struct fuse_init_in *init = (const void *)body;
            struct fuse_init_out out = { .major = FUSE_KERNEL_VERSION,
                                         .minor = FUSE_KERNEL_MINOR_VERSION,
                                         .max_readahead = init->max_readahead,
                                         .max_background = 16,
                                         .congestion_threshold = 12,
                                         .max_write = 4096,
                                         .time_gran = 1 };
            if (init->minor < out.minor)
                out.minor = init->minor;
            reply(dev, in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_LOOKUP: {
            if (in->nodeid != FUSE_ROOT_ID || strcmp(body, "f") != 0) {
                reply(dev, in->unique, -ENOENT, NULL, 0);
                break;
            }
            struct fuse_entry_out out = {
                .nodeid = FILE_NODE, .generation = 1, .entry_valid = 3600, .attr_valid = 3600
            };
            fill_attr(&out.attr, FILE_NODE);
            reply(dev, in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_GETATTR: {
            struct fuse_attr_out out = { .attr_valid = 3600 };
            fill_attr(&out.attr, in->nodeid);
            reply(dev, in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_OPEN: {
            struct fuse_open_out out = { .fh = 1 };
            reply(dev, in->unique, 0, &out, sizeof out);
            break;
        }
        case FUSE_FLUSH:
            say("flush pid=%u", in->pid);
            if (!hang_flush)
                reply(dev, in->unique, -EIO, NULL, 0);
            break;
        case FUSE_RELEASE:
        case FUSE_DESTROY: reply(dev, in->unique, 0, NULL, 0); break;
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT: break; /* never answered */
        default: reply(dev, in->unique, -ENOSYS, NULL, 0);
        }
    }
}

/* ---- the hostile client ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads replies until the daemon closes the connection (1) or is silent for QUIET_MS (0). */
static int read_replies(int sock, int *replies)
{
    static char buf[1 << 16];
    for (;;) {
        struct pollfd p = { .fd = sock, .events = POLLIN };
        int r = poll(&p, 1, QUIET_MS);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        char control[CMSG_SPACE(16 * sizeof(int))];
        struct iovec iov = { buf, sizeof buf };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control
        };
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return 1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                close(fd);
            }
        }
        (*replies)++;
    }
}

/* One stdin line: its frames on a new connection, then the outcome. */
static void attack(const char *sock_path, char *line, int file)
{
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        die("socket");
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(sock_path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        die("daemon socket");
    }
    strcpy(addr.sun_path, sock_path);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect");
    static unsigned char frame[1 << 17];
    int replies = 0;
    int closed = 0;
    for (char *tok = strtok(line, " \t\n"); tok != NULL && !closed; tok = strtok(NULL, " \t\n")) {
        size_t len = 0;
        const char *p = tok;
        for (; hexval(p[0]) >= 0 && hexval(p[1]) >= 0 && len < sizeof frame; p += 2)
            frame[len++] = (unsigned char)(hexval(p[0]) << 4 | hexval(p[1]));
        int nfds = 0;
        while (*p == '*' && nfds < MAX_FDS) {
            nfds++;
            p++;
        }
        int fds[MAX_FDS];
        for (int i = 0; i < nfds; i++)
            fds[i] = file;
        char control[CMSG_SPACE(MAX_FDS * sizeof(int))];
        memset(control, 0, sizeof control);
        struct iovec iov = { frame, len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds > 0) {
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
            memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
        }
        if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
            if (errno != EPIPE && errno != ECONNRESET)
                die("sendmsg");
            closed = 1;
        }
    }
    if (!closed)
        closed = read_replies(sock, &replies);
    close(sock);
    say("done %s replies=%d", closed ? "closed" : "open", replies);
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "eio") != 0 && strcmp(argv[1], "hang") != 0)) {
        fprintf(stderr, "usage: fuse_flush <eio|hang> <mountpoint> <daemon socket>\n");
        return 2;
    }
    hang_flush = strcmp(argv[1], "hang") == 0;
    const char *mnt = argv[2];
    signal(SIGPIPE, SIG_IGN);

    if (unshare(CLONE_NEWNS) != 0)
        skip("unshare(CLONE_NEWNS)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        skip("making mounts private");
    int dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (dev < 0)
        skip("/dev/fuse");
    char opts[128];
    snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", dev);
    if (mount("kvmchan-test", mnt, "fuse", MS_NOSUID | MS_NODEV, opts) != 0)
        skip("mount -t fuse");

    pid_t server = fork();
    if (server < 0)
        die("fork");
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(STDIN_FILENO);
        serve(dev);
        return 0;
    }
    /* Only the server holds the device: its death aborts the connection. */
    close(dev);

    char path[4096];
    snprintf(path, sizeof path, "%s/f", mnt);
    int file = open(path, O_RDWR | O_CLOEXEC);
    if (file < 0)
        die("open the FUSE file");

    /* The proof that this file is hostile: a child closes a copy of it. */
    pid_t tester = fork();
    if (tester < 0)
        die("fork");
    if (tester == 0) {
        int copy = dup(file);
        close(file);
        close(STDIN_FILENO);
        int rc = close(copy);
        say("closed pid=%d close=%s", (int)getpid(), rc == 0 ? "0" : strerrorname_np(errno));
        _exit(0);
    }
    say("tester pid=%d", (int)tester);
    if (!hang_flush)
        waitpid(tester, NULL, 0);
    say("ready");

    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) >= 0)
        attack(argv[3], line, file);
    free(line);

    /* Abort the connection before anything closes the file again (our exit does). */
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    if (hang_flush)
        waitpid(tester, NULL, 0);
    return 0;
}

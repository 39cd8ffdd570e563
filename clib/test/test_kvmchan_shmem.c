/*
 * libkvmchan.h's shared-memory region calls (libkvmchan_shmem_*), written as a program for the
 * original libkvmchan would be: a creator and a connector in two processes, bytes both ways,
 * close by pointer and by id (creator close = release + unmap, connector close = unmap), bad
 * ids and pointers, double close, end() with regions open, several threads on one handle, and -
 * when run as root - a process of another uid refused. Runs against the real kvmchand only: the
 * test daemon (mockd) does not serve SHM_* (docs/clib.md, "Tests").
 */
#define _GNU_SOURCE
#include <libkvmchan.h>

#include "harness.h"

#include <grp.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGES 4u
#define LEN (PAGES * 4096u)
#define NOBODY 65534

/* One u32 over a pipe; the child reports its progress and the parent its ids this way. */
static void put(int fd, uint32_t v)
{
    REQUIRE(write(fd, &v, sizeof(v)) == (ssize_t)sizeof(v), "pipe write");
}

static uint32_t get(int fd)
{
    uint32_t v = 0;
    REQUIRE(read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v), "pipe read");
    return v;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static int same(const uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(seed + i * 7))
            return 0;
    return 1;
}

/* The connector, in its own process with its own handle. Exit status = first failed step. */
static int connector(int from_parent, int to_parent)
{
    struct libkvmchan_shmem *h = libkvmchan_shmem_start();
    if (h == NULL)
        return 10;
    uint32_t id = get(from_parent);
    uint8_t *p = libkvmchan_shmem_region_connect(h, 0, id);
    if (p == NULL)
        return 11;
    if (!same(p, LEN / 2, 0x31))
        return 12; /* what the creator wrote */
    fill(p + LEN / 2, LEN / 2, 0x52);
    put(to_parent, 1); /* the creator checks our half */

    /* A second mapping of the same region: both see the same bytes; close by pointer. */
    uint8_t *q = libkvmchan_shmem_region_connect(h, 0, id);
    if (q == NULL || q == p || !same(q + LEN / 2, LEN / 2, 0x52))
        return 13;
    if (libkvmchan_shmem_region_close(h, q) != 0)
        return 14;
    errno = 0;
    if (libkvmchan_shmem_region_close(h, q) != -1 || errno != EINVAL)
        return 15; /* double close by pointer */

    /* Close by id, connect again (the creator still holds the region). */
    if (libkvmchan_shmem_region_close_by_id(h, 0, id) != 0)
        return 16;
    errno = 0;
    if (libkvmchan_shmem_region_close_by_id(h, 0, id) != -1 || errno != ENOENT)
        return 17; /* double close by id */
    p = libkvmchan_shmem_region_connect(h, 0, id);
    if (p == NULL || !same(p, LEN / 2, 0x31))
        return 18;
    put(to_parent, 2);

    /* The creator closes (releases): our mapping stays valid and shared; nobody new connects. */
    if (get(from_parent) != 3)
        return 19;
    if (!same(p, LEN / 2, 0x33))
        return 20; /* written by the creator just before its close */
    fill(p, LEN / 2, 0x64);
    errno = 0;
    if (libkvmchan_shmem_region_connect(h, 0, id) != NULL || errno != ENOENT)
        return 21;
    put(to_parent, 4);
    if (get(from_parent) != 5)
        return 22;
    if (libkvmchan_shmem_region_close(h, p) != 0)
        return 23;
    libkvmchan_shmem_end(h);
    return 0;
}

static void two_processes(void)
{
    struct libkvmchan_shmem *h = libkvmchan_shmem_start();
    REQUIRE(h != NULL, "shmem_start");
    uint32_t id = 0;
    uint8_t *p = libkvmchan_shmem_region_create(h, 0, PAGES, &id);
    REQUIRE(p != NULL, "region_create");
    CHECK(id != 0, "a non-zero id");
    for (size_t i = 0; i < LEN; i++)
        if (p[i] != 0) {
            CHECK(0, "zero-filled at %zu", i);
            break;
        }
    fill(p, LEN / 2, 0x31);

    int down[2], up[2];
    REQUIRE(pipe(down) == 0 && pipe(up) == 0, "pipes");
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        /* The parent's handle is not ours to use (docs/clib.md: open a handle after fork). */
        _exit(connector(down[0], up[1]));
    }
    close(down[0]);
    close(up[1]);
    put(down[1], id);
    REQUIRE(get(up[0]) == 1, "connector mapped");
    CHECK(same(p + LEN / 2, LEN / 2, 0x52), "the creator reads what the connector wrote");
    REQUIRE(get(up[0]) == 2, "connector closed by pointer and by id, and connected again");

    fill(p, LEN / 2, 0x33);
    CHECK_EQ(libkvmchan_shmem_region_close(h, p), 0, "creator close");
    errno = 0;
    CHECK(libkvmchan_shmem_region_close(h, p) == -1 && errno == EINVAL, "creator double close");
    errno = 0;
    CHECK(libkvmchan_shmem_region_close_by_id(h, 0, id) == -1 && errno == ENOENT, "closed: by id too");
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(h, 0, id) == NULL && errno == ENOENT, "released: the creator cannot connect");
    put(down[1], 3);
    REQUIRE(get(up[0]) == 4, "connector kept its mapping");
    put(down[1], 5);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "connector exit %d", WEXITSTATUS(status));
    close(down[1]);
    close(up[0]);
    libkvmchan_shmem_end(h);
}

static void errors_and_end(void)
{
    errno = 0;
    CHECK(libkvmchan_shmem_region_create(NULL, 0, 1, NULL) == NULL && errno == EINVAL, "NULL handle");
    CHECK(libkvmchan_shmem_region_close(NULL, (void *)4096) == -1 && errno == EINVAL, "close on NULL handle");
    libkvmchan_shmem_end(NULL);

    struct libkvmchan_shmem *h = libkvmchan_shmem_start();
    REQUIRE(h != NULL, "shmem_start");
    errno = 0;
    CHECK(libkvmchan_shmem_region_create(h, 0, 0, NULL) == NULL && errno == EINVAL, "0 pages");
    errno = 0;
    CHECK(libkvmchan_shmem_region_create(h, 0, 262145, NULL) == NULL && errno == EMSGSIZE, "too many pages");
    errno = 0;
    CHECK(libkvmchan_shmem_region_create(h, 77, 1, NULL) == NULL && errno == ESRCH, "unknown domain");
    errno = 0;
    CHECK(libkvmchan_shmem_region_create(h, 0x80000000u, 1, NULL) == NULL && errno == EINVAL, "domain above INT_MAX");

    /* The original allows region_id_out = NULL. */
    uint8_t *anon = libkvmchan_shmem_region_create(h, 0, 1, NULL);
    CHECK(anon != NULL, "create without an id out");
    uint32_t id = 0;
    uint8_t *p = libkvmchan_shmem_region_create(h, 0, 2, &id);
    REQUIRE(p != NULL, "create");
    uint32_t bad = id == UINT32_MAX ? 1 : id + 1;
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(h, 0, bad) == NULL && errno == ENOENT, "unknown id");
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(h, 0, 0) == NULL && errno == ENOENT, "id 0");
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(h, 5, id) == NULL && errno == ENOENT, "right id, wrong domain");
    errno = 0;
    CHECK(libkvmchan_shmem_region_close(h, p + 4096) == -1 && errno == EINVAL, "a pointer inside the region");
    errno = 0;
    CHECK(libkvmchan_shmem_region_close_by_id(h, 0, bad) == -1 && errno == ENOENT, "close an unknown id");
    errno = 0;
    CHECK(libkvmchan_shmem_region_close_by_id(h, 3, id) == -1 && errno == ENOENT, "close with the wrong peer");

    /* The creator connects to its own region too; closing by id takes the newest mapping (the
     * connection), the next call the creator's (release). */
    uint8_t *q = libkvmchan_shmem_region_connect(h, 0, id);
    REQUIRE(q != NULL, "creator connects to its own region");
    q[5] = 0xab;
    CHECK_EQ(p[5], 0xab, "same memory");
    CHECK_EQ(libkvmchan_shmem_region_close_by_id(h, 0, id), 0, "close the connection");
    uint8_t *r = libkvmchan_shmem_region_connect(h, 0, id);
    CHECK(r != NULL, "not released yet");
    CHECK_EQ(libkvmchan_shmem_region_close(h, r), 0, "close by pointer");
    CHECK_EQ(libkvmchan_shmem_region_close_by_id(h, 0, id), 0, "close the creation");
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(h, 0, id) == NULL && errno == ENOENT, "released");

    /* end() with a region still open releases it: another handle cannot connect afterwards. */
    uint32_t kept = 0;
    CHECK(libkvmchan_shmem_region_create(h, 0, 1, &kept) != NULL, "create before end");
    struct libkvmchan_shmem *other = libkvmchan_shmem_start();
    REQUIRE(other != NULL, "second handle");
    uint8_t *o = libkvmchan_shmem_region_connect(other, 0, kept);
    CHECK(o != NULL, "another handle of this uid connects");
    libkvmchan_shmem_end(h);
    CHECK(o != NULL && o[0] == 0, "its mapping outlives the creator's handle");
    errno = 0;
    CHECK(libkvmchan_shmem_region_connect(other, 0, kept) == NULL && errno == ENOENT, "end() released it");
    libkvmchan_shmem_end(other);
}

static struct libkvmchan_shmem *shared_handle;

static void *thread_main(void *arg)
{
    uint8_t tag = (uint8_t)(uintptr_t)arg;
    for (int i = 0; i < 40; i++) {
        uint32_t id;
        uint8_t *p = libkvmchan_shmem_region_create(shared_handle, 0, 1, &id);
        if (p == NULL)
            return (void *)1;
        p[100] = tag;
        uint8_t *q = libkvmchan_shmem_region_connect(shared_handle, 0, id);
        if (q == NULL || q[100] != tag)
            return (void *)2;
        if (libkvmchan_shmem_region_close(shared_handle, q) != 0 ||
            libkvmchan_shmem_region_close_by_id(shared_handle, 0, id) != 0)
            return (void *)3;
    }
    return NULL;
}

static void threads(void)
{
    shared_handle = libkvmchan_shmem_start();
    REQUIRE(shared_handle != NULL, "shmem_start");
    pthread_t t[6];
    for (uintptr_t i = 0; i < 6; i++)
        REQUIRE(pthread_create(&t[i], NULL, thread_main, (void *)(i + 1)) == 0, "pthread_create");
    for (int i = 0; i < 6; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK(r == NULL, "thread %d step %d", i, (int)(uintptr_t)r);
    }
    libkvmchan_shmem_end(shared_handle);
}

/*
 * The attack, performed: a process of another uid (nobody) names a live region of ours by its
 * real id and gets ENOENT, as for an id that does not exist, and cannot close it either.
 */
static void other_uid(void)
{
    if (geteuid() != 0) {
        printf("# skip: the other-uid attack needs root\n");
        return;
    }
    const char *dir = getenv("KVMCHAN_RUNTIME_DIR");
    REQUIRE(dir != NULL, "KVMCHAN_RUNTIME_DIR");
    char sock[4096], parent[4096];
    snprintf(sock, sizeof(sock), "%s/kvmchand.sock", dir);
    snprintf(parent, sizeof(parent), "%s/..", dir);
    /* Let nobody reach the socket at all (with-daemon.sh's temporary directory is 0700): the
     * refusal under test is the daemon's. */
    REQUIRE(chmod(parent, 0711) == 0 && chmod(dir, 0755) == 0 && chmod(sock, 0666) == 0, "open up %s", dir);

    /* Fork first and pass the id through a pipe: a child that inherited our handle would exit
     * holding it, which valgrind reports as a leak of the child's. */
    int ids[2];
    REQUIRE(pipe(ids) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        close(ids[1]);
        uint32_t theirs = 0;
        if (read(ids[0], &theirs, sizeof(theirs)) != (ssize_t)sizeof(theirs))
            _exit(29);
        close(ids[0]);
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(30);
        struct libkvmchan_shmem *a = libkvmchan_shmem_start();
        if (a == NULL)
            _exit(31);
        errno = 0;
        void *got = libkvmchan_shmem_region_connect(a, 0, theirs);
        if (got != NULL)
            _exit(32); /* mapped another uid's region */
        if (errno != ENOENT)
            _exit(34);
        errno = 0;
        if (libkvmchan_shmem_region_close_by_id(a, 0, theirs) != -1 || errno != ENOENT)
            _exit(35);
        libkvmchan_shmem_end(a);
        _exit(0);
    }
    close(ids[0]);
    struct libkvmchan_shmem *h = libkvmchan_shmem_start();
    REQUIRE(h != NULL, "shmem_start");
    uint32_t id = 0;
    uint8_t *p = libkvmchan_shmem_region_create(h, 0, 1, &id);
    REQUIRE(p != NULL, "create");
    p[0] = 0x5a;
    REQUIRE(write(ids[1], &id, sizeof(id)) == (ssize_t)sizeof(id), "send the id");
    close(ids[1]);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "uid %d refused (exit %d; 32: it mapped our region)", NOBODY,
          WEXITSTATUS(status));
    CHECK_EQ(p[0], 0x5a, "our region untouched");
    CHECK_EQ(libkvmchan_shmem_region_close(h, p), 0, "close");
    libkvmchan_shmem_end(h);
}

int main(void)
{
    two_processes();
    errors_and_end();
    threads();
    other_uid();
    return t_report("libkvmchan shmem API");
}

/* Minimal test harness shared by the C tests: TAP-like output, failure counting. */
#ifndef KVC_TEST_HARNESS_H
#define KVC_TEST_HARNESS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int t_failures;
static int t_checks;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        t_checks++;                                                         \
        if (!(cond)) {                                                      \
            t_failures++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno));    \
        }                                                                   \
    } while (0)

#define CHECK_EQ(a, b, ...)                                                                                         \
    do {                                                                                                            \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                                                     \
        t_checks++;                                                                                                 \
        if (t_a_ != t_b_) {                                                                                         \
            t_failures++;                                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s == %s: got %lld, want %lld: ", __FILE__, __LINE__, #a, #b, t_a_, t_b_); \
            fprintf(stderr, __VA_ARGS__);                                                                           \
            fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno));                                            \
        }                                                                                                           \
    } while (0)

#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno));     \
            exit(2);                                                         \
        }                                                                    \
    } while (0)

static inline double t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int t_report(const char *name)
{
    if (t_failures == 0)
        printf("ok - %s (%d checks)\n", name, t_checks);
    else
        printf("not ok - %s (%d of %d checks failed)\n", name, t_failures, t_checks);
    fflush(stdout);
    return t_failures == 0 ? 0 : 1;
}

/* xorshift64* PRNG: reproducible from a printed seed. */
static inline unsigned long long t_rand(unsigned long long *s)
{
    unsigned long long x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline unsigned long long t_seed(unsigned long long dflt)
{
    const char *e = getenv("KVMCHAN_TEST_SEED");
    unsigned long long s = e != NULL ? strtoull(e, NULL, 0) : dflt;
    return s != 0 ? s : 0x9E3779B97F4A7C15ULL;
}

#endif

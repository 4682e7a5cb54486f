/*
 * SOCKS5 connection-rate load for bench/run (not part of the main build): THREADS
 * threads, each in a loop for SECONDS: connect to the proxy, greeting (no-auth, or
 * username/password when USER and PASS are given), CONNECT 127.0.0.1:TARGET_PORT, wait
 * for the success reply, close. The proxy dials the origin for every one, so this is the
 * cost of a whole tunnel set-up and tear-down.
 * Usage: socks_connect PROXY_PORT TARGET_PORT THREADS SECONDS [USER PASS]
 * Prints "connects_per_second errors p50_us p99_us" (latency of one whole handshake).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_SAMPLES (1u << 20) /* latency samples kept per thread */
#define IO_TIMEOUT_S 5

struct worker {
    pthread_t tid;
    unsigned long ok, errors;
    unsigned *lat_us;
    size_t nlat;
};

static int proxy_port, target_port;
static const char *user, *pass;
static double deadline;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads exactly n bytes. 0 ok, -1 error or EOF. */
static int
read_n(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;
    ssize_t r;

    while (got < n) {
        r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int
send_all(int fd, const unsigned char *buf, size_t n)
{
    return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* One whole SOCKS5 CONNECT on fd. 0 success reply, -1 anything else. */
static int
socks_handshake(int fd)
{
    unsigned char buf[600], rep[10];
    size_t ul, pl, n;

    if (user == NULL) {
        buf[0] = 5, buf[1] = 1, buf[2] = 0;
        if (send_all(fd, buf, 3) < 0 || read_n(fd, rep, 2) < 0 || rep[0] != 5 || rep[1] != 0)
            return -1;
    } else {
        ul = strlen(user), pl = strlen(pass);
        buf[0] = 5, buf[1] = 1, buf[2] = 2;
        if (send_all(fd, buf, 3) < 0 || read_n(fd, rep, 2) < 0 || rep[0] != 5 || rep[1] != 2)
            return -1;
        n = 0;
        buf[n++] = 1;
        buf[n++] = (unsigned char)ul;
        memcpy(buf + n, user, ul), n += ul;
        buf[n++] = (unsigned char)pl;
        memcpy(buf + n, pass, pl), n += pl;
        if (send_all(fd, buf, n) < 0 || read_n(fd, rep, 2) < 0 || rep[1] != 0)
            return -1;
    }
    buf[0] = 5, buf[1] = 1, buf[2] = 0, buf[3] = 1;
    buf[4] = 127, buf[5] = 0, buf[6] = 0, buf[7] = 1;
    buf[8] = (unsigned char)(target_port >> 8), buf[9] = (unsigned char)target_port;
    /* The reply is 10 bytes for an IPv4 bound address, which is what a proxy dialing
     * 127.0.0.1 answers. */
    if (send_all(fd, buf, 10) < 0 || read_n(fd, rep, 10) < 0 || rep[0] != 5 || rep[1] != 0 ||
        rep[3] != 1)
        return -1;
    return 0;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port)};
    struct timeval tv = {IO_TIMEOUT_S, 0};
    double t0;
    int fd, one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while ((t0 = now_s()) < deadline) {
        if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
            w->errors++;
            usleep(1000);
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && socks_handshake(fd) == 0) {
            w->ok++;
            if (w->nlat < MAX_SAMPLES)
                w->lat_us[w->nlat++] = (unsigned)((now_s() - t0) * 1e6);
        } else {
            w->errors++;
        }
        close(fd);
    }
    return NULL;
}

static int
cmp_unsigned(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    static struct worker workers[MAX_THREADS];
    unsigned long ok = 0, errors = 0;
    unsigned *all;
    size_t nall = 0;
    double secs, t_start;
    int nthreads, i;

    if (argc != 5 && argc != 7) {
        fprintf(stderr,
                "usage: socks_connect PROXY_PORT TARGET_PORT THREADS SECONDS [USER PASS]\n");
        return 2;
    }
    proxy_port = atoi(argv[1]);
    target_port = atoi(argv[2]);
    nthreads = atoi(argv[3]);
    secs = atof(argv[4]);
    if (argc == 7)
        user = argv[5], pass = argv[6];
    if (nthreads < 1 || nthreads > MAX_THREADS || secs <= 0 ||
        (user != NULL && (strlen(user) > 255 || strlen(pass) > 255))) {
        fprintf(stderr, "socks_connect: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    t_start = now_s();
    deadline = t_start + secs;
    for (i = 0; i < nthreads; i++) {
        if ((workers[i].lat_us = malloc(MAX_SAMPLES * sizeof(unsigned))) == NULL ||
            pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "socks_connect: cannot start thread %d\n", i);
            return 1;
        }
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(workers[i].tid, NULL);
        ok += workers[i].ok;
        errors += workers[i].errors;
        nall += workers[i].nlat;
    }
    secs = now_s() - t_start;
    if ((all = malloc((nall + 1) * sizeof(unsigned))) == NULL)
        return 1;
    nall = 0;
    for (i = 0; i < nthreads; i++) {
        memcpy(all + nall, workers[i].lat_us, workers[i].nlat * sizeof(unsigned));
        nall += workers[i].nlat;
    }
    qsort(all, nall, sizeof(unsigned), cmp_unsigned);
    printf("%.1f %lu %u %u\n", (double)ok / secs, errors, nall ? all[nall / 2] : 0,
           nall ? all[(nall * 99) / 100] : 0);
    return 0;
}

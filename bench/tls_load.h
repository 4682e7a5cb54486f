/*
 * bench/tls_load: what its two halves share. tls_load.c has the options, the counters
 * and latency histogram, main and its epoll loop; tls_load_conn.c drives one connection
 * (proxy handshake, TLS, keep-alive requests). See tls_load.c for usage.
 */
#ifndef AIRLOCK_BENCH_TLS_LOAD_H
#define AIRLOCK_BENCH_TLS_LOAD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#define MAX_CONNS 1024
#define BUF_MAX 16384           /* response heads; bodies beyond what fits are discarded */
#define STALL_NS 10000000000ULL /* a connection without progress for 10 s is an error */
#define ERRORS_MAX 1000         /* give up on a run that fails this often */
#define HIST_LINEAR 1024        /* latency histogram: exact below 1024 us... */
#define HIST_SUB 512            /* ...then 512 buckets per power of two (0.2 %) */
#define HIST_SIZE (HIST_LINEAR + 23 * HIST_SUB)

enum state { S_TCP, S_PROXY, S_TLS, S_REQUEST, S_RESPONSE };

struct lconn {
    int fd;
    SSL *ssl;
    enum state st;
    int step;        /* proxy handshake step */
    uint32_t events; /* current epoll interest */
    char out[1024];
    size_t out_len, out_off;
    char in[BUF_MAX];
    size_t in_len;
    unsigned long long body_left;
    int head_done, resp_close;
    unsigned nreq;
    uint64_t req_start_ns, progress_ns;
};

struct tls_load_opt {
    int socks5, conns, expect, proxy_pid;
    double secs;
    unsigned reqs_per_conn; /* 0: unlimited */
    const char *path, *auth, *host_port;
    char host[256];
    uint16_t port, proxy_port;
    int host_is_ip;
};

struct tls_load_stats {
    unsigned long long requests, bad_status, errors, connects, stalls;
    unsigned long long hist[HIST_SIZE];
    unsigned err_printed;
};

extern struct tls_load_opt opt;
extern struct tls_load_stats st;
extern SSL_CTX *ctx;
extern SSL_SESSION *session;
extern char request[1024];
extern size_t request_len;
extern int ep;
extern uint64_t deadline_ns;

static inline uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* tls_load.c */
size_t hist_index(uint64_t us);

/* tls_load_conn.c */
void conn_open(struct lconn *c);
void conn_reset(struct lconn *c);
int advance(struct lconn *c);
void check_stalls(struct lconn *conns, uint64_t now);

#endif

/*
 * HTTPS load through an intercepting proxy for bench/run (wrk cannot CONNECT; not part of
 * the main build). One epoll loop drives N connections with non-blocking OpenSSL: each
 * opens a tunnel (HTTP CONNECT, or SOCKS5 with -5), does a TLS handshake trusting CA_PEM
 * (SNI and hostname check for names, IP check for literals), then sends keep-alive GETs
 * until the run ends, reconnecting after -r requests or when the proxy closes.
 * Prints one line: rps=... requests=... p50_ms=... p99_ms=... bad_status=... errors=...
 * and, with -P PID, the CPU the proxy process spent per request (cpu_us_per_req=..., from
 * /proc/PID/stat, all its threads): steadier than req/s on a shared machine.
 * Exits 1 if any response had another status than -e (200) or anything failed.
 * Usage: tls_load [-5] [-a USER:PASS] [-c CONNS] [-d SECONDS] [-p PATH] [-e STATUS]
 *                 [-r REQS_PER_CONN] [-P PROXY_PID] PROXY_PORT HOST:PORT CA_PEM
 *
 * This file: options, counters, the latency histogram and the loop; one connection's
 * state machine is in tls_load_conn.c (cc tls_load.c tls_load_conn.c -lssl -lcrypto).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls_load.h"

struct tls_load_opt opt = {.conns = 8, .secs = 10, .expect = 200, .path = "/tls"};
struct tls_load_stats st;
SSL_CTX *ctx;
SSL_SESSION *session; /* the last ticket, offered on reconnect as curl would */
char request[1024];
size_t request_len;
int ep;
uint64_t deadline_ns;

size_t
hist_index(uint64_t us)
{
    unsigned shift;

    if (us < HIST_LINEAR)
        return (size_t)us;
    shift = (unsigned)(63 - __builtin_clzll(us)) - 9; /* us >> shift is in [512, 1024) */
    if (shift > 23)
        return HIST_SIZE - 1;
    return HIST_LINEAR + (shift - 1) * HIST_SUB + (size_t)((us >> shift) - HIST_SUB);
}

static double
hist_value_us(size_t i)
{
    unsigned shift;

    if (i < HIST_LINEAR)
        return (double)i;
    shift = (unsigned)((i - HIST_LINEAR) / HIST_SUB) + 1;
    return (double)(((i - HIST_LINEAR) % HIST_SUB + HIST_SUB) << shift);
}

static double
hist_percentile(double p)
{
    unsigned long long want = (unsigned long long)(p * (double)st.requests), seen = 0;
    size_t i;

    for (i = 0; i < HIST_SIZE; i++) {
        seen += st.hist[i];
        if (seen > want)
            return hist_value_us(i);
    }
    return 0;
}

static int
parse_args(int argc, char **argv)
{
    const char *colon;
    struct in_addr a4;
    struct in6_addr a6;
    int ch;

    while ((ch = getopt(argc, argv, "5a:c:d:p:e:r:P:")) != -1) {
        switch (ch) {
        case '5':
            opt.socks5 = 1;
            break;
        case 'a':
            opt.auth = optarg;
            break;
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'd':
            opt.secs = atof(optarg);
            break;
        case 'p':
            opt.path = optarg;
            break;
        case 'e':
            opt.expect = atoi(optarg);
            break;
        case 'r':
            opt.reqs_per_conn = (unsigned)atoi(optarg);
            break;
        case 'P':
            opt.proxy_pid = atoi(optarg);
            break;
        default:
            return -1;
        }
    }
    if (argc - optind != 3 || opt.conns < 1 || opt.conns > MAX_CONNS || opt.secs <= 0 ||
        (opt.auth != NULL && (strchr(opt.auth, ':') == NULL || strlen(opt.auth) > 500)))
        return -1;
    opt.proxy_port = (uint16_t)atoi(argv[optind]);
    opt.host_port = argv[optind + 1];
    if ((colon = strrchr(opt.host_port, ':')) == NULL || colon - opt.host_port >= 255 ||
        colon == opt.host_port)
        return -1;
    memcpy(opt.host, opt.host_port, (size_t)(colon - opt.host_port));
    opt.port = (uint16_t)atoi(colon + 1);
    opt.host_is_ip = inet_pton(AF_INET, opt.host, &a4) == 1 || inet_pton(AF_INET6, opt.host, &a6);
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(ctx, argv[optind + 2], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls_load\r\n"
                                   "Accept: */*\r\n\r\n",
                                   opt.path, opt.host_port);
    return request_len < sizeof(request) ? 0 : -1;
}

/* CPU seconds (user + system, all threads) the proxy has used; -1 if unknown. */
static double
proxy_cpu_s(void)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st_;
    ssize_t n;
    int fd;

    if (opt.proxy_pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", opt.proxy_pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* After "pid (comm) ", whose comm may hold spaces: state is field 3, utime 14, stime 15. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st_) != 2)
        return -1;
    return (double)(ut + st_) / (double)sysconf(_SC_CLK_TCK);
}

int
main(int argc, char **argv)
{
    static struct lconn conns[MAX_CONNS];
    struct epoll_event evs[256];
    uint64_t start, end, now, last_check;
    double cpu0, cpu1;
    int i, n;

    signal(SIGPIPE, SIG_IGN);
    if (parse_args(argc, argv) == -1) {
        fprintf(stderr, "usage: tls_load [-5] [-a USER:PASS] [-c CONNS] [-d SECONDS] [-p PATH] "
                        "[-e STATUS] [-r REQS_PER_CONN] [-P PROXY_PID] PROXY_PORT HOST:PORT "
                        "CA_PEM\n");
        return 2;
    }
    ep = epoll_create1(0);
    cpu0 = proxy_cpu_s();
    start = last_check = now_ns();
    deadline_ns = start + (uint64_t)(opt.secs * 1e9);
    for (i = 0; i < opt.conns; i++)
        conn_open(&conns[i]);
    while ((now = now_ns()) < deadline_ns && st.errors < ERRORS_MAX) {
        n = epoll_wait(ep, evs, 256, 100);
        for (i = 0; i < n; i++) {
            struct lconn *c = evs[i].data.ptr;
            if (c->fd >= 0 && advance(c) < 0) {
                conn_reset(c);
                if (now_ns() < deadline_ns)
                    conn_open(c);
            }
        }
        if (now - last_check > 100000000ULL) {
            check_stalls(conns, now);
            last_check = now;
        }
    }
    end = now < deadline_ns ? now : deadline_ns;
    cpu1 = proxy_cpu_s();
    printf("rps=%.1f requests=%llu seconds=%.2f p50_ms=%.3f p99_ms=%.3f bad_status=%llu "
           "errors=%llu connects=%llu",
           (double)st.requests / ((double)(end - start) / 1e9), st.requests,
           (double)(end - start) / 1e9, hist_percentile(0.50) / 1000, hist_percentile(0.99) / 1000,
           st.bad_status, st.errors, st.connects);
    if (cpu0 >= 0 && cpu1 >= cpu0 && st.requests > 0)
        printf(" cpu_us_per_req=%.0f", (cpu1 - cpu0) * 1e6 / (double)st.requests);
    printf("\n");
    for (i = 0; i < opt.conns; i++)
        conn_reset(&conns[i]);
    SSL_SESSION_free(session);
    SSL_CTX_free(ctx);
    return st.bad_status == 0 && st.errors == 0 && st.requests > 0 ? 0 : 1;
}

/*
 * Idle keep-alive load for bench/run (not part of the main build): opens N connections
 * to an HTTP proxy, sends one keep-alive GET (absolute-form) on each and reads its
 * response, then holds them all open so bench/run can read the proxy's VmRSS. Raises its
 * own RLIMIT_NOFILE.
 * Usage: idle_conns PROXY_PORT URL N HOLD_SECONDS [PROXY_AUTHORIZATION]
 * Prints "open OK ERRORS" once all are set up, then after HOLD_SECONDS (or SIGTERM)
 * "still_open K": how many the proxy had not closed meanwhile.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 200000
#define RESP_MAX 8192
#define IO_TIMEOUT_S 10

static volatile sig_atomic_t stop;

static void
on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void
raise_nofile(unsigned long want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want;
    if (rl.rlim_max < want)
        rl.rlim_max = want; /* only works with CAP_SYS_RESOURCE */
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Reads one whole response (head + Content-Length body). 0 if its status is 200. */
static int
read_response(int fd)
{
    char buf[RESP_MAX + 1], *end, *cl;
    size_t got = 0, need = 0;
    ssize_t r;

    for (;;) {
        r = recv(fd, buf + got, RESP_MAX - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        buf[got] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) == NULL) {
            if (got >= RESP_MAX)
                return -1;
            continue;
        }
        if (need == 0) {
            cl = strcasestr(buf, "\r\nContent-Length:");
            need = (size_t)(end - buf) + 4 + (cl != NULL ? strtoul(cl + 17, NULL, 10) : 0);
            if (need > RESP_MAX)
                return -1;
        }
        if (got >= need)
            return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
    }
}

int
main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tv = {IO_TIMEOUT_S, 0};
    char req[4096], host[256];
    const char *url, *p;
    int *fds, n, i, fd, nreq, ok = 0, errors = 0, still = 0;
    double hold;
    struct pollfd pfd;
    time_t until;

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: idle_conns PROXY_PORT URL N HOLD_SECONDS [PROXY_AUTH]\n");
        return 2;
    }
    url = argv[2];
    n = atoi(argv[3]);
    hold = atof(argv[4]);
    if (n < 1 || n > MAX_CONNS || strncmp(url, "http://", 7) != 0 ||
        (p = strchr(url + 7, '/')) == NULL || (size_t)(p - url - 7) >= sizeof(host)) {
        fprintf(stderr, "idle_conns: bad arguments\n");
        return 2;
    }
    memcpy(host, url + 7, (size_t)(p - url - 7));
    host[p - url - 7] = '\0';
    nreq = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", url, host,
                    argc == 6 ? "Proxy-Authorization: " : "", argc == 6 ? argv[5] : "",
                    argc == 6 ? "\r\n" : "");
    if (nreq < 0 || nreq >= (int)sizeof(req))
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    raise_nofile((unsigned long)n + 64);
    if ((fds = malloc((size_t)n * sizeof(int))) == NULL)
        return 1;
    for (i = 0; i < n; i++)
        fds[i] = -1;
    sa.sin_port = htons((uint16_t)atoi(argv[1]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (i = 0; i < n && !stop; i++) {
        if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
            fprintf(stderr, "idle_conns: socket %d: %s\n", i, strerror(errno));
            errors++;
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
            send(fd, req, (size_t)nreq, MSG_NOSIGNAL) != nreq || read_response(fd) != 0) {
            errors++;
            close(fd);
            continue;
        }
        fds[i] = fd;
        ok++;
    }
    printf("open %d %d\n", ok, errors);
    fflush(stdout);
    until = time(NULL) + (time_t)hold;
    while (!stop && time(NULL) < until)
        usleep(100000);
    for (i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        pfd.fd = fds[i];
        pfd.events = POLLIN | POLLRDHUP;
        pfd.revents = 0;
        /* An idle kept-alive connection has nothing to read; EOF means it was closed. */
        if (poll(&pfd, 1, 0) == 0)
            still++;
        close(fds[i]);
    }
    printf("still_open %d\n", still);
    free(fds);
    return 0;
}

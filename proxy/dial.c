/*
 * Upstream dialing: resolve through resolve: overrides or evdns, check every address
 * against the private-range guard and the proxy's own listeners, then connect to a checked
 * address (never re-resolved, so there is no DNS-rebinding window). Results are always
 * delivered from the event loop, never from inside dial_start().
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

#define DIAL_MAX_ADDRS 16

/* An IPv4 or IPv6 socket address: 28 bytes, where a sockaddr_storage takes 128. */
union dial_addr {
    struct sockaddr sa;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
};

/*
 * One allocation per dial, under glibc's 1 KiB per-thread cache limit: the struct, then its
 * two events (event_assign). A literal IP (every SOCKS5 IPv4/IPv6 request) uses the one
 * inline address; names get a DIAL_MAX_ADDRS array of their own.
 */
struct dial {
    struct conn *c;
    dial_cb cb;
    uint16_t port;
    struct evdns_getaddrinfo_request *dns_req;
    union dial_addr one;
    union dial_addr *addrs; /* &one, or owned */
    size_t naddrs, next;
    struct bufferevent *bev;
    struct event *timer; /* both point into this allocation */
    struct event *done_ev;
    const char *decision;
    char detail[160];
    char host[NET_HOST_MAX + 1];
};

/* Where the events start: after the struct, aligned for anything. */
#define DIAL_EV_OFFSET ((sizeof(struct dial) + 15) & ~(size_t)15)

static void dial_try_next(struct dial *d);

static socklen_t
addr_len(const union dial_addr *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof(a->sin6) : sizeof(a->sin);
}

/* Copies an IPv4/IPv6 address in; anything else is skipped. 1 copied, 0 skipped. */
static int
addr_set(union dial_addr *a, const struct sockaddr *sa, size_t len)
{
    if ((sa->sa_family == AF_INET && len >= sizeof(a->sin)) ||
        (sa->sa_family == AF_INET6 && len >= sizeof(a->sin6))) {
        memcpy(a, sa, sa->sa_family == AF_INET ? sizeof(a->sin) : sizeof(a->sin6));
        return 1;
    }
    return 0;
}

/* Room for DIAL_MAX_ADDRS resolved addresses. 0, or -1 out of memory. */
static int
addrs_alloc(struct dial *d)
{
    if (d->addrs != &d->one)
        return 0;
    if ((d->addrs = malloc(DIAL_MAX_ADDRS * sizeof(*d->addrs))) == NULL) {
        d->addrs = &d->one;
        return -1;
    }
    return 0;
}

static void
dial_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;
    struct conn *c = d->c;
    dial_cb cb = d->cb;
    struct bufferevent *bev = d->bev;
    char detail[sizeof(d->detail)];
    const char *decision = d->decision;

    memcpy(detail, d->detail, sizeof(detail));
    d->bev = NULL;
    dial_cancel(d);
    cb(c, bev, decision, detail);
}

/* Finishes the dial: bev on success, or a decision and a detail for the client. */
static void
dial_finish(struct dial *d, const char *decision, const char *detail)
{
    d->decision = decision;
    if (detail != NULL)
        util_strlcpy(d->detail, detail, sizeof(d->detail));
    if (d->timer != NULL)
        evtimer_del(d->timer);
    event_active(d->done_ev, EV_TIMEOUT, 0);
}

static int
is_own_listener(const struct policy *p, const struct sockaddr *sa)
{
    const struct policy_listen *ls[2] = {&p->listen_http, &p->listen_socks5};
    struct sockaddr_storage a, b;
    size_t i;

    net_addr_unmap(sa, &a);
    for (i = 0; i < 2; i++) {
        const struct sockaddr *l = (const struct sockaddr *)&ls[i]->addr;
        if (!ls[i]->enabled || net_addr_port(l) != net_addr_port(sa))
            continue;
        net_addr_unmap(l, &b);
        if (a.ss_family != b.ss_family)
            continue;
        if (a.ss_family == AF_INET) {
            const struct sockaddr_in *x = (void *)&a, *y = (void *)&b;
            if (y->sin_addr.s_addr == htonl(INADDR_ANY) || x->sin_addr.s_addr == y->sin_addr.s_addr)
                return 1;
        } else if (a.ss_family == AF_INET6) {
            const struct sockaddr_in6 *x = (void *)&a, *y = (void *)&b;
            if (IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr) ||
                memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0)
                return 1;
        }
    }
    return 0;
}

/* Every address must pass: one private answer among public ones refuses the name. */
static void
dial_check_and_connect(struct dial *d)
{
    struct policy *p = d->c->pol;
    char text[64];
    size_t i;

    if (d->naddrs == 0) {
        dial_finish(d, "upstream-dns", "name has no usable address");
        return;
    }
    for (i = 0; i < d->naddrs; i++) {
        net_addr_set_port(&d->addrs[i].sa, d->port);
        if (!policy_address_allowed(p, &d->addrs[i].sa) || is_own_listener(p, &d->addrs[i].sa)) {
            net_format_addr(&d->addrs[i].sa, text, sizeof(text));
            log_info("%s: %s resolves to refused address %s", d->c->peer, d->host, text);
            dial_finish(d, "private-address", "target address is private or not allowed");
            return;
        }
    }
    dial_try_next(d);
}

static void
dial_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct dial *d = arg;

    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        dial_finish(d, NULL, NULL);
        return;
    }
    snprintf(d->detail, sizeof(d->detail), "connect to %s:%u failed: %s", d->host, d->port,
        evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    bufferevent_free(d->bev);
    d->bev = NULL;
    dial_try_next(d);
}

static void
dial_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dial *d = arg;

    if (d->bev != NULL) {
        bufferevent_free(d->bev);
        d->bev = NULL;
    }
    if (d->dns_req != NULL) {
        evdns_getaddrinfo_cancel(d->dns_req);
        d->dns_req = NULL;
        dial_finish(d, "upstream-dns", "name resolution timed out");
        return;
    }
    dial_finish(d, "upstream-timeout", "connect timed out");
}

/*
 * Starts a non-blocking connect to a. 1 connected already, 0 in progress, -1 failed (errno
 * set). A target on this host (loopback) has finished its handshake by the time connect()
 * returns, inside that very call; asking once more (connect again: 0 once established,
 * EALREADY while not) then saves waiting a loop turn for writability, and the epoll_ctl
 * pair and SO_ERROR read that come with it. Elsewhere it costs one syscall per dial.
 */
static int
dial_connect(const union dial_addr *a, evutil_socket_t *fdp)
{
    int fd, one = 1;

    if ((fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    *fdp = fd;
    /* Set before connecting: it holds for the connection made. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, &a->sa, addr_len(a)) == 0)
        return 1;
    if (errno != EINPROGRESS)
        return -1;
    if (connect(fd, &a->sa, addr_len(a)) == 0 || errno == EISCONN)
        return 1;
    return errno == EALREADY || errno == EINPROGRESS ? 0 : -1;
}

static void
dial_try_next(struct dial *d)
{
    struct event_base *base = d->c->px->deps.base;
    evutil_socket_t fd = -1;
    int r;

    while (d->next < d->naddrs) { /* bounded by DIAL_MAX_ADDRS */
        const union dial_addr *a = &d->addrs[d->next++];

        if ((r = dial_connect(a, &fd)) >= 0 &&
            (d->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE)) != NULL) {
            if (r == 1) {
                dial_finish(d, NULL, NULL);
                return;
            }
            /* No address: wait for the connect in progress on its fd. */
            bufferevent_setcb(d->bev, NULL, NULL, dial_eventcb, d);
            if (bufferevent_socket_connect(d->bev, NULL, 0) == 0)
                return;
            fd = -1; /* the bufferevent owns and closes it */
        }
        snprintf(d->detail, sizeof(d->detail), "connect to %s:%u failed: %s", d->host, d->port,
            r < 0 ? strerror(errno) : "out of memory");
        if (d->bev != NULL) {
            bufferevent_free(d->bev);
            d->bev = NULL;
        } else if (fd >= 0) {
            evutil_closesocket(fd);
        }
        fd = -1;
    }
    dial_finish(d, "upstream-connect", d->detail[0] ? d->detail : "cannot connect");
}

static void
dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dial *d = arg;
    struct evutil_addrinfo *ai;

    d->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL)
        return;
    if (result != 0) {
        snprintf(d->detail, sizeof(d->detail), "cannot resolve %s: %s", d->host,
            evutil_gai_strerror(result));
        dial_finish(d, "upstream-dns", NULL);
        return;
    }
    if (addrs_alloc(d) == -1) {
        evutil_freeaddrinfo(res);
        dial_finish(d, "upstream-dns", "out of memory");
        return;
    }
    for (ai = res; ai != NULL && d->naddrs < DIAL_MAX_ADDRS; ai = ai->ai_next)
        d->naddrs += (size_t)addr_set(&d->addrs[d->naddrs], ai->ai_addr, ai->ai_addrlen);
    evutil_freeaddrinfo(res);
    dial_check_and_connect(d);
}

struct dial *
dial_start(struct conn *c, const char *host, uint16_t port, dial_cb cb)
{
    struct event_base *base = c->px->deps.base;
    const struct policy_resolve *r;
    struct evutil_addrinfo hints;
    struct sockaddr_storage ss;
    socklen_t len;
    struct dial *d;
    size_t i, evsz = event_get_struct_event_size();

    /* Not calloc: the host and detail buffers are strings, only their heads are set. */
    if ((d = malloc(DIAL_EV_OFFSET + 2 * evsz)) == NULL)
        return NULL;
    memset(d, 0, offsetof(struct dial, detail));
    d->detail[0] = '\0';
    d->addrs = &d->one;
    d->c = c;
    d->cb = cb;
    util_strlcpy(d->host, host, sizeof(d->host));
    d->port = port;
    d->timer = (struct event *)((char *)d + DIAL_EV_OFFSET);
    d->done_ev = (struct event *)((char *)d + DIAL_EV_OFFSET + evsz);
    if (evtimer_assign(d->timer, base, dial_timeout_cb, d) == -1 ||
        event_assign(d->done_ev, base, -1, 0, dial_done_cb, d) == -1) {
        free(d);
        return NULL;
    }
    conn_set_timer(c, c->pol->connect_timeout_ms + 1000);
    {
        struct timeval tv = util_ms_timeval(c->pol->connect_timeout_ms);
        evtimer_add(d->timer, &tv);
    }
    /* A literal IP is never resolved (no evdns, no getaddrinfo). */
    if (net_parse_ip(host, &ss, &len) == 0) {
        d->naddrs = (size_t)addr_set(&d->one, (struct sockaddr *)&ss, len);
        dial_check_and_connect(d);
    } else if ((r = policy_resolve_lookup(c->pol, host)) != NULL) {
        if (addrs_alloc(d) == -1) {
            dial_finish(d, "upstream-dns", "out of memory");
            return d;
        }
        for (i = 0; i < r->naddrs && i < DIAL_MAX_ADDRS; i++)
            d->naddrs += (size_t)addr_set(&d->addrs[d->naddrs],
                                          (const struct sockaddr *)&r->addrs[i], r->addr_lens[i]);
        dial_check_and_connect(d);
    } else if (c->px->deps.dns == NULL) {
        dial_finish(d, "upstream-dns", "no resolver available");
    } else {
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_protocol = IPPROTO_TCP;
        d->dns_req = evdns_getaddrinfo(c->px->deps.dns, host, NULL, &hints, dns_cb, d);
    }
    return d;
}

void
dial_cancel(struct dial *d)
{
    if (d == NULL)
        return;
    if (d->dns_req != NULL)
        evdns_getaddrinfo_cancel(d->dns_req);
    if (d->bev != NULL)
        bufferevent_free(d->bev);
    event_del(d->timer);
    event_del(d->done_ev);
    if (d->addrs != &d->one)
        free(d->addrs);
    free(d);
}

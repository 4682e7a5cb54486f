/*
 * Upstream dialing: resolve through resolve: overrides or evdns, check every address
 * against the private-range guard and the proxy's own listeners, then connect to a checked
 * address (never re-resolved, so there is no DNS-rebinding window). Results are always
 * delivered from the event loop, never from inside dial_start().
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "common/log.h"
#include "common/util.h"
#include "proxy/proxy_internal.h"

#define DIAL_MAX_ADDRS 16

struct dial {
    struct conn *c;
    dial_cb cb;
    char host[NET_HOST_MAX + 1];
    uint16_t port;
    struct evdns_getaddrinfo_request *dns_req;
    struct sockaddr_storage addrs[DIAL_MAX_ADDRS];
    socklen_t lens[DIAL_MAX_ADDRS];
    size_t naddrs, next;
    struct bufferevent *bev;
    struct event *timer;
    struct event *done_ev;
    const char *decision;
    char detail[160];
};

static void dial_try_next(struct dial *d);

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
        net_addr_set_port((struct sockaddr *)&d->addrs[i], d->port);
        if (!policy_address_allowed(p, (struct sockaddr *)&d->addrs[i]) ||
            is_own_listener(p, (struct sockaddr *)&d->addrs[i])) {
            net_format_addr((struct sockaddr *)&d->addrs[i], text, sizeof(text));
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
    int one = 1;

    if (what & BEV_EVENT_CONNECTED) {
        evtimer_del(d->timer);
        (void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

static void
dial_try_next(struct dial *d)
{
    struct event_base *base = d->c->px->deps.base;

    while (d->next < d->naddrs) { /* bounded by DIAL_MAX_ADDRS */
        struct sockaddr *sa = (struct sockaddr *)&d->addrs[d->next];
        socklen_t len = d->lens[d->next];
        d->next++;
        d->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (d->bev == NULL)
            break;
        bufferevent_setcb(d->bev, NULL, NULL, dial_eventcb, d);
        if (bufferevent_socket_connect(d->bev, sa, (int)len) == 0)
            return;
        snprintf(d->detail, sizeof(d->detail), "connect to %s:%u failed: %s", d->host, d->port,
            strerror(errno));
        bufferevent_free(d->bev);
        d->bev = NULL;
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
    for (ai = res; ai != NULL && d->naddrs < DIAL_MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(d->addrs[0]))
            continue;
        memcpy(&d->addrs[d->naddrs], ai->ai_addr, ai->ai_addrlen);
        d->lens[d->naddrs++] = (socklen_t)ai->ai_addrlen;
    }
    evutil_freeaddrinfo(res);
    dial_check_and_connect(d);
}

struct dial *
dial_start(struct conn *c, const char *host, uint16_t port, dial_cb cb)
{
    struct event_base *base = c->px->deps.base;
    const struct policy_resolve *r;
    struct evutil_addrinfo hints;
    struct dial *d;
    size_t i;

    if ((d = calloc(1, sizeof(*d))) == NULL)
        return NULL;
    d->c = c;
    d->cb = cb;
    util_strlcpy(d->host, host, sizeof(d->host));
    d->port = port;
    d->timer = evtimer_new(base, dial_timeout_cb, d);
    d->done_ev = event_new(base, -1, 0, dial_done_cb, d);
    if (d->timer == NULL || d->done_ev == NULL) {
        dial_cancel(d);
        return NULL;
    }
    conn_set_timer(c, c->pol->connect_timeout_ms + 1000);
    {
        struct timeval tv = {(time_t)(c->pol->connect_timeout_ms / 1000),
            (suseconds_t)(c->pol->connect_timeout_ms % 1000 * 1000)};
        evtimer_add(d->timer, &tv);
    }
    if (net_parse_ip(host, &d->addrs[0], &d->lens[0]) == 0) {
        d->naddrs = 1;
        dial_check_and_connect(d);
    } else if ((r = policy_resolve_lookup(c->pol, host)) != NULL) {
        for (i = 0; i < r->naddrs && i < DIAL_MAX_ADDRS; i++) {
            memcpy(&d->addrs[i], &r->addrs[i], sizeof(d->addrs[i]));
            d->lens[i] = r->addr_lens[i];
        }
        d->naddrs = i;
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
    if (d->timer != NULL)
        event_free(d->timer);
    if (d->done_ev != NULL)
        event_free(d->done_ev);
    free(d);
}

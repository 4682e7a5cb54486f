/* Built when the TLS toolkit (proxy/tls.c) is absent: no interception, streams that need
 * it are denied (fail closed). */
#include "proxy/proxy_internal.h"

int
intercept_init(struct proxy *px, const struct policy *p, struct err *err)
{
    return 0;
}

void
intercept_free(struct proxy *px)
{
}

int
intercept_available(const struct proxy *px)
{
    return 0;
}

void
intercept_client(struct conn *c)
{
    conn_free(c);
}

void
intercept_upstream(struct conn *c, struct bufferevent *up)
{
    bufferevent_free(up);
    conn_free(c);
}

void
intercept_release(struct conn *c)
{
}

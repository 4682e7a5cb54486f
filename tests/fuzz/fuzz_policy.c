/*
 * libFuzzer target for policy/: the whole loader (libyaml events, the positioned tree,
 * every section, the cross-section checks) through policy_load_buffer(), then the
 * matcher and the connection verdicts on what loaded. Everything is freed, so leaks show.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

/* "/" always exists, so relative paths in the input resolve without touching the disk. */
#define FUZZ_PATH "/airlock.yaml"

static void
check_loaded(struct policy *p)
{
    static const char *const hosts[] = {
        "example.com", "api.github.com", "a.pypi.org", "127.0.0.1", "::1", "x", NULL};
    static const char *const methods[] = {"GET", "POST", NULL};
    const struct policy_rule *rule;
    struct policy_request req;
    struct sockaddr_in sin;
    size_t i, h, m;

    CHECK(p->refcount == 1 && p->version == 1);
    CHECK(p->listen_http.enabled || p->listen_socks5.enabled);
    CHECK(p->default_action == POLICY_DENY || p->default_action == POLICY_ALLOW);
    for (i = 0; i < p->ncredentials; i++) {
        const char *s = strstr(p->credentials[i].format, "{secret}");
        CHECK(s != NULL && strstr(s + 1, "{secret}") == NULL);
        CHECK(policy_credential(p, p->credentials[i].name) == &p->credentials[i]);
    }
    for (i = 0; i < p->nrules; i++) {
        const struct policy_rule *r = &p->rules[i];
        CHECK(r->name != NULL && r->host != NULL);
        CHECK((r->action == POLICY_INJECT) == (r->credential != NULL));
        if (r->approve == POLICY_APPROVE_DEVICE || r->approve == POLICY_APPROVE_ANY)
            CHECK(p->approvals.device_enabled);
    }
    if (p->ncredentials > 0)
        CHECK(p->vault.backend != POLICY_BACKEND_NONE);

    /* Rules' own hosts plus a few fixed ones, through every public decision. */
    for (h = 0; h < p->nrules + 6 && h < 64; h++) {
        const char *host = h < p->nrules ? p->rules[h].host : hosts[h - p->nrules];
        if (host == NULL || host[0] == '*')
            continue;
        for (m = 0; methods[m] != NULL; m++) {
            memset(&req, 0, sizeof(req));
            req.agent = p->nagents > 0 ? p->agents[0].name : "-";
            req.host = host;
            req.port = m == 0 ? 443 : 80;
            req.tls = m == 0;
            req.method = methods[m];
            req.path = "/repos/x";
            rule = policy_match(p, &req);
            CHECK(rule == NULL || (rule >= p->rules && rule < p->rules + p->nrules));
        }
        (void)policy_decide_connection(p, "-", host, 443, &rule);
        (void)policy_host_possible(p, host);
        (void)policy_host_has_path_rules(p, host);
        (void)policy_resolve_lookup(p, host);
    }
    (void)policy_authenticate(p, p->nagents > 0 ? p->agents[0].name : "-", "test", 4);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x7f000001);
    (void)policy_address_allowed(p, (const struct sockaddr *)&sin);
    CHECK(policy_ref(p) == p && p->refcount == 2);
    policy_unref(p);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct policy *p;
    struct err err;

    if (size > 256 * 1024)
        return 0;
    p = policy_load_buffer(FUZZ_PATH, (const char *)data, size, &err);
    if (p == NULL) {
        /* Every refusal says where: the path first, and never an empty reason. */
        CHECK(err.code != ERR_OK && strncmp(err.msg, FUZZ_PATH ":", strlen(FUZZ_PATH) + 1) == 0);
        return 0;
    }
    check_loaded(p);
    policy_unref(p);
    return 0;
}

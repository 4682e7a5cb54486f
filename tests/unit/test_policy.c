/* Unit tests for policy/: loading good configs (fields, defaults, relative paths), the
 * exact PATH:LINE:COL of bad ones, the first-match matcher, every connection verdict,
 * proxy authentication and the private-address guard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "policy/policy.h"

#define SHA_TEST "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define SHA_PW2 "93915a0a4bf8f634cb1856494dd4304472ad46b9827f541f76b6761c49cc55b0"

static char tmpdir[PATH_MAX];
static char realdir[PATH_MAX];
static char cfgpath[PATH_MAX + 32];

static int
group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/airlock-policy-XXXXXX");
    if (mkdtemp(tmpdir) == NULL || realpath(tmpdir, realdir) == NULL)
        return -1;
    snprintf(cfgpath, sizeof(cfgpath), "%s/airlock.yaml", tmpdir);
    return 0;
}

static int
group_teardown(void **state)
{
    unlink(cfgpath);
    rmdir(tmpdir);
    return 0;
}

static void
write_config(const char *text, size_t len)
{
    FILE *f = fopen(cfgpath, "w");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static struct policy *
load_text(const char *text, struct err *err)
{
    write_config(text, strlen(text));
    return policy_load(cfgpath, err);
}

static struct policy *
load_ok(const char *text)
{
    struct err err;
    struct policy *p = load_text(text, &err);

    if (p == NULL)
        fail_msg("config refused: %s", err.msg);
    return p;
}

/* 0 when the message is exactly "cfgpath:WHERE: ..." and contains sub; else prints why. */
static int
check_bad(const char *text, const char *where, const char *sub)
{
    char prefix[PATH_MAX + 64];
    struct policy *p;
    struct err err;

    p = load_text(text, &err);
    if (p != NULL) {
        policy_unref(p);
        print_error("accepted, expected %s %s:\n%s\n", where, sub, text);
        return -1;
    }
    snprintf(prefix, sizeof(prefix), "%s:%s: ", cfgpath, where);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0 || strstr(err.msg, sub) == NULL ||
        err.code != ERR_USAGE) {
        print_error("got \"%s\" (code %d), expected \"%s\" and \"%s\"\n", err.msg, err.code,
            prefix, sub);
        return -1;
    }
    return 0;
}

static void
expect_bad(const char *text, const char *where, const char *sub)
{
    if (check_bad(text, where, sub) == -1)
        fail();
}

static const char full_config[] =
    "version: 1\n"
    "listen:\n"
    "  http: 127.0.0.1:3128\n"
    "  socks5: \"[::1]:1080\"\n"
    "  control: run/control.sock\n"
    "state_dir: state2\n"
    "vault:\n"
    "  backend: pkcs11\n"
    "  dir: /var/lib/airlock/vault\n"
    "  pkcs11:\n"
    "    module: /usr/lib/softhsm/libsofthsm2.so\n"
    "    token: \"pkcs11:token=airlock\"\n"
    "    pin: file:pin.txt\n"
    "    key_label: k1\n"
    "  tpm2:\n"
    "    tcti: \"swtpm:host=127.0.0.1,port=2321\"\n"
    "    primary_handle: 0x81000001\n"
    "tls:\n"
    "  intercept: false\n"
    "  upstream_ca: ca/bundle.pem\n"
    "resolve:\n"
    "  API.Example.test.: 127.0.0.1\n"
    "  two.example.test: [127.0.0.2, \"::1\"]\n"
    "network:\n"
    "  deny_private: true\n"
    "  allow_cidrs: [127.0.0.1/32, \"::1/128\"]\n"
    "agents:\n"
    "  - name: ci-bot\n"
    "    token_sha256: " SHA_TEST "\n"
    "credentials:\n"
    "  github:\n"
    "    header: Authorization\n"
    "    format: \"Bearer {secret}\"\n"
    "    hold: 5m\n"
    "rules:\n"
    "  - name: github-read\n"
    "    host: API.GitHub.com\n"
    "    ports: [443, 8443]\n"
    "    methods: [get, HEAD]\n"
    "    path: \"/repos/*\"\n"
    "    agents: [ci-bot]\n"
    "    action: inject\n"
    "    credential: github\n"
    "    allow_cleartext: true\n"
    "  - name: github-write\n"
    "    host: api.github.com\n"
    "    methods: [POST, PUT, PATCH, DELETE]\n"
    "    action: inject\n"
    "    credential: github\n"
    "    approve: device\n"
    "  - name: pypi\n"
    "    host: \"*.pypi.org\"\n"
    "    action: allow\n"
    "default: allow\n"
    "approvals:\n"
    "  timeout: 90s\n"
    "  max_pending: 8\n"
    "  max_body: 64KiB\n"
    "  device:\n"
    "    path: dev/buddy\n"
    "    baud: 9600\n"
    "    auth: none\n"
    "audit:\n"
    "  path: log/audit.jsonl\n"
    "limits:\n"
    "  max_connections: 100\n"
    "  header_timeout: 5s\n"
    "  idle_timeout: 1m\n"
    "  connect_timeout: 250ms\n"
    "  unseal_timeout: 1500ms\n";

static void
assert_path(const char *got, const char *rel)
{
    char want[PATH_MAX + 64];

    snprintf(want, sizeof(want), "%s/%s", realdir, rel);
    assert_non_null(got);
    assert_string_equal(got, want);
}

static void
test_full_config(void **state)
{
    struct policy *p = load_ok(full_config);

    assert_int_equal(p->refcount, 1);
    assert_string_equal(p->path, cfgpath);
    assert_string_equal(p->dir, realdir);
    assert_int_equal(p->listen_http.enabled, 1);
    assert_string_equal(p->listen_http.text, "127.0.0.1:3128");
    assert_int_equal(p->listen_http.addr.ss_family, AF_INET);
    assert_int_equal(p->listen_socks5.addr.ss_family, AF_INET6);
    assert_path(p->control_path, "run/control.sock");
    assert_path(p->state_dir, "state2");
    assert_int_equal(p->vault.backend, POLICY_BACKEND_PKCS11);
    assert_string_equal(p->vault.dir, "/var/lib/airlock/vault");
    assert_string_equal(p->vault.pkcs11_module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_string_equal(p->vault.pkcs11_token_uri, "pkcs11:token=airlock");
    {
        char want[PATH_MAX + 64];
        snprintf(want, sizeof(want), "file:%s/pin.txt", realdir);
        assert_string_equal(p->vault.pkcs11_pin, want);
    }
    assert_string_equal(p->vault.pkcs11_key_label, "k1");
    assert_string_equal(p->vault.tpm2_tcti, "swtpm:host=127.0.0.1,port=2321");
    assert_int_equal(p->vault.tpm2_primary_handle, 0x81000001u);
    assert_int_equal(p->tls.intercept, 0);
    assert_path(p->tls.upstream_ca, "ca/bundle.pem");
    assert_int_equal(p->nresolve, 2);
    assert_non_null(policy_resolve_lookup(p, "api.example.test"));
    assert_int_equal(policy_resolve_lookup(p, "two.example.test")->naddrs, 2);
    assert_int_equal(policy_resolve_lookup(p, "two.example.test")->addrs[1].ss_family,
        AF_INET6);
    assert_null(policy_resolve_lookup(p, "three.example.test"));
    assert_int_equal(p->network.nallow_cidrs, 2);
    policy_unref(p);
}

static void
test_full_config_rules(void **state)
{
    struct policy *p = load_ok(full_config);
    const struct policy_rule *r;

    assert_int_equal(p->nagents, 1);
    assert_string_equal(p->agents[0].name, "ci-bot");
    assert_int_equal(p->agents[0].token_sha256[0], 0x9f);
    assert_int_equal(p->ncredentials, 1);
    assert_string_equal(policy_credential(p, "github")->format, "Bearer {secret}");
    assert_int_equal(policy_credential(p, "github")->hold_ms, 300000);
    assert_null(policy_credential(p, "gitlab"));
    assert_int_equal(p->nrules, 3);
    r = &p->rules[0];
    assert_string_equal(r->host, "api.github.com");
    assert_int_equal(r->host_wildcard, 0);
    assert_int_equal(r->nports, 2);
    assert_int_equal(r->ports[1], 8443);
    assert_int_equal(r->nmethods, 2);
    assert_string_equal(r->methods[0], "GET");
    assert_string_equal(r->path, "/repos/*");
    assert_string_equal(r->agents[0], "ci-bot");
    assert_int_equal(r->action, POLICY_INJECT);
    assert_ptr_equal(r->credential, policy_credential(p, "github"));
    assert_int_equal(r->allow_cleartext, 1);
    assert_int_equal(r->line, 36);
    assert_int_equal(p->rules[1].approve, POLICY_APPROVE_DEVICE);
    assert_string_equal(p->rules[2].host, "*.pypi.org");
    assert_int_equal(p->rules[2].host_wildcard, 1);
    assert_int_equal(p->default_action, POLICY_ALLOW);
    assert_int_equal(p->approvals.timeout_ms, 90000);
    assert_int_equal(p->approvals.max_pending, 8);
    assert_int_equal(p->approvals.max_body, 65536);
    assert_int_equal(p->approvals.device_enabled, 1);
    assert_path(p->approvals.device_path, "dev/buddy");
    assert_int_equal(p->approvals.device_baud, 9600);
    assert_int_equal(p->approvals.device_auth_hmac, 0);
    assert_path(p->audit_path, "log/audit.jsonl");
    assert_int_equal(p->max_connections, 100);
    assert_int_equal(p->header_timeout_ms, 5000);
    assert_int_equal(p->idle_timeout_ms, 60000);
    assert_int_equal(p->connect_timeout_ms, 250);
    assert_int_equal(p->unseal_timeout_ms, 1500);
    assert_ptr_equal(policy_ref(p), p);
    assert_int_equal(p->refcount, 2);
    policy_unref(p);
    policy_unref(p);
    policy_unref(NULL);
}

static void
test_defaults(void **state)
{
    struct policy *p = load_ok("listen:\n  socks5: 127.0.0.1:1080\nrules: []\n");

    assert_int_equal(p->version, 1);
    assert_int_equal(p->listen_http.enabled, 0);
    assert_int_equal(p->listen_socks5.enabled, 1);
    assert_null(p->control_path);
    assert_path(p->state_dir, "state");
    assert_path(p->vault.dir, "vault");
    assert_int_equal(p->vault.backend, POLICY_BACKEND_NONE);
    assert_string_equal(p->vault.pkcs11_key_label, "airlock-vault");
    assert_string_equal(p->vault.tpm2_tcti, "device:/dev/tpmrm0");
    assert_int_equal(p->vault.tpm2_primary_handle, 0x81000A1Cu);
    assert_int_equal(p->tls.intercept, 1);
    assert_null(p->tls.upstream_ca);
    assert_int_equal(p->network.deny_private, 1);
    assert_int_equal(p->nagents, 0);
    assert_int_equal(p->nrules, 0);
    assert_int_equal(p->default_action, POLICY_DENY);
    assert_int_equal(p->approvals.timeout_ms, 120000);
    assert_int_equal(p->approvals.max_pending, 64);
    assert_int_equal(p->approvals.max_body, 1024 * 1024);
    assert_int_equal(p->approvals.device_enabled, 0);
    assert_path(p->audit_path, "audit.jsonl");
    assert_int_equal(p->max_connections, 4096);
    assert_int_equal(p->header_timeout_ms, 30000);
    assert_int_equal(p->idle_timeout_ms, 60000);
    assert_int_equal(p->connect_timeout_ms, 10000);
    assert_int_equal(p->unseal_timeout_ms, 5000);
    /* No agents: everybody is "-". */
    assert_string_equal(policy_authenticate(p, "anyone", "x", 1), "-");
    policy_unref(p);

    p = load_ok("listen: {http: 127.0.0.1:3128}\nrules:\ntls: {upstream_ca: system}\n"
                "approvals: {device: {}}\nvault: {backend: tpm2}\n");
    assert_null(p->tls.upstream_ca);
    assert_int_equal(p->approvals.device_enabled, 1);
    assert_string_equal(p->approvals.device_path, "auto");
    assert_int_equal(p->approvals.device_baud, 115200);
    assert_int_equal(p->approvals.device_auth_hmac, 1);
    assert_int_equal(p->vault.backend, POLICY_BACKEND_TPM2);
    policy_unref(p);
}

static const char match_config[] =
    "listen: {http: 127.0.0.1:3128}\n"
    "vault: {backend: tpm2}\n"
    "agents:\n"
    "  - {name: ci, token_sha256: " SHA_TEST "}\n"
    "  - {name: dev, token_sha256: " SHA_PW2 "}\n"
    "credentials:\n"
    "  gh: {header: Authorization, format: \"token {secret}\"}\n"
    "approvals: {device: {path: auto}}\n"
    "rules:\n"
    "  - {name: gh-read, host: api.github.com, methods: [GET], path: \"/repos/*\",\n"
    "     agents: [ci], action: inject, credential: gh, approve: any}\n"
    "  - {name: gh-block, host: api.github.com, action: deny}\n"
    "  - {name: pypi, host: \"*.pypi.org\", action: allow}\n"
    "  - {name: alt, host: example.com, ports: [8443, 8080], action: allow}\n"
    "  - {name: q, host: q.example.com, path: \"/a?c\", action: allow}\n"
    "  - {name: held, host: held.example.com, action: allow, approve: cli}\n"
    "  - {name: inj, host: inj.example.com, action: inject, credential: gh}\n"
    "  - {name: dev-only, host: dev.example.com, agents: [dev], action: allow}\n"
    "  - {name: ip6, host: \"[::1]\", ports: [9000], action: allow}\n"
    "  - {name: mix-post, host: mix.example.com, methods: [POST], action: deny}\n"
    "  - {name: mix-rest, host: mix.example.com, action: allow}\n";

static const char *
match_name(const struct policy *p, const char *agent, const char *host, uint16_t port, int tls,
    const char *method, const char *path)
{
    struct policy_request req = {agent, host, port, tls, method, path};
    const struct policy_rule *r = policy_match(p, &req);

    return r != NULL ? r->name : "(none)";
}

static void
test_match(void **state)
{
    struct policy *p = load_ok(match_config);

    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 1, "GET", "/repos/a/b"),
        "gh-read"); /* "*" crosses "/" */
    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 1, "get", "/repos/a"),
        "gh-read");
    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 1, "POST", "/repos/a"),
        "gh-block");
    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 1, "GET", "/user"),
        "gh-block");
    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 1, "GET", "/repos"),
        "gh-block");
    assert_string_equal(match_name(p, "dev", "api.github.com", 443, 1, "GET", "/repos/a"),
        "gh-block");
    /* Default ports: 443 over TLS, 80 in cleartext, either when unknown. */
    assert_string_equal(match_name(p, "ci", "api.github.com", 80, 0, "GET", "/repos/a"),
        "gh-read");
    assert_string_equal(match_name(p, "ci", "api.github.com", 80, 1, "GET", "/repos/a"),
        "(none)");
    assert_string_equal(match_name(p, "ci", "api.github.com", 443, 0, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "ci", "api.github.com", 80, -1, "GET", "/"), "gh-block");
    assert_string_equal(match_name(p, "ci", "api.github.com", 8443, -1, "GET", "/"), "(none)");
    /* Wildcards: subdomains at any depth, never the suffix itself. */
    assert_string_equal(match_name(p, "ci", "files.pypi.org", 443, 1, "GET", "/"), "pypi");
    assert_string_equal(match_name(p, "ci", "a.b.pypi.org", 443, 1, "GET", "/"), "pypi");
    assert_string_equal(match_name(p, "ci", "pypi.org", 443, 1, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "ci", "xpypi.org", 443, 1, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "ci", "pypi.org.evil", 443, 1, "GET", "/"), "(none)");
    /* Explicit ports replace the defaults. */
    assert_string_equal(match_name(p, "ci", "example.com", 8080, 0, "GET", "/"), "alt");
    assert_string_equal(match_name(p, "ci", "example.com", 8443, 1, "GET", "/"), "alt");
    assert_string_equal(match_name(p, "ci", "example.com", 443, 1, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "ci", "www.example.com", 8080, 0, "GET", "/"), "(none)");
    /* "?" is one character, including "/"; an unknown path does not satisfy a glob. */
    assert_string_equal(match_name(p, "ci", "q.example.com", 443, 1, "GET", "/abc"), "q");
    assert_string_equal(match_name(p, "ci", "q.example.com", 443, 1, "GET", "/a/c"), "q");
    assert_string_equal(match_name(p, "ci", "q.example.com", 443, 1, "GET", "/abbc"), "(none)");
    assert_string_equal(match_name(p, "ci", "q.example.com", 443, 1, "GET", NULL), "(none)");
    /* Agents. */
    assert_string_equal(match_name(p, "ci", "dev.example.com", 443, 1, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "dev", "dev.example.com", 443, 1, "GET", "/"),
        "dev-only");
    assert_string_equal(match_name(p, "dev", "::1", 9001, 0, "GET", "/"), "(none)");
    assert_string_equal(match_name(p, "dev", "::1", 9000, 0, "GET", "/"), "ip6");
    /* First match wins. */
    assert_string_equal(match_name(p, "ci", "mix.example.com", 443, 1, "POST", "/"),
        "mix-post");
    assert_string_equal(match_name(p, "ci", "mix.example.com", 443, 1, "GET", "/"), "mix-rest");
    assert_string_equal(policy_action_name(POLICY_INJECT), "inject");
    assert_string_equal(policy_action_name(POLICY_DENY), "deny");
    assert_string_equal(policy_approve_name(POLICY_APPROVE_CLI), "cli");
    assert_string_equal(policy_approve_name(POLICY_APPROVE_NONE), "none");
    policy_unref(p);
}

static void
verdict(const struct policy *p, const char *agent, const char *host, uint16_t port,
    enum policy_conn_verdict want, const char *want_rule)
{
    const struct policy_rule *r = (const struct policy_rule *)p; /* must be overwritten */
    enum policy_conn_verdict v = policy_decide_connection(p, agent, host, port, &r);

    if (v != want || (want_rule == NULL) != (r == NULL) ||
        (r != NULL && want_rule != NULL && strcmp(r->name, want_rule) != 0))
        fail_msg("%s %s:%u: verdict %d rule %s, want %d %s", agent, host, port, v,
            r != NULL ? r->name : "NULL", want, want_rule != NULL ? want_rule : "NULL");
}

static void
test_connection_verdicts(void **state)
{
    struct policy *p = load_ok(match_config);

    /* A conditional candidate before the first unconditional one: inspect. */
    verdict(p, "ci", "api.github.com", 443, POLICY_CONN_INSPECT, NULL);
    verdict(p, "ci", "mix.example.com", 443, POLICY_CONN_INSPECT, NULL);
    /* Unconditional deny first: deny with the rule. */
    verdict(p, "dev", "api.github.com", 443, POLICY_CONN_DENY, "gh-block");
    /* Unconditional plain allow first: tunnel, either default port. */
    verdict(p, "ci", "files.pypi.org", 443, POLICY_CONN_TUNNEL, "pypi");
    verdict(p, "ci", "files.pypi.org", 80, POLICY_CONN_TUNNEL, "pypi");
    verdict(p, "dev", "example.com", 8080, POLICY_CONN_TUNNEL, "alt");
    /* Unconditional but held or injected: inspect. */
    verdict(p, "ci", "held.example.com", 443, POLICY_CONN_INSPECT, NULL);
    verdict(p, "ci", "inj.example.com", 443, POLICY_CONN_INSPECT, NULL);
    /* Only conditional candidates: inspect. */
    verdict(p, "ci", "q.example.com", 443, POLICY_CONN_INSPECT, NULL);
    /* No candidates: the default decides. */
    verdict(p, "ci", "files.pypi.org", 8080, POLICY_CONN_DENY, NULL);
    verdict(p, "ci", "nothing.example", 443, POLICY_CONN_DENY, NULL);
    verdict(p, "ci", "dev.example.com", 443, POLICY_CONN_DENY, NULL);
    policy_unref(p);

    p = load_ok("listen: {http: 127.0.0.1:3128}\ndefault: allow\nrules:\n"
                "  - {name: no, host: bad.example, action: deny}\n");
    verdict(p, "-", "anything.example", 443, POLICY_CONN_TUNNEL, NULL);
    verdict(p, "-", "bad.example", 443, POLICY_CONN_DENY, "no");
    verdict(p, "-", "bad.example", 8443, POLICY_CONN_TUNNEL, NULL);
    assert_int_equal(policy_host_possible(p, "anything.example"), 1);
    policy_unref(p);
}

static void
test_host_checks(void **state)
{
    struct policy *p = load_ok(match_config);

    assert_int_equal(policy_host_possible(p, "api.github.com"), 1);
    assert_int_equal(policy_host_possible(p, "x.y.pypi.org"), 1);
    assert_int_equal(policy_host_possible(p, "pypi.org"), 0);
    assert_int_equal(policy_host_possible(p, "evil.example"), 0);
    assert_int_equal(policy_host_possible(p, "::1"), 1);
    assert_int_equal(policy_host_has_path_rules(p, "api.github.com"), 1);
    assert_int_equal(policy_host_has_path_rules(p, "q.example.com"), 1);
    assert_int_equal(policy_host_has_path_rules(p, "files.pypi.org"), 0);
    assert_int_equal(policy_host_has_path_rules(p, "evil.example"), 0);
    policy_unref(p);
}

static void
test_authenticate(void **state)
{
    struct policy *p = load_ok(match_config);

    assert_string_equal(policy_authenticate(p, "ci", "test", 4), "ci");
    assert_string_equal(policy_authenticate(p, "dev", "pw2", 3), "dev");
    assert_null(policy_authenticate(p, "ci", "tesT", 4));
    assert_null(policy_authenticate(p, "ci", "test", 3)); /* length is honoured */
    assert_null(policy_authenticate(p, "ci", "", 0));
    assert_null(policy_authenticate(p, "dev", "test", 4)); /* another agent's token */
    assert_null(policy_authenticate(p, "nobody", "test", 4));
    assert_null(policy_authenticate(p, "-", "test", 4));
    assert_null(policy_authenticate(p, NULL, "test", 4));
    policy_unref(p);
}

static int
allowed(const struct policy *p, const char *ip)
{
    struct sockaddr_storage ss;

    if (net_parse_ip(ip, &ss, NULL) == -1)
        fail_msg("bad test address %s", ip);
    return policy_address_allowed(p, (struct sockaddr *)&ss);
}

static void
test_address_allowed(void **state)
{
    struct policy *p = load_ok("listen: {http: 127.0.0.1:3128}\nrules: []\n"
                               "network: {allow_cidrs: [127.0.0.1/32, \"fd00::/64\"]}\n");

    assert_int_equal(allowed(p, "93.184.216.34"), 1);
    assert_int_equal(allowed(p, "2606:2800:220:1::1"), 1);
    assert_int_equal(allowed(p, "127.0.0.1"), 1);
    assert_int_equal(allowed(p, "::ffff:127.0.0.1"), 1); /* judged by the embedded address */
    assert_int_equal(allowed(p, "fd00::5"), 1);
    assert_int_equal(allowed(p, "127.0.0.2"), 0);
    assert_int_equal(allowed(p, "::ffff:127.0.0.2"), 0);
    assert_int_equal(allowed(p, "10.1.2.3"), 0);
    assert_int_equal(allowed(p, "::1"), 0);
    assert_int_equal(allowed(p, "fd00:0:0:1::5"), 0);
    assert_int_equal(allowed(p, "169.254.169.254"), 0);
    policy_unref(p);

    p = load_ok("listen: {http: 127.0.0.1:3128}\nrules: []\nnetwork: {deny_private: false}\n");
    assert_int_equal(allowed(p, "10.1.2.3"), 1);
    assert_int_equal(allowed(p, "::1"), 1);
    policy_unref(p);
}
#define L "listen:\n  http: 127.0.0.1:3128\n" /* lines 1-2 */
#define V "vault: {backend: tpm2}\ncredentials:\n  gh: {header: Authorization, format: \"t {secret}\"}\n"

static const struct bad_case {
    const char *where; /* LINE:COL */
    const char *sub;
    const char *text;
} bad_cases[] = {
    {"4:1", "unknown key \"bogus\"", L "rules: []\nbogus: 1\n"},
    {"3:3", "unknown key \"htpp\" in listen", L "  htpp: 127.0.0.1:1\nrules: []\n"},
    {"2:9", "listen.http: expected a string, got a list", "listen:\n  http: [127.0.0.1:1]\n"},
    {"2:9", "listen.http: bad address \"localhost:3128\"", "listen:\n  http: localhost:3128\n"},
    {"3:3", "duplicate key \"http\" (first at line 2)", L "  http: 127.0.0.1:1\n"},
    {"1:1", "missing required key \"listen\"", "rules: []\n"},
    {"1:1", "missing required key \"rules\"", L},
    {"2:3", "listen: at least one of http or socks5", "listen:\n  control: c.sock\nrules: []\n"},
    {"1:1", "missing required key \"listen\"", "# nothing here\n"},
    {"1:1", "the configuration must be a mapping, got a list", "- a\n- b\n"},
    {"6:18", "rules[0].ports: expected an integer 1..65535, got \"0\"",
        L "rules:\n  - name: a\n    host: example.com\n    ports: [443, 0]\n    action: allow\n"},
    {"6:13", "rules[0].ports: expected an integer 1..65535, got \"https\"",
        L "rules:\n  - name: a\n    host: example.com\n    ports: [https]\n    action: allow\n"},
    {"6:12", "rules[0].ports: expected a list, got a string",
        L "rules:\n  - name: a\n    host: example.com\n    ports: 65536\n    action: allow\n"},
    {"6:12", "rules[0].ports: empty list",
        L "rules:\n  - name: a\n    host: example.com\n    ports: []\n    action: allow\n"},
    {"6:13", "got \"65536\"",
        L "rules:\n  - name: a\n    host: example.com\n    ports: [65536]\n    action: allow\n"},
    {"7:11", "duplicate rule name \"a\" (first at line 4)",
        L "rules:\n  - name: a\n    host: example.com\n    action: allow\n  - name: a\n"
          "    host: example.org\n    action: allow\n"},
    {"10:17", "rules[0].credential: unknown credential \"gihub\"",
        L V "rules:\n  - name: a\n    host: api.github.com\n    action: inject\n"
            "    credential: gihub\n"},
    {"7:5", "rules[0]: action inject needs a credential",
        L V "rules:\n  - name: a\n    host: api.github.com\n    action: inject\n"},
    {"10:17", "rules[0].credential: only valid with action: inject",
        L V "rules:\n  - name: a\n    host: api.github.com\n    action: allow\n"
            "    credential: gh\n"},
    {"5:11", "rules[0].host: bad host \"*foo.example.com\"",
        L "rules:\n  - name: a\n    host: \"*foo.example.com\"\n    action: allow\n"},
    {"5:11", "rules[0].host: bad host \"foo.*.com\"",
        L "rules:\n  - name: a\n    host: foo.*.com\n    action: allow\n"},
    {"5:11", "rules[0].host: bad host \"*.10.0.0.1\"",
        L "rules:\n  - name: a\n    host: \"*.10.0.0.1\"\n    action: allow\n"},
    {"5:11", "rules[0].host: bad host \"0x7f.1\"",
        L "rules:\n  - name: a\n    host: 0x7f.1\n    action: allow\n"},
    {"6:11", "rules[0].path: bad path glob \"repos/*\" (must start with \"/\")",
        L "rules:\n  - name: a\n    host: x.example\n    path: repos/*\n    action: allow\n"},
    {"6:11", "only \"*\" and \"?\" are wildcards",
        L "rules:\n  - name: a\n    host: x.example\n    path: /a[bc]\n    action: allow\n"},
    {"6:20", "rules[0].methods: unknown method \"FETCH\"",
        L "rules:\n  - name: a\n    host: x.example\n    methods: [GET, FETCH]\n"
          "    action: allow\n"},
    {"6:14", "rules[0].agents: unknown agent \"ci\"",
        L "rules:\n  - name: a\n    host: x.example\n    agents: [ci]\n    action: allow\n"},
    {"6:13", "rules[0].action: expected allow, deny or inject, got \"permit\"",
        L "rules:\n  - name: a\n    host: x.example\n    action: permit\n"},
    {"4:5", "missing required key \"action\" in rules[0]",
        L "rules:\n  - name: a\n    host: x.example\n"},
    {"7:14", "rules[0].approve: expected none, device, cli or any, got \"button\"",
        L "rules:\n  - name: a\n    host: x.example\n    action: allow\n    approve: button\n"},
    {"7:14", "rules[0].approve: not valid with action: deny",
        L "rules:\n  - name: a\n    host: x.example\n    action: deny\n    approve: cli\n"},
    {"1:1", "missing required key \"approvals\" (rule \"a\" has approve: device)",
        L "rules:\n  - name: a\n    host: x.example\n    action: allow\n    approve: device\n"},
    {"9:3", "missing required key \"device\" in approvals (rule \"a\" has approve: any)",
        L "rules:\n  - name: a\n    host: x.example\n    action: allow\n    approve: any\n"
          "approvals:\n  timeout: 10s\n"},
    {"1:1", "missing required key \"vault\" (credentials are defined)",
        L "credentials:\n  gh: {header: Authorization, format: \"{secret}\"}\nrules: []\n"},
    {"5:27", "credentials.gh.format: must contain \"{secret}\" exactly once",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: A, format: \"token\"}\n"
          "rules: []\n"},
    {"5:27", "must contain \"{secret}\" exactly once",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: A, format: \"{secret}{secret}\"}\n"
          "rules: []\n"},
    {"5:27", "credentials.gh.format: control characters are not allowed",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: A, format: \"{secret}\\r\\nX: y\"}\n"
          "rules: []\n"},
    {"5:16", "credentials.gh.header: bad header name \"Auth orization\"",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: Auth orization, format: \"{secret}\"}\n"
          "rules: []\n"},
    {"5:16", "credentials.gh.header: header \"Host\" cannot be injected",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: Host, format: \"{secret}\"}\n"
          "rules: []\n"},
    {"5:3", "bad credential name \"_buddy\"",
        L "vault: {backend: tpm2}\ncredentials:\n  _buddy: {header: A, format: \"{secret}\"}\n"
          "rules: []\n"},
    {"5:45", "credentials.gh.hold: bad duration \"5 minutes\"",
        L "vault: {backend: tpm2}\ncredentials:\n  gh: {header: A, format: \"{secret}\", hold: 5 minutes}\n"
          "rules: []\n"},
    {"5:12", "approvals.timeout: bad duration \"soon\"",
        L "rules: []\napprovals:\n  timeout: soon\n"},
    {"5:13", "approvals.max_body: bad size \"lots\"",
        L "rules: []\napprovals:\n  max_body: lots\n"},
    {"6:11", "approvals.device.baud: unsupported baud rate 12345",
        L "rules: []\napprovals:\n  device:\n    baud: 12345\n"},
    {"5:19", "agents[0].token_sha256: expected 64 hex characters",
        L "agents:\n  - name: ci\n    token_sha256: 9f86d0\nrules: []\n"},
    {"4:11", "agents[0].name: bad agent name \"-\"",
        L "agents:\n  - name: \"-\"\n    token_sha256: " SHA_TEST "\nrules: []\n"},
    {"5:28", "network.allow_cidrs: bad cidr \"10.0.0.0/33\"",
        L "rules: []\nnetwork:\n  allow_cidrs: [127.0.0.1, 10.0.0.0/33]\n"},
    {"5:21", "resolve.api.example.test: bad IP address \"localhost\"",
        L "rules: []\nresolve:\n  api.example.test: localhost\n"},
    {"5:3", "resolve: bad host name \"1.2.3.4\"",
        L "rules: []\nresolve:\n  1.2.3.4: 1.2.3.4\n"},
    {"6:3", "resolve: duplicate host \"a.example\"",
        L "rules: []\nresolve:\n  a.example: 127.0.0.1\n  A.example.: 127.0.0.2\n"},
    {"3:10", "default: expected deny or allow, got \"reject\"", L "default: reject\nrules: []\n"},
    {"4:12", "vault.backend: expected pkcs11 or tpm2, got \"yubikey\"",
        L "vault:\n  backend: yubikey\nrules: []\n"},
    {"4:3", "missing required key \"pkcs11\" in vault (backend: pkcs11)",
        L "vault:\n  backend: pkcs11\nrules: []\n"},
    {"6:10", "vault.pkcs11.pin: expected env:NAME or file:PATH",
        L "vault:\n  backend: pkcs11\n  pkcs11: {module: m.so, token: \"pkcs11:token=a\",\n"
          "    pin: \"1234\"}\nrules: []\n"},
    {"3:10", "version: unsupported version \"2\" (expected 1)", L "version: 2\nrules: []\n"},
    {"4:14", "tls.intercept: expected true or false, got \"yes\"",
        L "tls:\n  intercept: yes\nrules: []\n"},
    {"1:9", "anchors and aliases are not supported", "listen: &l\n  http: 127.0.0.1:1\nrules: []\n"},
    {"3:8", "anchors and aliases are not supported",
        "listen:\n  http: 127.0.0.1:1\nrules: *r\n"},
    {"3:8", "tags are not supported", L "rules: !!seq []\n"},
    {"4:1", "yaml: did not find expected node content", L "rules: [\n"},
    {"4:1", "only one yaml document is allowed", L "rules: []\n---\nx: 1\n"},
    {"4:20", "limits.max_connections: expected an integer 1..1000000, got \"0\"",
        L "limits:\n  max_connections: 0\nrules: []\n"},
    {"4:19", "limits.unseal_timeout: duration must be 100ms..60s, got \"50ms\"",
        L "limits:\n  unseal_timeout: 50ms\nrules: []\n"},
    {"4:19", "limits.unseal_timeout: duration must be 100ms..60s, got \"2m\"",
        L "limits:\n  unseal_timeout: 2m\nrules: []\n"},
    {"4:19", "limits.unseal_timeout: bad duration \"5\"",
        L "limits:\n  unseal_timeout: 5\nrules: []\n"},
};

static void
test_bad_configs(void **state)
{
    size_t i, failed = 0;

    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
        if (check_bad(bad_cases[i].text, bad_cases[i].where, bad_cases[i].sub) == -1)
            failed++;
    assert_int_equal(failed, 0);
}

/* Bounds: file size, rule count and nesting depth are refused, not worked through. */
static void
test_limits(void **state)
{
    size_t cap = 1100 * 1024, n, i;
    char *big = malloc(cap);

    assert_non_null(big);
    n = (size_t)snprintf(big, cap, L "rules:\n");
    for (i = 0; i < 10001; i++)
        n += (size_t)snprintf(big + n, cap - n, "- {name: r%zu, host: h.example, action: deny}\n",
            i);
    expect_bad(big, "4:1", "rules: too many rules (at most 10000)");
    n = (size_t)snprintf(big, cap, L "rules: []\n");
    while (n < 1024 * 1024 + 10)
        n += (size_t)snprintf(big + n, cap - n, "# padding padding padding padding\n");
    expect_bad(big, "1:1", "file is larger than 1 MiB");
    n = (size_t)snprintf(big, cap, L "rules: []\nnetwork: ");
    for (i = 0; i < 40; i++)
        big[n++] = '[';
    for (i = 0; i < 40; i++)
        big[n++] = ']';
    big[n++] = '\n';
    big[n] = '\0';
    expect_bad(big, "4:42", "nesting too deep");
    free(big);
}

static void
test_unreadable(void **state)
{
    char path[PATH_MAX + 64];
    struct err err;

    snprintf(path, sizeof(path), "%s/missing.yaml", tmpdir);
    assert_null(policy_load(path, &err));
    assert_int_equal(err.code, ERR_IO);
    assert_non_null(strstr(err.msg, ": cannot read: No such file or directory"));
    assert_null(policy_load(tmpdir, &err));
    assert_int_equal(err.code, ERR_IO);
    write_config("listen: {http: 127.0.0.1:1}\nrules: [\xff]\n", 36);
    assert_null(policy_load(cfgpath, &err));
    assert_int_equal(err.code, ERR_USAGE);
}

/* Every file in tests/data/configs/bad is refused at the position its first line names. */
static void
test_data_dir(void **state)
{
    const char *data = getenv("AIRLOCK_TEST_DATA");
    char path[PATH_MAX], line[512], want[PATH_MAX + 600];
    struct policy *p;
    struct err err;
    int checked = 0;
    FILE *f, *ls;

    if (data == NULL)
        skip();
    snprintf(path, sizeof(path), "%s/configs/good-minimal.yaml", data);
    if ((p = policy_load(path, &err)) == NULL)
        fail_msg("%s", err.msg);
    policy_unref(p);
    snprintf(line, sizeof(line), "ls %s/configs/bad/*.yaml", data);
    assert_non_null(ls = popen(line, "r"));
    while (fgets(path, sizeof(path), ls) != NULL) {
        path[strcspn(path, "\n")] = '\0';
        assert_non_null(f = fopen(path, "r"));
        assert_non_null(fgets(line, sizeof(line), f));
        fclose(f);
        line[strcspn(line, "\n")] = '\0';
        assert_int_equal(strncmp(line, "# expect: ", 10), 0);
        assert_null(p = policy_load(path, &err));
        snprintf(want, sizeof(want), "%s:%.*s", path, (int)strcspn(line + 10, " "), line + 10);
        if (strncmp(err.msg, want, strlen(want)) != 0 ||
            strstr(err.msg, line + 10 + strcspn(line + 10, " ") + 1) == NULL)
            fail_msg("%s: got \"%s\", expected \"%s\"", path, err.msg, line + 10);
        checked++;
    }
    pclose(ls);
    assert_true(checked >= 14);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_full_config_rules),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_connection_verdicts),
        cmocka_unit_test(test_host_checks),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_address_allowed),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_data_dir),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

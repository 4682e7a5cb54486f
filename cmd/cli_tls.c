/*
 * `airlock ca` and `airlock env` (SPEC section 5): where the local CA is and what its
 * fingerprint is, and the shell lines that route tools through airlock and make them
 * trust its CA. With --agent the proxy URLs carry the agent's token, so the whole output
 * is assembled in locked memory and written with write(2), never through stdio.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/net.h"
#include "common/secmem.h"
#include "common/util.h"
#include "policy/policy.h"
#include "proxy/tls.h"

#define TOKEN_MAX 1024          /* longest proxy password accepted */
#define ENV_OUT_MAX (64 * 1024) /* every line of `airlock env` together */
#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define SYSTEM_BUNDLE_MAX (16 * 1024 * 1024)

static int
ca_path(const struct policy *p, const char *file, char *out, size_t outlen)
{
    if (snprintf(out, outlen, "%s/%s", p->state_dir, file) >= (int)outlen) {
        fprintf(stderr, "airlock: %s: path too long\n", p->state_dir);
        return -1;
    }
    return 0;
}

int
cli_ca(const struct policy *p)
{
    char path[PATH_MAX], fp[TLS_FINGERPRINT_LEN];
    struct err err;

    if (ca_path(p, "ca.pem", path, sizeof(path)) == -1)
        return 1;
    err_clear(&err);
    if (tls_cert_fingerprint(path, fp, sizeof(fp), &err) == -1) {
        if (err.code == ERR_NOTFOUND)
            fprintf(stderr, "airlock: ca: %s does not exist (run airlock init)\n", path);
        else
            fprintf(stderr, "airlock: ca: %s\n", err.msg);
        return 1;
    }
    printf("%s\nsha256 %s\n", path, fp);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Reads one line (without its line ending) from fd into sb; -1 when too long or on error. */
static int
read_line_fd(int fd, struct secbuf *sb)
{
    unsigned char *nl;

    if (secbuf_read_fd(sb, fd, 1) == -1)
        return -1;
    if ((nl = memchr(sb->data, '\n', sb->len)) != NULL) {
        explicit_bzero(nl, sb->len - (size_t)(nl - sb->data));
        sb->len = (size_t)(nl - sb->data);
    }
    if (sb->len == sb->cap)
        return -1; /* no line end within TOKEN_MAX: refuse rather than cut a token */
    if (sb->len > 0 && sb->data[sb->len - 1] == '\r')
        sb->data[--sb->len] = '\0';
    return 0;
}

/* The agent's token from token_file, or stdin (prompting with echo off on a tty). */
static int
read_token(const char *agent, const char *token_file, struct secbuf *sb)
{
    struct termios old, quiet;
    int fd, rc;

    if (token_file != NULL) {
        if ((fd = open(token_file, O_RDONLY | O_CLOEXEC)) == -1) {
            fprintf(stderr, "airlock: env: %s: %s\n", token_file, strerror(errno));
            return -1;
        }
        rc = read_line_fd(fd, sb);
        close(fd);
    } else if (!isatty(STDIN_FILENO)) {
        rc = read_line_fd(STDIN_FILENO, sb);
    } else {
        if (tcgetattr(STDIN_FILENO, &old) == -1)
            return -1;
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        fprintf(stderr, "token for agent %s: ", agent);
        fflush(stderr);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == -1)
            return -1;
        rc = read_line_fd(STDIN_FILENO, sb);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (rc == -1 || sb->len == 0) {
        fprintf(stderr, "airlock: env: cannot read the token for agent %s (%s)\n", agent,
                rc == -1 ? "unreadable or longer than 1024 bytes" : "empty");
        return -1;
    }
    return 0;
}

/* Checks the token against the agent's token_sha256; prints why not. */
static int
check_agent(const struct policy *p, const char *agent, const struct secbuf *token)
{
    size_t i;

    for (i = 0; i < p->nagents && strcmp(p->agents[i].name, agent) != 0; i++)
        ;
    if (i == p->nagents) {
        fprintf(stderr, "airlock: env: %s: no agent named \"%s\"%s\n", p->path, agent,
                p->nagents == 0 ? " (no agents are configured, so none is needed)" : "");
        return -1;
    }
    if (policy_authenticate(p, agent, (const char *)token->data, token->len) == NULL) {
        fprintf(stderr, "airlock: env: token does not match agent %s\n", agent);
        return -1;
    }
    return 0;
}

static int
add_str(struct secbuf *sb, const char *s)
{
    return secbuf_append(sb, s, strlen(s));
}

/* RFC 3986 userinfo: unreserved characters as they are, everything else %XX. */
static int
add_pct(struct secbuf *sb, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char e[3] = {'%', 0, 0};
    size_t i;
    int rc = 0;

    for (i = 0; i < n && rc == 0; i++) {
        if ((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
            (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.' || s[i] == '_' ||
            s[i] == '~') {
            rc = secbuf_append(sb, &s[i], 1);
            continue;
        }
        e[1] = (unsigned char)hex[s[i] >> 4];
        e[2] = (unsigned char)hex[s[i] & 15];
        rc = secbuf_append(sb, e, 3);
    }
    explicit_bzero(e, sizeof(e));
    return rc;
}

/* "export NAME='value'" with ' written as '\'' (POSIX sh single quoting). */
static int
add_export(struct secbuf *out, const char *name, const unsigned char *v, size_t n)
{
    size_t i;

    if (add_str(out, "export ") == -1 || add_str(out, name) == -1 || add_str(out, "='") == -1)
        return -1;
    for (i = 0; i < n; i++)
        if ((v[i] == '\'' ? add_str(out, "'\\''") : secbuf_append(out, &v[i], 1)) == -1)
            return -1;
    return add_str(out, "'\n");
}

/* The address clients should dial: a wildcard listen address means loopback. */
static void
dial_text(const struct policy_listen *l, char *out, size_t outlen)
{
    struct sockaddr_storage ss = l->addr;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

    if (ss.ss_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_ANY))
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
        sin6->sin6_addr = in6addr_loopback;
    net_format_addr((struct sockaddr *)&ss, out, outlen);
}

/* scheme://[agent:token@]host:port into url, in order. */
static int
build_url(struct secbuf *url, const char *scheme, const char *hostport, const char *agent,
          const struct secbuf *token)
{
    if (add_str(url, scheme) == -1 || add_str(url, "://") == -1)
        return -1;
    if (agent != NULL) {
        if (add_pct(url, (const unsigned char *)agent, strlen(agent)) == -1 ||
            add_str(url, ":") == -1 || add_pct(url, token->data, token->len) == -1 ||
            add_str(url, "@") == -1)
            return -1;
    }
    return add_str(url, hostport);
}

/* Exports upper- and lower-case NAME as the proxy URL of listener l. */
static int
add_proxy(struct secbuf *out, const char *const names[2], const char *scheme,
          const struct policy_listen *l, const char *agent, const struct secbuf *token)
{
    char hostport[128];
    struct secbuf *url;
    int rc = -1;

    if (!l->enabled)
        return 0;
    if ((url = secbuf_new(4 * TOKEN_MAX)) == NULL)
        return -1;
    dial_text(l, hostport, sizeof(hostport));
    if (build_url(url, scheme, hostport, agent, token) == 0 &&
        add_export(out, names[0], url->data, url->len) == 0 &&
        add_export(out, names[1], url->data, url->len) == 0)
        rc = 0;
    secbuf_free(url);
    return rc;
}

/*
 * SSL_CERT_FILE replaces OpenSSL's whole trust store, so it must point at the system bundle
 * plus airlock's CA, not at ca.pem alone; rewritten on each run so system updates reach it.
 */
static int
write_bundle(const char *ca_pem, const char *bundle)
{
    char *sys, *ca;
    size_t sys_len = 0, ca_len = 0, n;
    char *all;
    int rc = -1;

    if ((ca = util_read_file(ca_pem, 64 * 1024, &ca_len)) == NULL) {
        fprintf(stderr, "airlock: env: %s: %s\n", ca_pem, strerror(errno));
        return -1;
    }
    if ((sys = util_read_file(SYSTEM_BUNDLE, SYSTEM_BUNDLE_MAX, &sys_len)) == NULL)
        fprintf(stderr, "airlock: env: %s unreadable: %s trusts only airlock's CA\n", SYSTEM_BUNDLE,
                bundle);
    n = sys_len + 1 + ca_len;
    if ((all = malloc(n)) != NULL) {
        memcpy(all, sys != NULL ? sys : "", sys_len);
        n = sys_len;
        if (n > 0 && all[n - 1] != '\n')
            all[n++] = '\n';
        memcpy(all + n, ca, ca_len);
        n += ca_len;
        if ((rc = util_write_file_atomic(bundle, all, n, 0644)) == -1)
            fprintf(stderr, "airlock: env: %s: %s\n", bundle, strerror(errno));
    }
    free(all);
    free(sys);
    free(ca);
    return rc;
}

/* The trust lines: bundle for OpenSSL-based tools, ca.pem for Node (it adds, not replaces). */
static int
add_trust(struct secbuf *out, const char *bundle, const char *ca_pem)
{
    static const char *const bundle_vars[] = {"SSL_CERT_FILE", "CURL_CA_BUNDLE",
                                              "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT"};
    size_t i;

    for (i = 0; i < sizeof(bundle_vars) / sizeof(bundle_vars[0]); i++)
        if (add_export(out, bundle_vars[i], (const unsigned char *)bundle, strlen(bundle)) == -1)
            return -1;
    return add_export(out, "NODE_EXTRA_CA_CERTS", (const unsigned char *)ca_pem, strlen(ca_pem));
}

static int
write_all(int fd, const unsigned char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        if ((w = write(fd, p, n)) == -1 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Assembles every export line into out; 0, or -1 after printing why. */
static int
build_env(const struct policy *p, const char *agent, const struct secbuf *token, struct secbuf *out)
{
    static const char *const http[2] = {"HTTP_PROXY", "http_proxy"};
    static const char *const https[2] = {"HTTPS_PROXY", "https_proxy"};
    static const char *const all[2] = {"ALL_PROXY", "all_proxy"};
    char ca_pem[PATH_MAX], bundle[PATH_MAX];
    int have_ca;

    if (ca_path(p, "ca.pem", ca_pem, sizeof(ca_pem)) == -1 ||
        ca_path(p, "ca-bundle.pem", bundle, sizeof(bundle)) == -1)
        return -1;
    have_ca = access(ca_pem, R_OK) == 0;
    if (!have_ca && p->tls.intercept) {
        fprintf(stderr, "airlock: env: %s does not exist (run airlock init)\n", ca_pem);
        return -1;
    }
    if (add_proxy(out, http, "http", &p->listen_http, agent, token) == -1 ||
        add_proxy(out, https, "http", &p->listen_http, agent, token) == -1 ||
        add_proxy(out, all, "socks5h", &p->listen_socks5, agent, token) == -1 ||
        /* Empty on purpose: nothing bypasses airlock, not even localhost. */
        add_export(out, "NO_PROXY", (const unsigned char *)"", 0) == -1 ||
        add_export(out, "no_proxy", (const unsigned char *)"", 0) == -1) {
        fprintf(stderr, "airlock: env: output too long\n");
        return -1;
    }
    if (!have_ca)
        return 0;
    if (write_bundle(ca_pem, bundle) == -1)
        return -1;
    if (add_trust(out, bundle, ca_pem) == -1) {
        fprintf(stderr, "airlock: env: output too long\n");
        return -1;
    }
    return 0;
}

int
cli_env(const struct policy *p, const char *agent, const char *token_file)
{
    struct secbuf *token = NULL, *out = NULL;
    int rc = 1;

    if (agent == NULL && token_file != NULL) {
        fprintf(stderr, "airlock: env: --token-file needs --agent NAME\n");
        return 2;
    }
    if ((out = secbuf_new(ENV_OUT_MAX)) == NULL || (token = secbuf_new(TOKEN_MAX)) == NULL) {
        fprintf(stderr, "airlock: env: cannot allocate locked memory: %s\n", strerror(errno));
        goto done;
    }
    if (agent != NULL &&
        (read_token(agent, token_file, token) == -1 || check_agent(p, agent, token) == -1))
        goto done;
    if (build_env(p, agent, token, out) == -1)
        goto done;
    if (agent == NULL && p->nagents > 0)
        fprintf(stderr, "airlock: env: the proxy requires an agent: add --agent NAME\n");
    if (write_all(STDOUT_FILENO, out->data, out->len) == -1) {
        fprintf(stderr, "airlock: env: cannot write: %s\n", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    secbuf_free(token);
    secbuf_free(out);
    return rc;
}

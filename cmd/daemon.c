/*
 * airlockd's wiring. Start-up failures are fatal with a clear message (exit 1, or 2 for
 * configuration); after start-up nothing a client or a config reload does stops the daemon.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "approvals/approvals.h"
#include "approvals/control.h"
#include "audit/audit.h"
#include "cmd/daemon.h"
#include "cmd/daemon_internal.h"
#include "common/log.h"
#include "common/secmem.h"
#include "common/util.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

#define DAEMON_DRAIN_MS 10000



int
daemon_check(const char *config_path)
{
    struct policy *p;
    struct err err;

    if ((p = policy_load(config_path, &err)) == NULL) {
        log_error("%s", err.msg);
        return err.code == ERR_USAGE ? 2 : 1;
    }
    printf("%s: ok (%zu rules)\n", config_path, p->nrules);
    policy_unref(p);
    return 0;
}

/*
 * Each proxied connection holds two descriptors (client and upstream). Raises the soft
 * RLIMIT_NOFILE towards what max_connections needs, up to the hard limit; short of it,
 * accept() fails with EMFILE before the limit is reached (and the listeners pause).
 */
static void
fit_nofile(uint32_t max_connections)
{
    rlim_t want = (rlim_t)max_connections * 2 + 64;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur < want)
        log_warn("max_connections %u needs about %llu file descriptors; RLIMIT_NOFILE allows "
                 "%llu", max_connections, (unsigned long long)want,
            (unsigned long long)rl.rlim_cur);
}

static int
daemon_reload(struct daemon *d, struct err *err)
{
    struct policy *p;

    if ((p = policy_load(d->config_path, err)) == NULL) {
        log_error("reload failed: %s", err->msg);
        return -1;
    }
    if (p->listen_http.enabled != d->pol->listen_http.enabled ||
        p->listen_socks5.enabled != d->pol->listen_socks5.enabled ||
        strcmp(p->listen_http.text, d->pol->listen_http.text) != 0 ||
        strcmp(p->listen_socks5.text, d->pol->listen_socks5.text) != 0 ||
        strcmp(p->audit_path, d->pol->audit_path) != 0)
        log_warn("reload: listen addresses and audit path take effect only after a restart");
    if (p->max_connections > d->pol->max_connections)
        fit_nofile(p->max_connections);
    proxy_set_policy(d->proxy, p);
    policy_unref(d->pol);
    d->pol = p;
    log_info("policy reloaded from %s (%zu rules)", d->config_path, p->nrules);
    daemon_device_reload(d);
    return 0;
}

static json_t *
on_status(void *arg)
{
    struct daemon *d = arg;
    struct proxy_stats st;
    json_t *device = daemon_device_status(d);

    proxy_stats(d->proxy, &st);
    /* "o?": a device status that could not be built is null rather than no reply at all */
    return json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o?}",
        "config", d->config_path, "pid", (json_int_t)getpid(), "audit", d->pol->audit_path, "rules",
        (json_int_t)d->pol->nrules, "uptime_s",
        (json_int_t)((util_wall_ms() - d->started_ms) / 1000), "connections_active",
        (json_int_t)st.connections_active, "connections_total",
        (json_int_t)st.connections_total, "requests_total", (json_int_t)st.requests_total,
        "injections_total", (json_int_t)st.injections_total, "unseals_total",
        (json_int_t)st.unseals_total, "pending", (json_int_t)approvals_count(d->approvals),
        "device", device);
}

static int
on_control_reload(void *arg, struct err *err)
{
    return daemon_reload(arg, err);
}

static void
on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct err err;

    (void)daemon_reload(arg, &err);
}

static void
on_drained(void *arg)
{
    struct daemon *d = arg;

    event_base_loopexit(d->base, NULL);
}

static void
on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;

    if (d->stopping) {
        log_warn("second signal: exiting now");
        event_base_loopexit(d->base, NULL);
        return;
    }
    d->stopping = 1;
    log_info("shutting down: denying %zu pending approvals, finishing requests in flight "
             "(up to %d s)", approvals_count(d->approvals), DAEMON_DRAIN_MS / 1000);
    approvals_shutdown(d->approvals);
    control_free(d->control);
    d->control = NULL;
    proxy_drain(d->proxy, DAEMON_DRAIN_MS, on_drained, d);
}

static int
make_dir(const char *path)
{
    if (mkdir(path, 0700) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

static int
daemon_start(struct daemon *d, struct err *err)
{
    struct proxy_deps deps;

    if (secmem_harden_process() == -1)
        log_warn("cannot disable core dumps: %s", strerror(errno));
    fit_nofile(d->pol->max_connections);
    if ((d->base = event_base_new()) == NULL)
        return err_set(err, ERR_INTERNAL, "event_base_new failed");
    d->dns = evdns_base_new(d->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (d->dns == NULL)
        log_warn("no DNS resolver (check /etc/resolv.conf): only resolve: names will work");
    if (make_dir(d->pol->state_dir) == -1)
        return err_set(err, ERR_IO, "%s: cannot create state directory: %s", d->pol->state_dir,
            strerror(errno));
    if ((d->audit = audit_open(d->pol->audit_path, err)) == NULL)
        return -1;
    d->approvals = approvals_new(d->base, d->pol->approvals.max_pending,
        d->pol->approvals.timeout_ms);
    if (d->approvals == NULL)
        return err_set(err, ERR_INTERNAL, "cannot create the approvals queue");
    if (d->pol->control_path != NULL &&
        (d->control = control_new(d->base, d->pol->control_path, d->approvals, on_status,
             on_control_reload, d, err)) == NULL)
        return -1;
    memset(&deps, 0, sizeof(deps));
    deps.base = d->base;
    deps.dns = d->dns;
    deps.audit = d->audit;
    deps.approvals = d->approvals;
    if ((d->proxy = proxy_new(&deps, d->pol, err)) == NULL)
        return -1;
    /* After the proxy: the pair key is unsealed on the proxy's token worker. */
    if (daemon_device_start(d) == -1)
        return err_set(err, ERR_USAGE, "cannot start the buddy device link");
    d->sighup = evsignal_new(d->base, SIGHUP, on_sighup, d);
    d->sigterm = evsignal_new(d->base, SIGTERM, on_sigterm, d);
    d->sigint = evsignal_new(d->base, SIGINT, on_sigterm, d);
    if (d->sighup == NULL || d->sigterm == NULL || d->sigint == NULL)
        return err_set(err, ERR_INTERNAL, "cannot install signal handlers");
    evsignal_add(d->sighup, NULL);
    evsignal_add(d->sigterm, NULL);
    evsignal_add(d->sigint, NULL);
    return 0;
}

static void
daemon_stop(struct daemon *d)
{
    sigset_t stop_sigs;

    /* Tearing down (final audit sync, token worker join): a further SIGTERM/SIGINT/SIGHUP
     * stays pending instead of killing the process halfway once the signal events are
     * freed and the default dispositions are back. The process exits right after. */
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL);
    control_free(d->control);
    daemon_device_stop(d); /* cancels its unseal before the proxy's token worker goes */
    proxy_free(d->proxy);
    approvals_free(d->approvals);
    if (d->audit != NULL)
        audit_close(d->audit);
    if (d->sighup != NULL)
        event_free(d->sighup);
    if (d->sigterm != NULL)
        event_free(d->sigterm);
    if (d->sigint != NULL)
        event_free(d->sigint);
    if (d->dns != NULL)
        evdns_base_free(d->dns, 0);
    if (d->base != NULL)
        event_base_free(d->base);
    policy_unref(d->pol);
}

int
daemon_run(const char *config_path)
{
    struct daemon d;
    struct err err;
    int status = 0;

    memset(&d, 0, sizeof(d));
    d.config_path = config_path;
    d.started_ms = util_wall_ms();
    signal(SIGPIPE, SIG_IGN);
    if ((d.pol = policy_load(config_path, &err)) == NULL) {
        log_error("%s", err.msg);
        return err.code == ERR_USAGE ? 2 : 1;
    }
    if (daemon_start(&d, &err) == -1) {
        log_error("%s", err.msg);
        status = 1;
    } else {
        log_info("ready (%zu rules, pid %ld)", d.pol->nrules, (long)getpid());
        event_base_dispatch(d.base);
        log_info("stopped");
    }
    daemon_stop(&d);
#ifdef __SANITIZE_ADDRESS__
    /* LeakSanitizer ptraces the process at exit, which PR_SET_DUMPABLE 0 forbids. Every
     * secret is wiped by now; sanitizer builds only. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
    return status;
}

/* Private to the daemon's wiring (daemon.c, daemon_device.c). */
#ifndef AIRLOCK_CMD_DAEMON_INTERNAL_H
#define AIRLOCK_CMD_DAEMON_INTERNAL_H

#include <stdint.h>

struct event;
struct event_base;
struct evdns_base;
struct daemon_device;
struct hsm_config;
struct json_t;
struct policy;

struct daemon {
    const char *config_path;
    struct event_base *base;
    struct evdns_base *dns;
    struct policy *pol;
    struct audit *audit;
    struct approvals *approvals;
    struct control *control;
    struct proxy *proxy;
    struct daemon_device *device; /* the buddy device side (daemon_device.c), or NULL */
    uint64_t started_ms;
    struct event *sighup, *sigterm, *sigint;
    int stopping;
};

/* Starts the device side when approvals.device is set; -1 only when the link cannot be made. */
int daemon_device_start(struct daemon *d);
void daemon_device_stop(struct daemon *d);
/* After d->pol was replaced: restarts the device side if its settings changed, or tries
 * the pair key now if it is still waiting for it. Never fails the reload. */
void daemon_device_reload(struct daemon *d);
/*
 * The device side for `airlock status`: {"state": not_configured | off | waiting_for_key
 * | absent | connecting | connected, plus "path", "reason", "attempts", "devid" where they
 * apply}. New reference, or NULL when out of memory.
 */
struct json_t *daemon_device_status(const struct daemon *d);

#endif

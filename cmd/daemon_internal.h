/* Private to the daemon's wiring (daemon.c, daemon_device.c). */
#ifndef AIRLOCK_CMD_DAEMON_INTERNAL_H
#define AIRLOCK_CMD_DAEMON_INTERNAL_H

#include <stdint.h>

struct event;
struct event_base;
struct evdns_base;
struct hsm_config;
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
    struct buddy_link *buddy;
    int buddy_observer;
    uint64_t started_ms;
    struct event *sighup, *sigterm, *sigint, *sync_timer;
    int stopping;
};

int daemon_device_start(struct daemon *d);
void daemon_device_stop(struct daemon *d);

#endif

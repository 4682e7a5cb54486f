/*
 * The daemon's buddy link against the real firmware core on a pseudo-terminal pair, all
 * in this process: the link opens the pty slave through a symlink (as with device.path),
 * the firmware state machine sits on the master. Checks the HELLO handshake, SHOW of the
 * oldest item, decisions, every kind of hostile line, unplug/replug and pairing. Every
 * wait is a bounded event loop (event_base_loopexit).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/secmem.h"
#include "common/util.h"
#include "device/buddy.h"
#include "device/firmware/buddy_fw.h"

struct dev {
    int master, slave_keep;
    char slave_path[128];
    struct buddy_fw fw;
    struct event *ev;
    uint32_t now_ms;
    char last_line[BUDDY_LINE_MAX + 1];
    int hellos, shown, cleared;
    char shown_id[8];
    uint8_t stored_key[32];
    int stored;
};

static struct event_base *base;
static char dir[64], link_path[128];
static uint8_t key_bytes[32];
static struct secbuf *key;
static struct dev dev;

static struct {
    int n, approve, remove_in_cb;
    char id[8], devid[17];
    struct buddy_link *l;
} got;

static void
on_decision(const char *id, int approve, const char *devid, void *arg)
{
    got.n++;
    got.approve = approve;
    util_strlcpy(got.id, id, sizeof(got.id));
    util_strlcpy(got.devid, devid, sizeof(got.devid));
    if (got.remove_in_cb)
        buddy_link_item_removed(got.l, id); /* what the daemon does via approvals */
}

static void
dev_write(const char *line, size_t len, void *arg)
{
    struct dev *d = arg;

    assert_int_equal(write(d->master, line, len), (ssize_t)len);
    memcpy(d->last_line, line, len);
    d->last_line[len] = '\0';
}

static void
dev_event(enum buddy_fw_event ev, const char *id, const char *text, void *arg)
{
    struct dev *d = arg;

    if (ev == BUDDY_FW_EV_HELLO)
        d->hellos++;
    if (ev == BUDDY_FW_EV_SHOWN) {
        d->shown++;
        util_strlcpy(d->shown_id, id, sizeof(d->shown_id));
    }
    if (ev == BUDDY_FW_EV_CLEARED)
        d->cleared++;
}

static int
dev_store(const uint8_t k[32], void *arg)
{
    struct dev *d = arg;

    memcpy(d->stored_key, k, 32);
    d->stored++;
    return 0;
}

static void
dev_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct dev *d = arg;
    unsigned char buf[512];
    ssize_t n = read(d->master, buf, sizeof(buf)), i;

    for (i = 0; i < n; i++)
        buddy_fw_feed_byte(&d->fw, buf[i]);
}

/* A fresh pty "plugged in" at link_path, with the firmware on its master side. */
static void
dev_plug(struct dev *d, const uint8_t *k, int pairing, int with_event)
{
    struct buddy_fw_config cfg = {"AB12", k, pairing, dev_write, dev_store, dev_event, d};
    struct termios tio;

    memset(d, 0, sizeof(*d));
    d->master = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(d->master >= 0);
    assert_int_equal(grantpt(d->master), 0);
    assert_int_equal(unlockpt(d->master), 0);
    assert_int_equal(ptsname_r(d->master, d->slave_path, sizeof(d->slave_path)), 0);
    /* Hold the slave open so the master never sees EIO between the link's opens, and
     * make it raw before the link does, so nothing is echoed back. */
    d->slave_keep = open(d->slave_path, O_RDWR | O_NOCTTY);
    assert_true(d->slave_keep >= 0);
    assert_int_equal(tcgetattr(d->slave_keep, &tio), 0);
    cfmakeraw(&tio);
    assert_int_equal(tcsetattr(d->slave_keep, TCSANOW, &tio), 0);
    assert_int_equal(fcntl(d->master, F_SETFL, O_NONBLOCK), 0);
    unlink(link_path);
    assert_int_equal(symlink(d->slave_path, link_path), 0);
    buddy_fw_init(&d->fw, &cfg);
    buddy_fw_tick(&d->fw, d->now_ms, 0);
    if (with_event) {
        d->ev = event_new(base, d->master, EV_READ | EV_PERSIST, dev_on_read, d);
        event_add(d->ev, NULL);
    }
}

/* Unplug: the master goes away, so the link's reads fail with EIO. */
static void
dev_unplug(struct dev *d)
{
    if (d->ev != NULL)
        event_free(d->ev);
    d->ev = NULL;
    close(d->slave_keep);
    close(d->master);
    buddy_fw_clear(&d->fw);
}

static void
dev_press(struct dev *d, int hold_ms)
{
    int t;

    for (t = 0; t < hold_ms; t += 10)
        buddy_fw_tick(&d->fw, d->now_ms += 10, 1);
    for (t = 0; t < 100; t += 10)
        buddy_fw_tick(&d->fw, d->now_ms += 10, 0);
}

static void
dev_send(struct dev *d, const void *p, size_t n)
{
    assert_int_equal(write(d->master, p, n), (ssize_t)n);
}

static void
pump_ms(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Runs the loop in 20 ms slices until *counter reaches want or timeout_ms passes. */
static int
pump_until(const void *counter, int is64, uint64_t want, int timeout_ms)
{
    uint64_t deadline = util_now_us() + (uint64_t)timeout_ms * 1000;

    for (;;) {
        uint64_t v = is64 ? *(const uint64_t *)counter : (uint64_t)*(const int *)counter;
        if (v >= want)
            return 1;
        if (util_now_us() >= deadline)
            return 0;
        pump_ms(20);
    }
}

/* Pumps until the link has ignored at least want lines in total. */
static int
pump_stats_until(struct buddy_link *l, uint64_t want, int timeout_ms)
{
    uint64_t deadline = util_now_us() + (uint64_t)timeout_ms * 1000;
    struct buddy_link_stats st;

    for (;;) {
        buddy_link_stats(l, &st);
        if (st.malformed + st.bad_mac + st.replayed + st.unknown_id + st.overlong >= want)
            return 1;
        if (util_now_us() >= deadline)
            return 0;
        pump_ms(20);
    }
}

static struct buddy_link *
link_start(int auth_hmac)
{
    struct buddy_link_config cfg = {link_path, 115200, auth_hmac};
    struct buddy_link *l;
    struct err err;

    l = buddy_link_new(base, &cfg, auth_hmac ? key : NULL, on_decision, NULL, &err);
    if (l == NULL)
        fail_msg("%s", err.msg);
    got.l = l;
    return l;
}

static int
setup(void **state)
{
    int i;

    snprintf(dir, sizeof(dir), "/tmp/airlock-buddy-XXXXXX");
    if (mkdtemp(dir) == NULL || (base = event_base_new()) == NULL)
        return -1;
    snprintf(link_path, sizeof(link_path), "%s/buddy", dir);
    for (i = 0; i < 32; i++)
        key_bytes[i] = (uint8_t)(0xa0 + i);
    key = secbuf_new(32);
    secbuf_append(key, key_bytes, 32);
    memset(&got, 0, sizeof(got));
    return 0;
}

static int
teardown(void **state)
{
    unlink(link_path);
    rmdir(dir);
    secbuf_free(key);
    event_base_free(base);
    return 0;
}

static void
test_handshake_show_approve(void **state)
{
    struct buddy_link *l;
    struct buddy_link_stats st;

    dev_plug(&dev, key_bytes, 0, 1);
    l = link_start(1);
    buddy_link_item_added(l, "AAAAA1", "POST api.example.test /first (ci-bot)");
    buddy_link_item_added(l, "BBBBB2", "DELETE api.example.test /second\x01\xff");
    assert_true(pump_until(&dev.shown, 0, 1, 3000));
    assert_true(buddy_link_connected(l));
    assert_string_equal(buddy_link_devid(l), "AB12");
    assert_int_equal(dev.hellos, 1);
    assert_string_equal(dev.shown_id, "AAAAA1"); /* the oldest */

    got.remove_in_cb = 1;
    dev_press(&dev, 100);
    assert_true(pump_until(&got.n, 0, 1, 3000));
    assert_string_equal(got.id, "AAAAA1");
    assert_int_equal(got.approve, 1);
    assert_string_equal(got.devid, "AB12");
    /* The daemon removed it: CLEAR, then the next one shows. */
    assert_true(pump_until(&dev.shown, 0, 2, 3000));
    assert_string_equal(dev.shown_id, "BBBBB2");
    assert_int_equal(dev.cleared, 1);

    dev_press(&dev, 1600); /* long press: deny */
    assert_true(pump_until(&got.n, 0, 2, 3000));
    assert_string_equal(got.id, "BBBBB2");
    assert_int_equal(got.approve, 0);
    buddy_link_stats(l, &st);
    assert_int_equal(st.malformed + st.bad_mac + st.replayed + st.unknown_id + st.overlong, 0);
    buddy_link_free(l);
    dev_unplug(&dev);
}

/* Writes "APPROVE <id> <mac>" computed with k over nonce (NULL k: a made-up mac). */
static void
send_decision(const char *type, const char *id, const uint8_t *k, const char *nonce)
{
    char msg[128], mac[33] = "00112233445566778899aabbccddeeff", line[128];

    if (k != NULL) {
        snprintf(msg, sizeof(msg), "%s|%s|%s", type, id, nonce);
        buddy_mac(k, msg, mac);
    }
    snprintf(line, sizeof(line), "%s %s %s\n", type, id, mac);
    dev_send(&dev, line, strlen(line));
}

static void
test_hostile_lines_decide_nothing(void **state)
{
    struct buddy_link *l;
    struct buddy_link_stats st;
    uint8_t wrong_key[32];
    char big[400], replay[BUDDY_LINE_MAX + 1];
    static const unsigned char garbage[] = {0x00, 0xff, 0x01, 'A', 'P', 0x80, '\r', '\n'};

    memset(wrong_key, 0x55, sizeof(wrong_key));
    dev_plug(&dev, key_bytes, 0, 1);
    l = link_start(1);
    buddy_link_item_added(l, "AAAAA1", "POST api.example.test /a");
    buddy_link_item_added(l, "BBBBB2", "POST api.example.test /b");
    assert_true(pump_until(&dev.shown, 0, 1, 3000));

    /* Forged macs: made up, and right shape under the wrong key (nonce guessed too). */
    send_decision("APPROVE", "AAAAA1", NULL, NULL);
    send_decision("APPROVE", "AAAAA1", wrong_key, dev.fw.shown_nonce);
    /* Unknown id, and the not-yet-shown item with the right key but no nonce of its own. */
    send_decision("APPROVE", "ZZZZZ9", key_bytes, dev.fw.shown_nonce);
    send_decision("APPROVE", "BBBBB2", key_bytes, dev.fw.shown_nonce);
    /* Overlong line, binary garbage, a host-side message, an auth-none mac. */
    memset(big, 'A', sizeof(big));
    big[sizeof(big) - 1] = '\n';
    dev_send(&dev, big, sizeof(big));
    dev_send(&dev, garbage, sizeof(garbage));
    dev_send(&dev, "SHOW AAAAA1 0123456789abcdef x\n", 31);
    dev_send(&dev, "APPROVE AAAAA1 -\n", 17);
    assert_true(pump_stats_until(l, 8, 3000));
    assert_true(pump_until(&got.n, 0, 1, 300) == 0); /* nothing decided */
    buddy_link_stats(l, &st);
    assert_int_equal(st.bad_mac, 3);
    assert_int_equal(st.unknown_id, 2);
    assert_int_equal(st.overlong, 1);
    assert_int_equal(st.malformed, 2);
    assert_int_equal(got.n, 0);

    /* A real press still works afterwards. The daemon takes its time (no removal in the
     * callback), so the same line sent again is a replay of a spent nonce. */
    dev_press(&dev, 100);
    assert_true(pump_until(&got.n, 0, 1, 3000));
    assert_string_equal(got.id, "AAAAA1");
    strcpy(replay, dev.last_line);
    dev_send(&dev, replay, strlen(replay));
    assert_true(pump_stats_until(l, 9, 3000));
    buddy_link_stats(l, &st);
    assert_int_equal(st.replayed, 1);
    assert_int_equal(got.n, 1);
    /* The link showed the undecided item again with a fresh nonce; the old line stays
     * dead, even after the item is gone. */
    assert_true(pump_until(&dev.shown, 0, 2, 3000));
    buddy_link_item_removed(l, "AAAAA1");
    assert_true(pump_until(&dev.shown, 0, 3, 3000));
    assert_string_equal(dev.shown_id, "BBBBB2");
    dev_send(&dev, replay, strlen(replay));
    assert_true(pump_stats_until(l, 10, 3000));
    buddy_link_stats(l, &st);
    assert_int_equal(st.replayed, 2);
    assert_int_equal(got.n, 1);
    buddy_link_free(l);
    dev_unplug(&dev);
}

static int
pump_until_connected(struct buddy_link *l, int want, int timeout_ms)
{
    uint64_t deadline = util_now_us() + (uint64_t)timeout_ms * 1000;

    while (buddy_link_connected(l) != want) {
        if (util_now_us() >= deadline)
            return 0;
        pump_ms(20);
    }
    return 1;
}

static void
test_unplug_and_replug(void **state)
{
    struct buddy_link *l;

    dev_plug(&dev, key_bytes, 0, 1);
    l = link_start(1);
    buddy_link_item_added(l, "CCCCC3", "PUT api.example.test /c");
    assert_true(pump_until(&dev.shown, 0, 1, 3000));

    dev_unplug(&dev);
    assert_true(pump_until_connected(l, 0, 3000));
    assert_null(buddy_link_devid(l));
    pump_ms(1200); /* a poll or two against a dangling path must be harmless */

    /* Plugged back in (a new pty behind the same path): HELLO again, SHOW again. */
    dev_plug(&dev, key_bytes, 0, 1);
    assert_true(pump_until(&dev.shown, 0, 1, 3000));
    assert_int_equal(dev.hellos, 1);
    assert_string_equal(dev.shown_id, "CCCCC3");
    assert_true(buddy_link_connected(l));
    got.remove_in_cb = 1;
    dev_press(&dev, 100);
    assert_true(pump_until(&got.n, 0, 1, 3000));
    assert_string_equal(got.id, "CCCCC3");
    buddy_link_free(l);
    dev_unplug(&dev);
}

static void
test_wrong_key_never_connects(void **state)
{
    struct buddy_link *l;
    struct buddy_link_stats st;
    uint8_t other[32];

    memset(other, 0x77, sizeof(other));
    dev_plug(&dev, other, 0, 1);
    l = link_start(1);
    buddy_link_item_added(l, "DDDDD4", "POST api.example.test /d");
    assert_true(pump_until(&dev.hellos, 0, 1, 3000));
    pump_ms(200);
    buddy_link_stats(l, &st);
    assert_int_equal(st.bad_mac, 1);
    assert_false(buddy_link_connected(l));
    assert_int_equal(dev.shown, 0); /* nothing is shown to an unauthenticated device */
    /* Its presses are refused even if it somehow learned the id. */
    send_decision("APPROVE", "DDDDD4", other, "0123456789abcdef");
    assert_true(pump_stats_until(l, 2, 3000));
    assert_int_equal(got.n, 0);
    buddy_link_free(l);
    dev_unplug(&dev);
}

static void
test_auth_none(void **state)
{
    struct buddy_link *l;

    dev_plug(&dev, NULL, 0, 1);
    l = link_start(0);
    buddy_link_item_added(l, "EEEEE5", "GET api.example.test /e");
    assert_true(pump_until(&dev.shown, 0, 1, 3000));
    assert_string_equal(dev.fw.shown_id, "EEEEE5");
    got.remove_in_cb = 1;
    dev_press(&dev, 100);
    assert_true(pump_until(&got.n, 0, 1, 3000));
    assert_string_equal(dev.last_line, "APPROVE EEEEE5 -\n");
    buddy_link_free(l);
    dev_unplug(&dev);
}

static volatile int dev_thread_stop;

/* The device side without an event loop, for the blocking pairing call. */
static void *
dev_thread(void *arg)
{
    struct dev *d = arg;
    uint64_t deadline = util_now_us() + 10 * 1000000ULL;

    while (!dev_thread_stop && util_now_us() < deadline) {
        struct pollfd pfd = {d->master, POLLIN, 0};
        if (poll(&pfd, 1, 10) == 1)
            dev_on_read(d->master, EV_READ, d);
        buddy_fw_tick(&d->fw, d->now_ms += 10, 0);
    }
    return NULL;
}

static int
pair_with(int pairing, uint8_t newkey[32], char devid[17], struct err *err)
{
    pthread_t th;
    int r;

    dev_plug(&dev, key_bytes, pairing, 0);
    dev_thread_stop = 0;
    assert_int_equal(pthread_create(&th, NULL, dev_thread, &dev), 0);
    r = buddy_pair_blocking(link_path, 115200, newkey, devid, 3000, err);
    dev_thread_stop = 1;
    pthread_join(th, NULL);
    dev_unplug(&dev);
    return r;
}

static void
test_pairing(void **state)
{
    uint8_t newkey[32];
    char devid[17] = "";
    struct err err;

    memset(newkey, 0x3c, sizeof(newkey));
    assert_int_equal(pair_with(0, newkey, devid, &err), -1);
    assert_non_null(strstr(err.msg, "not in pairing mode"));
    assert_int_equal(dev.stored, 0);

    assert_int_equal(pair_with(1, newkey, devid, &err), 0);
    assert_string_equal(devid, "AB12");
    assert_int_equal(dev.stored, 1);
    assert_memory_equal(dev.stored_key, newkey, 32);

    err_clear(&err);
    assert_int_equal(buddy_pair_blocking("/nonexistent/tty", 115200, newkey, devid, 100, &err),
        -1);
    assert_non_null(strstr(err.msg, "/nonexistent/tty"));
}

static void
test_config_errors(void **state)
{
    struct buddy_link_config cfg = {link_path, 115200, 1};
    struct err err;

    assert_null(buddy_link_new(base, &cfg, NULL, on_decision, NULL, &err));
    assert_non_null(strstr(err.msg, "pair key"));
    cfg.baud = 12345;
    assert_null(buddy_link_new(base, &cfg, key, on_decision, NULL, &err));
    assert_non_null(strstr(err.msg, "unsupported baud rate 12345"));
    cfg.baud = 115200;
    cfg.path = "";
    assert_null(buddy_link_new(base, &cfg, key, on_decision, NULL, &err));
    buddy_link_free(NULL);
}

/* The simulator binary: started with its stdout on a pipe we read lines from. */
struct simproc {
    pid_t pid;
    int out;
    char text[8192];
    size_t len;
};

static int
sim_start(struct simproc *sp, const char *const *args)
{
    const char *bdir = getenv("AIRLOCK_BUILD_DIR");
    char path[512];
    const char *argv[16];
    int fds[2], i, devnull;

    snprintf(path, sizeof(path), "%s/cmd/airlock-buddy-sim", bdir != NULL ? bdir : ".");
    if (access(path, X_OK) != 0) {
        if (bdir != NULL) /* under ctest the binary is a dependency: it must be there */
            fail_msg("%s: not built", path);
        return -1; /* run by hand from elsewhere: skip */
    }
    assert_int_equal(pipe(fds), 0);
    memset(sp, 0, sizeof(*sp));
    argv[0] = path;
    for (i = 0; args[i] != NULL && i < 14; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    sp->pid = fork();
    assert_true(sp->pid >= 0);
    if (sp->pid == 0) {
        devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, STDIN_FILENO);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    sp->out = fds[0];
    fcntl(sp->out, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Pumps the loop and reads the simulator's stdout until it contains want. */
static int
sim_wait_for(struct simproc *sp, const char *want, int timeout_ms)
{
    uint64_t deadline = util_now_us() + (uint64_t)timeout_ms * 1000;
    ssize_t n;

    while (strstr(sp->text, want) == NULL) {
        if (util_now_us() >= deadline)
            return 0;
        n = read(sp->out, sp->text + sp->len, sizeof(sp->text) - 1 - sp->len);
        if (n > 0) {
            sp->len += (size_t)n;
            sp->text[sp->len] = '\0';
        }
        pump_ms(20);
    }
    return 1;
}

static int
sim_stop(struct simproc *sp)
{
    int status = -1, i;

    kill(sp->pid, SIGTERM);
    for (i = 0; i < 300; i++) {
        if (waitpid(sp->pid, &status, WNOHANG) == sp->pid)
            break;
        usleep(10000);
    }
    if (i == 300) {
        kill(sp->pid, SIGKILL);
        waitpid(sp->pid, &status, 0);
    }
    sim_wait_for(sp, "bye", 200);
    close(sp->out);
    return status;
}

static void
test_simulator_binary(void **state)
{
    struct simproc sp;
    struct buddy_link *l;
    char key_file[160], hex[80];
    const char *args[] = {"--link", link_path, "--key-file", key_file, "--devid", "SIM7",
        "--auto", "approve", "--delay", "50", NULL};
    struct stat st;
    int status;

    snprintf(key_file, sizeof(key_file), "%s/buddy.key", dir);
    buddy_hex_encode(key_bytes, 32, hex);
    strcat(hex, "\n");
    assert_int_equal(util_write_file_atomic(key_file, hex, strlen(hex), 0600), 0);
    if (sim_start(&sp, args) < 0)
        skip();
    assert_true(sim_wait_for(&sp, "ready /dev/pts/", 3000));
    l = link_start(1);
    got.remove_in_cb = 1;
    buddy_link_item_added(l, "FFFFF6", "POST api.example.test /x (ci-bot)");
    assert_true(pump_until(&got.n, 0, 1, 5000));
    assert_string_equal(got.id, "FFFFF6");
    assert_int_equal(got.approve, 1);
    assert_string_equal(got.devid, "SIM7");
    assert_true(sim_wait_for(&sp, "shown FFFFF6 POST api.example.test /x (ci-bot)\n", 2000));
    assert_true(sim_wait_for(&sp, "approved FFFFF6\n", 2000));
    assert_true(sim_wait_for(&sp, "cleared FFFFF6\n", 2000));
    buddy_link_free(l);
    status = sim_stop(&sp);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_non_null(strstr(sp.text, "bye"));
    assert_int_equal(lstat(link_path, &st), -1); /* its symlink is gone */
    unlink(key_file);
}

static void
test_simulator_pairing(void **state)
{
    struct simproc sp;
    char key_file[160], devid[17], hex[80];
    const char *args[] = {"--link", link_path, "--key-file", key_file, "--pairing", NULL};
    uint8_t newkey[32];
    struct err err;
    struct stat st;
    char *text;

    snprintf(key_file, sizeof(key_file), "%s/paired.key", dir);
    if (sim_start(&sp, args) < 0)
        skip();
    assert_true(sim_wait_for(&sp, "ready /dev/pts/", 3000));
    memset(newkey, 0x5a, sizeof(newkey));
    if (buddy_pair_blocking(link_path, 115200, newkey, devid, 3000, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(devid, "SIM1");
    assert_true(sim_wait_for(&sp, "paired\n", 2000));
    sim_stop(&sp);
    assert_int_equal(stat(key_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    text = util_read_file(key_file, 256, NULL);
    assert_non_null(text);
    buddy_hex_encode(newkey, 32, hex);
    strcat(hex, "\n");
    assert_string_equal(text, hex);
    free(text);
    unlink(key_file);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_show_approve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_lines_decide_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unplug_and_replug, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_never_connects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pairing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simulator_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simulator_pairing, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

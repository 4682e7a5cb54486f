/*
 * airlock-buddy-sim: a software buddy device on a pseudo-terminal (SPEC §7). It runs the
 * firmware state machine (device/firmware/buddy_fw.c) with a simulated button, so demos
 * and tests exercise exactly what the hardware runs. One line per event on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/secmem.h"
#include "common/util.h"
#include "device/firmware/buddy_fw.h"

#define TICK_MS 10
#define SHORT_PRESS_MS 100
#define LONG_PRESS_MS (BUDDY_FW_LONG_PRESS_MS + 100)

struct sim {
    const char *link, *key_file, *devid;
    int auth_none, pairing, auto_mode; /* auto_mode: 0 off, 1 approve, -1 deny */
    unsigned delay_ms;
    int master, slave_keep;
    char slave_path[PATH_MAX];
    struct buddy_fw fw;
    uint32_t press_until_ms; /* button held until then */
    int pressing;
    int auto_armed;
    uint32_t auto_at_ms;
    char auto_id[BUDDY_ID_LEN + 1];
    int stdin_tty, stdin_open;
    struct termios stdin_saved;
};

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
    stop_signal = sig;
}

static uint32_t
now_ms(void)
{
    return (uint32_t)(util_now_us() / 1000);
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: airlock-buddy-sim [--link PATH] (--key-file PATH | --auth none)\n"
               "         [--devid ID] [--auto approve|deny [--delay MS]] [--pairing]\n"
               "  keys on a terminal: a approve, d deny (long press), q quit\n");
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One event per line, flushed at once so a test reading the pipe sees it. */
static void
say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void
fw_write(const char *line, size_t len, void *arg)
{
    struct sim *s = arg;

    /* Non-blocking: with nobody reading the tty, lines are dropped, as on a real cable. */
    if (write(s->master, line, len) != (ssize_t)len)
        fprintf(stderr, "airlock-buddy-sim: line to host dropped: %s\n", strerror(errno));
}

static int
fw_store_key(const uint8_t key[BUDDY_KEY_LEN], void *arg)
{
    struct sim *s = arg;
    char hex[BUDDY_KEY_HEX_LEN + 2];
    int r;

    buddy_hex_encode(key, BUDDY_KEY_LEN, hex);
    strcat(hex, "\n");
    r = util_write_file_atomic(s->key_file, hex, strlen(hex), 0600);
    explicit_bzero(hex, sizeof(hex));
    if (r < 0)
        fprintf(stderr, "airlock-buddy-sim: %s: cannot write the key\n", s->key_file);
    return r;
}

static void
fw_event(enum buddy_fw_event ev, const char *id, const char *text, void *arg)
{
    struct sim *s = arg;

    switch (ev) {
    case BUDDY_FW_EV_HELLO:
        say("hello %s", text);
        break;
    case BUDDY_FW_EV_SHOWN:
        say("shown %s %s", id, text);
        if (s->auto_mode != 0) {
            s->auto_armed = 1;
            s->auto_at_ms = now_ms() + s->delay_ms;
            util_strlcpy(s->auto_id, id, sizeof(s->auto_id));
        }
        break;
    case BUDDY_FW_EV_CLEARED:
        say("cleared %s", id);
        break;
    case BUDDY_FW_EV_APPROVED:
        say("approved %s", id);
        break;
    case BUDDY_FW_EV_DENIED:
        say("denied %s", id);
        break;
    case BUDDY_FW_EV_PAIRING:
        say("pairing");
        break;
    case BUDDY_FW_EV_PAIRED:
        say("paired");
        break;
    case BUDDY_FW_EV_ERROR:
        say("error %s", text);
        break;
    case BUDDY_FW_EV_HOST_LOST:
        say("host-lost");
        break;
    }
}

/* 64 hex characters, optionally followed by a newline. */
static int
load_key(const char *path, uint8_t key[BUDDY_KEY_LEN])
{
    size_t len = 0;
    char *text = util_read_file(path, 256, &len);
    int r = -1;

    if (text == NULL) {
        fprintf(stderr, "airlock-buddy-sim: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    if (buddy_valid_key_hex(text) && buddy_hex_decode(text, key, BUDDY_KEY_LEN) == 0)
        r = 0;
    else
        fprintf(stderr, "airlock-buddy-sim: %s: expected 64 lower-case hex characters\n",
            path);
    explicit_bzero(text, len);
    free(text);
    return r;
}

static int
parse_args(struct sim *s, int argc, char **argv)
{
    static const struct option opts[] = {{"link", required_argument, NULL, 'l'},
        {"key-file", required_argument, NULL, 'k'}, {"auth", required_argument, NULL, 'A'},
        {"devid", required_argument, NULL, 'i'}, {"auto", required_argument, NULL, 'a'},
        {"delay", required_argument, NULL, 'D'}, {"pairing", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    char *end;
    long v;
    int c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': s->link = optarg; break;
        case 'k': s->key_file = optarg; break;
        case 'i': s->devid = optarg; break;
        case 'p': s->pairing = 1; break;
        case 'A':
            if (strcmp(optarg, "none") != 0 && strcmp(optarg, "hmac") != 0)
                return -1;
            s->auth_none = strcmp(optarg, "none") == 0;
            break;
        case 'a':
            if (strcmp(optarg, "approve") != 0 && strcmp(optarg, "deny") != 0)
                return -1;
            s->auto_mode = strcmp(optarg, "approve") == 0 ? 1 : -1;
            break;
        case 'D':
            v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 0 || v > 3600000)
                return -1;
            s->delay_ms = (unsigned)v;
            break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind != argc || !buddy_valid_devid(s->devid))
        return -1;
    if (s->key_file == NULL && (!s->auth_none || s->pairing))
        return -1; /* hmac needs a key; pairing needs somewhere to keep it */
    return 0;
}

static int
open_pty(struct sim *s)
{
    struct termios tio;

    s->master = posix_openpt(O_RDWR | O_NOCTTY);
    if (s->master < 0 || grantpt(s->master) < 0 || unlockpt(s->master) < 0 ||
        ptsname_r(s->master, s->slave_path, sizeof(s->slave_path)) != 0)
        return -1;
    /* Keeping the slave open ourselves means a daemon closing it (unplug, restart) never
     * turns the master into an EIO storm; the next open simply works. Raw mode is set
     * here too so nothing is echoed before the daemon configures the line. */
    s->slave_keep = open(s->slave_path, O_RDWR | O_NOCTTY);
    if (s->slave_keep < 0 || tcgetattr(s->slave_keep, &tio) < 0)
        return -1;
    cfmakeraw(&tio);
    if (tcsetattr(s->slave_keep, TCSANOW, &tio) < 0)
        return -1;
    return fcntl(s->master, F_SETFL, O_NONBLOCK);
}

/* Replaces a symlink (never a regular file) at s->link with one to the pty slave. */
static int
make_link(struct sim *s)
{
    struct stat st;

    if (s->link == NULL)
        return 0;
    if (lstat(s->link, &st) == 0) {
        if (!S_ISLNK(st.st_mode)) {
            fprintf(stderr, "airlock-buddy-sim: %s exists and is not a symlink\n", s->link);
            return -1;
        }
        unlink(s->link);
    }
    if (symlink(s->slave_path, s->link) < 0) {
        fprintf(stderr, "airlock-buddy-sim: %s: symlink: %s\n", s->link, strerror(errno));
        return -1;
    }
    return 0;
}

/* Removes the link only if it still points at our pty (another sim may own it now). */
static void
remove_link(struct sim *s)
{
    char target[PATH_MAX];
    ssize_t n;

    if (s->link == NULL)
        return;
    n = readlink(s->link, target, sizeof(target) - 1);
    if (n < 0)
        return;
    target[n] = '\0';
    if (strcmp(target, s->slave_path) == 0)
        unlink(s->link);
}

static void
restore_stdin(struct sim *s)
{
    if (s->stdin_tty)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &s->stdin_saved);
    s->stdin_tty = 0;
}

/* Single keys without Enter and without echo; ISIG stays on so ^C still works. */
static void
setup_stdin(struct sim *s)
{
    struct termios tio;

    s->stdin_open = 1;
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &s->stdin_saved) < 0)
        return;
    tio = s->stdin_saved;
    tio.c_lflag &= ~(ICANON | ECHO);
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &tio) == 0)
        s->stdin_tty = 1;
}

static void
press(struct sim *s, int approve)
{
    if (s->pressing)
        return;
    s->pressing = 1;
    s->press_until_ms = now_ms() + (approve ? SHORT_PRESS_MS : LONG_PRESS_MS);
}

/* Returns 1 when the user asked to quit. */
static int
read_stdin(struct sim *s)
{
    char buf[64];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf)), i;

    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            s->stdin_open = 0; /* a closed pipe is not a quit: --auto may be running */
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (buf[i] == 'a')
            press(s, 1);
        else if (buf[i] == 'd')
            press(s, 0);
        else if (buf[i] == 'q')
            return 1;
    }
    return 0;
}

static void
read_host(struct sim *s)
{
    unsigned char buf[512];
    ssize_t n, i;
    int rounds;

    for (rounds = 0; rounds < 8; rounds++) {
        n = read(s->master, buf, sizeof(buf));
        if (n <= 0)
            return; /* EAGAIN, or EIO which cannot last: we hold the slave open */
        for (i = 0; i < n; i++)
            buddy_fw_feed_byte(&s->fw, buf[i]);
    }
}

static void
tick(struct sim *s)
{
    uint32_t now = now_ms();
    const char *shown;

    if (s->auto_armed && (int32_t)(now - s->auto_at_ms) >= 0) {
        s->auto_armed = 0;
        shown = buddy_fw_shown_id(&s->fw);
        if (shown != NULL && strcmp(shown, s->auto_id) == 0)
            press(s, s->auto_mode > 0);
    }
    if (s->pressing && (int32_t)(now - s->press_until_ms) >= 0)
        s->pressing = 0;
    buddy_fw_tick(&s->fw, now, s->pressing);
}

static int
run(struct sim *s)
{
    for (;;) {
        struct pollfd pfd[2] = {{s->master, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        int n = poll(pfd, s->stdin_open ? 2 : 1, TICK_MS);

        if (stop_signal)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0 && (pfd[0].revents & POLLIN))
            read_host(s);
        if (n > 0 && s->stdin_open && (pfd[1].revents & (POLLIN | POLLHUP)) && read_stdin(s))
            return 0;
        if (n > 0 && (pfd[0].revents & (POLLHUP | POLLERR)) && !(pfd[0].revents & POLLIN))
            usleep(TICK_MS * 1000); /* bounded: never spin on a hung-up master */
        tick(s);
    }
}

int
main(int argc, char **argv)
{
    struct sim s = {.devid = "SIM1", .delay_ms = 500, .master = -1, .slave_keep = -1};
    struct buddy_fw_config cfg = {0};
    struct sigaction sa;
    uint8_t key[BUDDY_KEY_LEN];
    int have_key = 0, r;

    if (parse_args(&s, argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    if (s.key_file != NULL && !s.auth_none && access(s.key_file, F_OK) == 0) {
        if (load_key(s.key_file, key) < 0)
            return 2;
        have_key = 1;
    } else if (s.key_file != NULL && !s.auth_none && !s.pairing) {
        fprintf(stderr, "airlock-buddy-sim: %s: %s\n", s.key_file, strerror(errno));
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (open_pty(&s) < 0) {
        fprintf(stderr, "airlock-buddy-sim: cannot open a pseudo-terminal: %s\n",
            strerror(errno));
        return 1;
    }
    if (make_link(&s) < 0)
        return 1;
    cfg.devid = s.devid;
    cfg.key = have_key ? key : NULL;
    cfg.pairing = s.pairing;
    cfg.write = fw_write;
    cfg.store_key = fw_store_key;
    cfg.event = fw_event;
    cfg.arg = &s;
    buddy_fw_init(&s.fw, &cfg);
    explicit_bzero(key, sizeof(key));
    buddy_fw_tick(&s.fw, now_ms(), 0);
    setup_stdin(&s);
    say("ready %s%s%s", s.slave_path, s.pairing ? " pairing" : "",
        have_key ? "" : " (no key: macs are \"-\")");
    r = run(&s);
    restore_stdin(&s);
    remove_link(&s);
    buddy_fw_clear(&s.fw);
    say("bye");
    return r < 0 ? 1 : 0;
}

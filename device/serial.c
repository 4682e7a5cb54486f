/*
 * Serial ports for the buddy device: open a tty non-blocking without making it our
 * controlling terminal, put it in raw 8N1 with no flow control (the protocol is plain
 * lines; XON/XOFF or RTS/CTS would only let a wedged device stall us), and find the
 * device under /dev/serial/by-id for `path: auto`.
 */
#include "device/buddy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/util.h"

#define BY_ID_DIR "/dev/serial/by-id"
#define BY_ID_MAX_ENTRIES 256

static int
baud_constant(unsigned baud, speed_t *out)
{
    static const struct {
        unsigned baud;
        speed_t constant;
    } table[] = {{9600, B9600}, {19200, B19200}, {38400, B38400}, {57600, B57600},
        {115200, B115200}, {230400, B230400}, {460800, B460800}, {921600, B921600}};
    size_t i;

    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (table[i].baud == baud) {
            *out = table[i].constant;
            return 0;
        }
    }
    return -1;
}

int
buddy_serial_baud_supported(unsigned baud)
{
    speed_t speed;

    return baud_constant(baud, &speed) == 0;
}

int
buddy_serial_open(const char *path, unsigned baud, struct err *err)
{
    struct termios tio;
    speed_t speed;
    int fd;

    if (baud_constant(baud, &speed) < 0)
        return err_set(err, ERR_USAGE, "%s: unsupported baud rate %u", path, baud);
    fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_IO, "%s: open: %s", path, strerror(errno));
    if (!isatty(fd)) {
        close(fd);
        return err_set(err, ERR_IO, "%s: not a terminal", path);
    }
    if (tcgetattr(fd, &tio) < 0) {
        err_set(err, ERR_IO, "%s: tcgetattr: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    cfmakeraw(&tio);
    tio.c_cflag &= ~(CSTOPB | PARENB | CRTSCTS | CSIZE);
    tio.c_cflag |= CS8 | CLOCAL | CREAD;
    tio.c_iflag &= ~(IXON | IXOFF | IXANY);
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    if (cfsetispeed(&tio, speed) < 0 || cfsetospeed(&tio, speed) < 0 ||
        tcsetattr(fd, TCSANOW, &tio) < 0) {
        err_set(err, ERR_IO, "%s: tcsetattr: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    tcflush(fd, TCIOFLUSH);
    return fd;
}

int
buddy_serial_auto_path(char *out, size_t cap)
{
    DIR *d = opendir(BY_ID_DIR);
    struct dirent *de;
    char best[256] = "";
    int n = 0;

    if (d == NULL)
        return -1;
    /* Sorted by name so "first" is stable across reboots, not readdir order. */
    while ((de = readdir(d)) != NULL && n++ < BY_ID_MAX_ENTRIES) {
        if (de->d_name[0] == '.')
            continue;
        if (best[0] == '\0' || strcmp(de->d_name, best) < 0)
            util_strlcpy(best, de->d_name, sizeof(best));
    }
    closedir(d);
    if (best[0] == '\0')
        return -1;
    if ((size_t)snprintf(out, cap, "%s/%s", BY_ID_DIR, best) >= cap)
        return -1;
    return 0;
}

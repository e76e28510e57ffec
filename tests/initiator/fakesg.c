/* fakesg: an LD_PRELOAD shim that answers SG_IO ioctls on /dev/null from a rules file,
 * so sg3_utils binaries and initiator.sgio can run on a host without SCSI devices.
 *
 * Test aid only. Environment:
 *   FAKESG_RULES  rules file (required; without it the shim passes everything through)
 *   FAKESG_LOG    optional file; one line appended per SG_IO:
 *                 "<cdb hex> <dxfer_direction> <dxfer_len> <data-out hex> <timeout ms>"
 *   FAKESG_DELAY_MS  optional; each SG_IO sleeps that long (to test concurrency)
 * Rules, one per line, '#' starts a comment, fields separated by blanks, '-' = empty:
 *   CDB_PREFIX_HEX STATUS_HEX SENSE_HEX DATA_IN_HEX [HOST_HEX [DRIVER_HEX]]
 * The first rule whose prefix matches the CDB's leading bytes answers. STATUS "eNN"
 * makes the ioctl fail with errno NN (decimal). No match: CHECK CONDITION, 05/20/00.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <scsi/sg.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MAXB 65536

typedef int (*ioctl_fn)(int, unsigned long, void *);

static int unhex(const char *s, unsigned char *out, int max)
{
    int n = 0;

    if (strcmp(s, "-") == 0)
        return 0;
    while (s[0] && s[1] && n < max) {
        unsigned int b;

        if (sscanf(s, "%2x", &b) != 1)
            break;
        out[n++] = (unsigned char)b;
        s += 2;
    }
    return n;
}

static void put_hex(FILE *f, const unsigned char *p, unsigned int n)
{
    if (n == 0)
        fputc('-', f);
    for (unsigned int i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

static int is_dev_null(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
           minor(st.st_rdev) == 3;
}

static void log_cmd(const sg_io_hdr_t *h)
{
    const char *path = getenv("FAKESG_LOG");
    FILE *f;

    if (!path || !(f = fopen(path, "a")))
        return;
    put_hex(f, h->cmdp, h->cmd_len);
    fprintf(f, " %d %u ", h->dxfer_direction, h->dxfer_len);
    put_hex(f, h->dxferp, h->dxfer_direction == SG_DXFER_TO_DEV ? h->dxfer_len : 0);
    fprintf(f, " %u\n", h->timeout);
    fclose(f);
}

struct scratch {
    unsigned char sense[MAXB], data[MAXB], prefix[MAXB];
    char line[4 * MAXB], pre[MAXB], sense_hex[MAXB], data_hex[2 * MAXB];
};

/* Fill in h from the first matching rule of the file at `path`; s is per call so that
 * concurrent SG_IO calls from several threads do not share buffers. */
static int answer_from(const char *path, sg_io_hdr_t *h, struct scratch *s)
{
    char st[16], host[16], drv[16];
    FILE *rules = fopen(path, "r");
    int found = 0, sense_len = 18, data_len = 0;

    h->status = 0x02;
    h->host_status = 0;
    h->driver_status = 0;
    h->resid = 0;
    h->duration = 1;
    h->info = 0;
    memcpy(s->sense, "\x70\x00\x05\x00\x00\x00\x00\x0a\x00\x00\x00\x00\x20\x00\x00\x00\x00\x00",
           18);
    while (rules && !found && fgets(s->line, sizeof(s->line), rules)) {
        char *hash = strchr(s->line, '#');

        if (hash)
            *hash = '\0';
        strcpy(host, "0");
        strcpy(drv, "0");
        if (sscanf(s->line, "%65535s %15s %65535s %131071s %15s %15s", s->pre, st, s->sense_hex,
                   s->data_hex, host, drv) < 4)
            continue;
        int plen = unhex(s->pre, s->prefix, MAXB);

        if (plen > h->cmd_len || memcmp(s->prefix, h->cmdp, plen) != 0)
            continue;
        found = 1;
        if (st[0] == 'e') {
            fclose(rules);
            errno = atoi(st + 1);
            return -1;
        }
        h->status = (unsigned char)strtoul(st, NULL, 16);
        h->host_status = (unsigned short)strtoul(host, NULL, 16);
        h->driver_status = (unsigned short)strtoul(drv, NULL, 16);
        sense_len = unhex(s->sense_hex, s->sense, MAXB);
        data_len = unhex(s->data_hex, s->data, MAXB);
    }
    if (rules)
        fclose(rules);
    if (h->dxfer_direction == SG_DXFER_FROM_DEV) {
        unsigned int n = (unsigned int)data_len < h->dxfer_len ? (unsigned int)data_len
                                                               : h->dxfer_len;

        memcpy(h->dxferp, s->data, n);
        h->resid = (int)(h->dxfer_len - n);
    }
    h->sb_len_wr = (unsigned char)(sense_len < h->mx_sb_len ? sense_len : h->mx_sb_len);
    memcpy(h->sbp, s->sense, h->sb_len_wr);
    h->masked_status = (h->status >> 1) & 0x7f;
    if (h->status || h->host_status || h->driver_status)
        h->info |= SG_INFO_CHECK;
    return 0;
}

static int answer(sg_io_hdr_t *h)
{
    struct scratch *s;
    int ret;

    if (h->interface_id != 'S') {
        errno = ENOSYS;
        return -1;
    }
    log_cmd(h);
    if (getenv("FAKESG_DELAY_MS"))
        usleep(1000 * (useconds_t)atoi(getenv("FAKESG_DELAY_MS")));
    s = malloc(sizeof(*s));
    if (!s) {
        errno = ENOMEM;
        return -1;
    }
    ret = answer_from(getenv("FAKESG_RULES"), h, s);
    free(s);
    return ret;
}

int ioctl(int fd, unsigned long req, ...)
{
    static ioctl_fn real;
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (!real)
        real = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
    if (req == SG_IO && getenv("FAKESG_RULES") && is_dev_null(fd))
        return answer((sg_io_hdr_t *)arg);
    return real(fd, req, arg);
}

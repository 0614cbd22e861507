#include <string.h>
#include <time.h>

#include "devices/rtc.h"

enum {
    REG_SEC = 0x00, REG_MIN = 0x02, REG_HOUR = 0x04, REG_WDAY = 0x06, REG_MDAY = 0x07,
    REG_MON = 0x08, REG_YEAR = 0x09, REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d,
    REG_CENTURY = 0x32,
};
#define B_24H    0x02
#define B_BINARY 0x04
#define D_VRT    0x80   /* valid RAM and time: the battery is fine */

void rtc_init(struct rtc *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->cmos[REG_A] = 0x26;        /* 32.768 kHz base, 1024 Hz rate; UIP never set */
    r->cmos[REG_B] = B_24H;       /* BCD, 24-hour */
    r->cmos[REG_D] = D_VRT;
}

static uint8_t to_bcd(const struct rtc *r, int v)
{
    return (r->cmos[REG_B] & B_BINARY) ? (uint8_t)v : (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t read_reg(struct rtc *r, uint8_t reg)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    switch (reg) {
    case REG_SEC: return to_bcd(r, tm.tm_sec);
    case REG_MIN: return to_bcd(r, tm.tm_min);
    case REG_HOUR: return to_bcd(r, tm.tm_hour);
    case REG_WDAY: return to_bcd(r, tm.tm_wday + 1);
    case REG_MDAY: return to_bcd(r, tm.tm_mday);
    case REG_MON: return to_bcd(r, tm.tm_mon + 1);
    case REG_YEAR: return to_bcd(r, tm.tm_year % 100);
    case REG_CENTURY: return to_bcd(r, 19 + tm.tm_year / 100);
    case REG_C: return 0;         /* no interrupt flags: alarms are not emulated */
    default: return r->cmos[reg];
    }
}

void rtc_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct rtc *r = opaque;
    pthread_mutex_lock(&r->lock);
    if (offset == 0) {
        if (is_write)
            r->index = data[0] & 0x7f;   /* bit 7 is the NMI mask */
        else
            data[0] = 0xff;
    } else if (is_write) {
        /* time registers are the host's; C and D are read-only */
        if (r->index == REG_A)
            r->cmos[REG_A] = data[0] & 0x7f;
        else if (r->index == REG_B)
            r->cmos[REG_B] = data[0];
        else if (r->index > REG_D)
            r->cmos[r->index] = data[0];
    } else {
        data[0] = read_reg(r, r->index);
    }
    pthread_mutex_unlock(&r->lock);
    for (uint32_t i = 1; !is_write && i < len; i++)
        data[i] = 0xff;
}

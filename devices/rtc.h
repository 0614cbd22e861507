/* MC146818 CMOS RTC at 0x70/0x71: the wall clock Linux reads at boot (without
 * it, rtc_cmos probing costs ~15 s) plus 128 bytes of CMOS RAM. The time is
 * the host's UTC clock, so it needs no migration. */
#ifndef FERRY_RTC_H
#define FERRY_RTC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define RTC_PORT 0x70

struct rtc {
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t cmos[128];
};

void rtc_init(struct rtc *r);
void rtc_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif

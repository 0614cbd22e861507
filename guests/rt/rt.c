/* SPDX-License-Identifier: MIT
 * Ferry micro-guest runtime (see rt.h). Freestanding: no libc, no SSE. */
#include "rt.h"

struct ferry_guest_info *rt_info;

static volatile uint64_t *const testdev = (volatile uint64_t *)(uintptr_t)FERRY_TESTDEV_ADDR;

/* Test-device registers are accessed with exactly one 8-byte move each. */
static inline void tdev_write(unsigned off, uint64_t v)
{
    __asm__ volatile("movq %0, (%1)" : : "r"(v), "r"((uintptr_t)testdev + off) : "memory");
}

static inline uint64_t tdev_read(unsigned off)
{
    uint64_t v;
    __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"((uintptr_t)testdev + off) : "memory");
    return v;
}

__attribute__((noreturn)) static void park(void)
{
    for (;;)
        rt_pause();
}

void rt_exit(uint64_t status)
{
    tdev_write(FERRY_TESTDEV_EXIT, status);
    park();
}

void rt_result(uint64_t value) { tdev_write(FERRY_TESTDEV_RESULT, value); }
uint64_t rt_time_ns(void) { return tdev_read(FERRY_TESTDEV_TIME_NS); }
void rt_stamp(uint64_t tsc) { tdev_write(FERRY_TESTDEV_STAMP, tsc); }
void rt_sleep_ns(uint64_t ns) { tdev_write(FERRY_TESTDEV_SLEEP, ns); }

/* Called by start.S on every vCPU once .bss is ready. */
__attribute__((noreturn)) void rt_main(struct ferry_guest_info *info, uint64_t cpu);
void rt_main(struct ferry_guest_info *info, uint64_t cpu)
{
    static volatile uint64_t cpus_done;
    if (info->magic != FERRY_GUEST_INFO_MAGIC)
        rt_die(RT_EXIT_BADINFO, "guest: bad ferry_guest_info magic 0x%llx at %p",
               (unsigned long long)info->magic, (void *)info);
    int rc = gmain(info, (unsigned)cpu);
    if (cpu == 0 || rc != 0)
        rt_exit((uint64_t)(unsigned)rc);
    __atomic_fetch_add(&cpus_done, 1, __ATOMIC_SEQ_CST);
    park();
}

/* ---- printing ---- */

static void print_line(const char *s)
{
    tdev_write(FERRY_TESTDEV_PRINT, (uint64_t)(uintptr_t)s);
}

void rt_puts(const char *s)
{
    char line[RT_PRINT_MAX];
    size_t n = 0;
    for (;; s++) {
        if (*s == '\n' || *s == '\0' || n == sizeof(line) - 1) {
            line[n] = '\0';
            if (n > 0 || *s == '\n')
                print_line(line);
            n = 0;
            if (*s == '\0' || (*s == '\n' && s[1] == '\0'))
                return;
            if (*s != '\n')
                line[n++] = *s;   /* line full: this char starts the next one */
            continue;
        }
        line[n++] = *s;
    }
}

void rt_printf(const char *fmt, ...)
{
    char buf[RT_PRINT_MAX];
    va_list ap;
    va_start(ap, fmt);
    rt_vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    rt_puts(buf);
}

void rt_die(uint64_t status, const char *fmt, ...)
{
    char buf[RT_PRINT_MAX];
    va_list ap;
    va_start(ap, fmt);
    rt_vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    rt_puts(buf);
    rt_exit(status);
}

/* ---- formatting ---- */

struct out {
    char *buf;
    size_t size, len;
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, unsigned width, int left, char pad)
{
    /* With zero padding a leading '-' goes before the zeros. */
    if (pad == '0' && n > 0 && s[0] == '-') {
        put(o, '-');
        s++;
        n--;
        if (width > 0)
            width--;
    }
    if (!left)
        for (size_t i = n; i < width; i++)
            put(o, pad);
    for (size_t i = 0; i < n; i++)
        put(o, s[i]);
    if (left)
        for (size_t i = n; i < width; i++)
            put(o, ' ');
}

static size_t fmt_u64(char *tmp, uint64_t v, unsigned base, int upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char rev[24];
    size_t n = 0;
    do {
        rev[n++] = digits[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        tmp[i] = rev[n - 1 - i];
    return n;
}

int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        p++;
        int left = 0;
        char pad = ' ';
        for (;; p++) {
            if (*p == '-')
                left = 1;
            else if (*p == '0')
                pad = '0';
            else
                break;
        }
        if (left)
            pad = ' ';
        unsigned width = 0;
        while (*p >= '0' && *p <= '9')
            width = width * 10 + (unsigned)(*p++ - '0');
        int lng = 0;   /* 0 int, 1 long, 2 long long / size_t */
        while (*p == 'l' || *p == 'z') {
            lng += *p == 'z' ? 2 : 1;
            p++;
        }
        char tmp[32];
        size_t n;
        switch (*p) {
        case 'd':
        case 'i': {
            int64_t v = lng == 0 ? (int64_t)va_arg(ap, int)
                      : lng == 1 ? (int64_t)va_arg(ap, long) : (int64_t)va_arg(ap, long long);
            uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            n = 0;
            if (v < 0)
                tmp[n++] = '-';
            n += fmt_u64(tmp + n, u, 10, 0);
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = lng == 0 ? (uint64_t)va_arg(ap, unsigned int)
                       : lng == 1 ? (uint64_t)va_arg(ap, unsigned long)
                                  : (uint64_t)va_arg(ap, unsigned long long);
            n = fmt_u64(tmp, v, *p == 'u' ? 10 : 16, *p == 'X');
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'p': {
            uint64_t v = (uint64_t)(uintptr_t)va_arg(ap, void *);
            tmp[0] = '0';
            tmp[1] = 'x';
            n = 2 + fmt_u64(tmp + 2, v, 16, 0);
            put_padded(&o, tmp, n, width, left, pad);
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            put_padded(&o, tmp, 1, width, left, ' ');
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            put_padded(&o, s, strlen(s), width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case '\0':
            p--;   /* a lone '%' at the end */
            break;
        default:   /* unknown conversion: emit it verbatim */
            put(&o, '%');
            put(&o, *p);
            break;
        }
    }
    if (size > 0)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int rt_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = rt_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- time ---- */

uint64_t rt_tsc_khz(void)
{
    static uint64_t khz;
    if (khz)
        return khz;
    if (rt_info && rt_info->tsc_khz) {
        khz = rt_info->tsc_khz;
        return khz;
    }
    /* Calibrate against host CLOCK_MONOTONIC over ~20 ms. */
    uint64_t n0 = rt_time_ns(), t0 = rt_rdtsc(), n1, t1;
    do {
        for (int i = 0; i < 100000; i++)
            rt_pause();
        n1 = rt_time_ns();
        t1 = rt_rdtsc();
    } while (n1 - n0 < 20000000);
    khz = (t1 - t0) * 1000 / ((n1 - n0) / 1000);
    if (!khz)
        khz = 1;
    return khz;
}

uint64_t rt_tsc_to_ns(uint64_t ticks)
{
    uint64_t khz = rt_tsc_khz();
    /* ns = ticks * 1e6 / khz, split to avoid overflowing 64 bits. */
    return ticks / khz * 1000000 + ticks % khz * 1000000 / khz;
}

/* ---- command line ---- */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

const char *rt_arg(const char *key, size_t *len)
{
    if (!rt_info)
        return NULL;
    const char *p = rt_info->cmdline;
    const char *end = p + FERRY_GUEST_CMDLINE_MAX;
    size_t klen = strlen(key);
    const char *found = NULL;
    while (p < end && *p) {
        while (p < end && is_space(*p))
            p++;
        const char *w = p;
        while (p < end && *p && !is_space(*p))
            p++;
        size_t wl = (size_t)(p - w);
        if (wl >= klen && memcmp(w, key, klen) == 0 && (wl == klen || w[klen] == '=')) {
            const char *v = wl == klen ? w + klen : w + klen + 1;
            if (len)
                *len = (size_t)(p - v);
            found = v;   /* the last occurrence wins */
        }
    }
    return found;
}

uint64_t rt_arg_u64(const char *key, uint64_t def)
{
    size_t len;
    const char *v = rt_arg(key, &len);
    if (!v)
        return def;
    const char *p = v, *e = v + len;
    uint64_t x = 0, lim = ~0ull;
    unsigned base = 10;
    if (e - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    const char *digits = p;
    for (; p < e; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else if (base == 16 && *p >= 'A' && *p <= 'F')
            d = (unsigned)(*p - 'A' + 10);
        else if (*p == '_')
            continue;
        else
            break;
        if (x > (lim - d) / base)
            goto bad;
        x = x * base + d;
    }
    if (p == digits)
        goto bad;
    uint64_t mul = 1;
    if (p < e && base == 10 && (*p == 'e' || *p == 'E')) {
        p++;
        unsigned ex = 0;
        if (p == e)
            goto bad;
        for (; p < e && *p >= '0' && *p <= '9'; p++)
            ex = ex * 10 + (unsigned)(*p - '0');
        if (ex > 19)
            goto bad;
        while (ex--)
            mul *= 10;
    } else if (p < e) {
        switch (*p) {
        case 'k': case 'K': mul = 1ull << 10; p++; break;
        case 'm': case 'M': mul = 1ull << 20; p++; break;
        case 'g': case 'G': mul = 1ull << 30; p++; break;
        case 't': case 'T': mul = 1ull << 40; p++; break;
        }
    }
    if (p != e || (x && mul > lim / x))
        goto bad;
    return x * mul;
bad:;
    char val[64];
    size_t n = len < sizeof(val) - 1 ? len : sizeof(val) - 1;
    memcpy(val, v, n);
    val[n] = '\0';
    rt_die(RT_EXIT_BADARG, "bad value for %s=: '%s' (want a number: 123, 0x1f, 1e9, 64M)", key, val);
}

/* ---- libc bits; rep-string forms keep GCC from turning them into calls to themselves ---- */

void *memset(void *d, int c, size_t n)
{
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return r;
}

void *memmove(void *d, const void *s, size_t n)
{
    if ((uintptr_t)d <= (uintptr_t)s || (uintptr_t)d >= (uintptr_t)s + n)
        return memcpy(d, s, n);
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        ((volatile unsigned char *)dp)[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "vmm/log.h"

enum log_level log_threshold = LOG_INFO;
const char *log_prog = "ferry-vmm";

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: %s", log_prog, prefix);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* one fputs per line so concurrent vCPU threads never interleave */
    size_t len = strlen(line);
    if (len + 1 < sizeof(line)) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    fputs(line, stderr);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *prefix[] = { "error: ", "warning: ", "", "debug: " };
    if (lvl > log_threshold)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(prefix[lvl], fmt, ap);
    va_end(ap);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
    exit(1);
}

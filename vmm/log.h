/* Logging for ferry-vmm: one line per event on stderr, prefixed "ferry-vmm:". */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Print "ferry-vmm: <msg>" and exit(1): for fatal setup errors before the guest runs. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif

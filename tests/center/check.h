/* CHECK for the center's plain C tests (test_db.c, test_admission.c): a
 * failed condition is reported with its place and counted in `failures`,
 * and the test goes on; main returns failures != 0. */
#ifndef FERRY_TEST_CENTER_CHECK_H
#define FERRY_TEST_CENTER_CHECK_H

#include <stdio.h>

static int failures;
#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            failures++;                                               \
        }                                                             \
    } while (0)

#endif

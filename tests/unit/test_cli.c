/* The ferry CLI's text (cli/progress.c): migrate-status parsing, the live
 * progress line at several widths, the final summary and exit codes, and
 * the `vm status` summary, a manager task's line and a refused migration's
 * checks. Pure functions: no socket needed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

/* Compiled in rather than linked: the unit-test rule links libferry only. */
#include "cli/progress.c"

static struct mig_view parse(const char *json)
{
    json_object *o = json_tokener_parse(json);
    assert_non_null(o);
    struct mig_view v;
    mig_view_parse(o, &v);
    json_object_put(o);
    return v;
}

static void contains(const char *s, const char *want)
{
    if (!strstr(s, want))
        fail_msg("\"%s\" does not contain \"%s\"", s, want);
}

#define ROUND0 "{\"phase\":\"precopy\",\"destination\":\"10.0.0.2:7711\",\"round\":0,\"bytes_sent\":268435456," \
    "\"pages_sent\":65536,\"zero_pages\":0,\"ram_bytes\":1073741824,\"remaining_bytes\":0," \
    "\"throughput_mbps\":0.0,\"dirty_rate_mbps\":0.0,\"predicted_downtime_ms\":0.0," \
    "\"downtime_target_ms\":50,\"elapsed_ms\":2000}"
#define ROUND3 "{\"phase\":\"precopy\",\"destination\":\"10.0.0.2:7711\",\"round\":3,\"bytes_sent\":300000000," \
    "\"pages_sent\":70000,\"ram_bytes\":1073741824,\"remaining_bytes\":13107200," \
    "\"throughput_mbps\":9100.4,\"dirty_rate_mbps\":640.2,\"predicted_downtime_ms\":12.7," \
    "\"downtime_target_ms\":50,\"elapsed_ms\":2400}"
#define DONE "{\"phase\":\"completed\",\"destination\":\"10.0.0.2:7711\",\"round\":4,\"bytes_sent\":314572800," \
    "\"ram_bytes\":1073741824,\"elapsed_ms\":2500,\"downtime_ms\":38,\"verify_ms\":12,\"total_ms\":2500," \
    "\"final_pages\":300}"

static void test_parse(void **state)
{
    struct mig_view v = parse(ROUND3);
    assert_string_equal(v.phase, "precopy");
    assert_string_equal(v.destination, "10.0.0.2:7711");
    assert_int_equal(v.round, 3);
    assert_int_equal(v.remaining_bytes, 13107200);
    assert_int_equal(v.ram_bytes, 1ull << 30);
    assert_true(v.throughput_mbps > 9100 && v.throughput_mbps < 9101);
    assert_int_equal(v.downtime_ms, -1);  /* only once completed */
    v = parse(DONE);
    assert_int_equal(v.downtime_ms, 38);
    assert_int_equal(v.verify_ms, 12);
    assert_int_equal(v.total_ms, 2500);
    /* missing, wrong types and negative numbers are harmless */
    v = parse("{\"round\":\"x\",\"bytes_sent\":-5,\"destination\":7}");
    assert_string_equal(v.phase, "none");
    assert_int_equal(v.round, 0);
    assert_int_equal(v.bytes_sent, 0);
    assert_string_equal(v.destination, "");
    mig_view_parse(NULL, &v);
    assert_string_equal(v.phase, "none");
}

static void test_final_phases(void **state)
{
    assert_true(mig_phase_final("completed"));
    assert_true(mig_phase_final("failed"));
    assert_true(mig_phase_final("cancelled"));
    assert_true(mig_phase_final("in-doubt"));
    assert_true(mig_phase_final("none"));
    assert_false(mig_phase_final("setup"));
    assert_false(mig_phase_final("precopy"));
    assert_false(mig_phase_final("switchover"));
}

static void test_round0_bar(void **state)
{
    struct mig_view v = parse(ROUND0);
    char buf[512];
    size_t n = progress_line(&v, 8000, 100, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_true(n <= 99);  /* never wraps: \r redraws one line */
    contains(buf, "precopy round 0");
    contains(buf, "[");
    contains(buf, " 25%");
    contains(buf, " 256/1024 MiB");
    contains(buf, "8000 Mbit/s");
    contains(buf, "2.0 s");
    /* a quarter of the bar is filled */
    const char *b = strchr(buf, '['), *e = strchr(buf, ']');
    assert_non_null(e);
    size_t bar = (size_t)(e - b - 1), fill = strspn(b + 1, "#");
    assert_true(bar >= 8 && bar <= 30);
    assert_int_equal(fill, (bar + 2) / 4);
    /* the bar keeps its width while the numbers change */
    v.pages_sent = 1000;
    char buf2[512];
    progress_line(&v, 12, 100, buf2, sizeof(buf2));
    assert_int_equal(strchr(buf2, ']') - strchr(buf2, '['), e - b);
    assert_int_equal(strlen(buf2), n);
}

static void test_round0_plain(void **state)
{
    struct mig_view v = parse(ROUND0);
    char buf[512];
    /* no client rate: round 0 has no measured throughput, so the average */
    progress_line(&v, -1, 0, buf, sizeof(buf));
    assert_string_equal(buf, "precopy round 0, 25% of RAM copied, 256/1024 MiB, 1074 Mbit/s, 2.0 s");
}

static void test_later_round(void **state)
{
    struct mig_view v = parse(ROUND3);
    char buf[512];
    progress_line(&v, -1, 0, buf, sizeof(buf));
    assert_string_equal(buf, "precopy round 3, 12.5 MiB left, 9100 Mbit/s, dirty 640 Mbit/s, "
                        "downtime ~13 ms, target 50 ms, 2.4 s");
    progress_line(&v, 7000, 200, buf, sizeof(buf));
    assert_string_equal(buf, "precopy round 3  12.5 MiB left  7000 Mbit/s  dirty 640 Mbit/s  "
                        "downtime ~13 ms  target 50 ms    2.4 s");
    /* 80 columns: everything that matters, optional parts dropped */
    progress_line(&v, 7000, 80, buf, sizeof(buf));
    assert_true(strlen(buf) <= 79);
    contains(buf, "round 3");
    contains(buf, "12.5 MiB left");
    contains(buf, "7000 Mbit/s");
    contains(buf, "downtime ~13 ms");
    assert_null(strstr(buf, "target"));
    /* no estimate yet */
    v.predicted_downtime_ms = 1e9;
    progress_line(&v, -1, 0, buf, sizeof(buf));
    contains(buf, "downtime ~?");
    v.predicted_downtime_ms = 12345;
    progress_line(&v, -1, 0, buf, sizeof(buf));
    contains(buf, "downtime ~12.3 s");
}

static void test_narrow_and_tiny(void **state)
{
    struct mig_view v = parse(ROUND0);
    char buf[512];
    for (int w = 1; w <= 120; w++) {
        size_t n = progress_line(&v, 5, w, buf, sizeof(buf));
        assert_int_equal(n, strlen(buf));
        assert_true(n <= (size_t)(w - 1) || w == 1);
    }
    progress_line(&v, 5, 50, buf, sizeof(buf));
    assert_null(strchr(buf, '['));  /* no room for a bar */
    /* a short buffer is cut, still terminated */
    char small[16];
    progress_line(&v, 5, 0, small, sizeof(small));
    assert_int_equal(strlen(small), 15);
    assert_int_equal(progress_line(&v, 5, 0, small, 0), 0);
}

static void test_other_phases(void **state)
{
    char buf[512];
    struct mig_view v = parse("{\"phase\":\"setup\",\"destination\":\"h:1\",\"elapsed_ms\":100}");
    progress_line(&v, -1, 0, buf, sizeof(buf));
    assert_string_equal(buf, "setup connecting to h:1, 0.1 s");
    v = parse("{\"phase\":\"switchover\",\"destination\":\"h:1\",\"round\":5,\"elapsed_ms\":3000}");
    progress_line(&v, -1, 0, buf, sizeof(buf));
    assert_string_equal(buf, "switchover after round 5, VM paused: sending the last pages and the state, 3.0 s");
    v = parse("{\"phase\":\"none\"}");
    progress_line(&v, -1, 0, buf, sizeof(buf));
    assert_string_equal(buf, "none");
}

static void test_task_line(void **state)
{
    char buf[512];
    json_object *t = json_tokener_parse("{\"id\":12,\"kind\":\"vm.start\",\"target\":\"vm1\","
                                        "\"state\":\"running\",\"percent\":40,\"phase\":\"starting VM on h1\"}");
    assert_non_null(t);
    task_line(t, 0, buf, sizeof(buf));
    assert_string_equal(buf, "task 12 vm.start vm1: 40%, starting VM on h1");
    /* a terminal: a bar 40% filled, the line within the width */
    size_t n = task_line(t, 80, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_true(n <= 79);
    assert_string_equal(buf, "task 12 vm.start vm1  [############.................]   40%  starting VM on h1");
    /* too narrow for a bar: still the percent, cut to the width */
    task_line(t, 30, buf, sizeof(buf));
    assert_int_equal(strlen(buf), 29);
    assert_null(strchr(buf, '['));
    json_object_put(t);
}

static void test_report(void **state)
{
    char buf[512];
    json_object *r = json_tokener_parse("[{\"check\":\"cpu\",\"level\":\"ok\",\"reason\":\"baseline met\"},"
                                        "{\"check\":\"memory\",\"level\":\"error\",\"reason\":\"h2 has 1 GiB free\"},"
                                        "{\"check\":\"network\",\"level\":\"warning\",\"reason\":\"no bridge\"},"
                                        "{\"level\":\"error\"}]");
    assert_non_null(r);
    report_text(r, "ferry: check ", buf, sizeof(buf));
    assert_string_equal(buf, "ferry: check memory (error): h2 has 1 GiB free\n"
                             "ferry: check network (warning): no bridge\n"
                             "ferry: check ? (error): no reason given\n");
    json_object_put(r);
    assert_int_equal(report_text(NULL, "", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void test_outcome(void **state)
{
    char buf[512];
    struct mig_view v = parse(DONE);
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "migrated to 10.0.0.2:7711: downtime 38 ms (verify 12 ms), total 2500 ms, "
                        "300 MiB sent at 1007 Mbit/s, 4 rounds");
    assert_int_equal(progress_outcome(&v, false, buf, sizeof(buf)), 0);
    contains(buf, "(not verified)");

    v = parse("{\"phase\":\"failed\",\"destination\":\"h:1\",\"error\":\"cannot connect to h:1: Connection refused\"}");
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 1);
    assert_string_equal(buf, "migration to h:1 failed: cannot connect to h:1: Connection refused; "
                        "the VM keeps running here");
    v = parse("{\"phase\":\"cancelled\",\"destination\":\"h:1\",\"error\":\"cancelled by the operator\"}");
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 1);
    contains(buf, "cancelled: cancelled by the operator");
    v = parse("{\"phase\":\"in-doubt\",\"destination\":\"h:1\",\"error\":\"no answer\"}");
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 3);
    contains(buf, "IN DOUBT: no answer");
    v = parse("{\"phase\":\"none\"}");
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 1);
    /* zero total time does not divide by zero */
    v = parse("{\"phase\":\"completed\",\"destination\":\"h:1\",\"total_ms\":0,\"downtime_ms\":0}");
    assert_int_equal(progress_outcome(&v, true, buf, sizeof(buf)), 0);
    contains(buf, "0 MiB sent at 0 Mbit/s");
}

static void test_status_summary(void **state)
{
    json_object *o = json_tokener_parse(
        "{\"state\":\"running\",\"vcpus\":2,\"memory_mib\":1024,\"kernel\":\"guests/dirtier.elf\","
        "\"migration\":{\"phase\":\"none\"},\"boot\":\"micro-guest\"}");
    char buf[1024];
    status_summary(o, buf, sizeof(buf));
    assert_string_equal(buf, "state:     running\n"
                             "vcpus:     2\n"
                             "memory:    1024 MiB\n"
                             "boot:      micro-guest (guests/dirtier.elf)\n"
                             "migration: none\n");
    json_object_put(o);
    o = json_tokener_parse("{\"state\":\"running\",\"migration\":" ROUND3 "}");
    status_summary(o, buf, sizeof(buf));
    contains(buf, "migration: precopy round 3, 12.5 MiB left");
    json_object_put(o);
    o = json_tokener_parse("{\"state\":\"running\",\"migration\":{\"phase\":\"failed\",\"destination\":\"h:1\","
                           "\"error\":\"boom\"}}");
    status_summary(o, buf, sizeof(buf));
    contains(buf, "migration: migration to h:1 failed: boom; the VM keeps running here\n");
    json_object_put(o);
    status_summary(NULL, buf, sizeof(buf));
    contains(buf, "state:     ?\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_final_phases),
        cmocka_unit_test(test_round0_bar),
        cmocka_unit_test(test_round0_plain),
        cmocka_unit_test(test_later_round),
        cmocka_unit_test(test_narrow_and_tiny),
        cmocka_unit_test(test_other_phases),
        cmocka_unit_test(test_task_line),
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_outcome),
        cmocka_unit_test(test_status_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

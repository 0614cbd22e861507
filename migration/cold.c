/* Cold disk copy over TLS (see cold.h). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <json-c/json.h>

#include "common/tls.h"
#include "devices/blk_move.h"
#include "migration/chan.h"
#include "migration/cold.h"
#include "migration/disks.h"
#include "migration/net.h"
#include "migration/sender.h"
#include "migration/stream.h"

#define CONNECT_TIMEOUT_MS 10000
#define IO_TIMEOUT_S 60                /* a peer that stops answering */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void set_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int send_msg(struct chan *c, uint16_t type, const void *p, size_t len, char *err, size_t errlen)
{
    if (msg_write(c, type, p, (uint32_t)len) < 0 || chan_flush(c) < 0) {
        snprintf(err, errlen, "connection to the receiver lost while sending %s: %s", msg_type_name(type), c->err);
        return -1;
    }
    return 0;
}

/* ---- sender ---------------------------------------------------------------- */

static int send_image(struct chan *c, int fd, uint64_t size, struct cold_result *res, char *err, size_t errlen)
{
    uint8_t *buf = malloc(DISK_CHUNK);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct blk_cursor cur = { .lanes = 1 };
    uint64_t off, wire;
    size_t len;
    int rc = 0;
    while (rc == 0 && blk_extents_next(fd, size, &cur, &off, &len)) {
        /* the receiver says nothing until COMPLETE unless it gave up (a
         * full disk): stop and read why */
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        if (poll(&p, 1, 0) > 0) {
            snprintf(err, errlen, "connection to the receiver lost: it stopped the copy");
            rc = -1;
        } else if (pread(fd, buf, len, (off_t)off) != (ssize_t)len) {
            snprintf(err, errlen, "cannot read the image at %llu: %s", (unsigned long long)off,
                     strerror(errno ? errno : EIO));
            rc = -1;
        } else if (!blk_buf_zero(buf, len)) {   /* the new file is a hole there already */
            rc = disk_blocks_send(c, 0, off, buf, len, false, &wire, err, errlen);
            res->data_bytes += len;
            res->wire_bytes += wire;
        }
    }
    free(buf);
    return rc;
}

int cold_send(const char *image, const char *uri, const char *via, SSL_CTX *tls, struct cold_result *res,
              char *err, size_t errlen)
{
    memset(res, 0, sizeof(*res));
    uint64_t t0 = now_ms();
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    if (fd < 0 || end <= 0) {
        snprintf(err, errlen, "%s: %s", image, fd < 0 ? strerror(errno) : "empty or not seekable");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    res->size = (uint64_t)end;
    struct chan c = CHAN_PLAIN(net_connect(uri, via, CONNECT_TIMEOUT_MS, err, errlen));
    int rc = -1;
    if (c.fd < 0)
        goto out;
    set_timeouts(c.fd);
    if (!(c.ssl = tls_handshake(tls, c.fd, false, err, errlen)))
        goto out;
    snprintf(res->cipher, sizeof(res->cipher), "%s", tls_cipher(c.ssl));
    const char *name = strrchr(image, '/') ? strrchr(image, '/') + 1 : image;
    json_object *o = json_object_new_object(), *d = json_object_new_object();
    json_object_object_add(d, "size", json_object_new_int64((int64_t)res->size));
    json_object_object_add(d, "name", json_object_new_string(name));
    json_object_object_add(o, "cold_disk", d);
    struct buf b = { 0 };
    int r = hello_encode(&b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    if (r == 0)
        r = send_msg(&c, MSG_HELLO, b.data, b.len, err, errlen);
    buf_free(&b);
    char reason[200] = "";
    int ack = r < 0 ? -1 : sender_read_ack(&c, reason, sizeof(reason), err, errlen);
    if (ack != ACK_READY) {
        if (ack >= 0)
            snprintf(err, errlen, "the receiver refused the image: %s", reason);
        goto out;
    }
    struct buf dig = { 0 };
    r = send_image(&c, fd, res->size, res, err, errlen);
    if (r == 0 && (r = disk_digest_encode(&dig, 0, fd, res->size, err, errlen)) == 0)
        r = send_msg(&c, MSG_DISK_DIGEST, dig.data, dig.len, err, errlen);
    buf_free(&dig);
    if (r < 0 || send_msg(&c, MSG_COMPLETE, NULL, 0, err, errlen) < 0)
        goto explain;
    ack = sender_read_ack(&c, reason, sizeof(reason), err, errlen);
    if (ack == ACK_VERIFIED)
        rc = 0;
    else if (ack >= 0)
        snprintf(err, errlen, "the receiver %s the image: %s", ack == ACK_MISMATCH ? "found a digest mismatch in" :
                 "refused", reason);
    goto out;
explain:
    /* a receiver that gave up (a full disk) said why before it closed */
    if (strstr(err, "connection to the receiver lost") &&
        sender_read_ack(&c, reason, sizeof(reason), (char[256]){ 0 }, 256) == ACK_REJECTED)
        snprintf(err, errlen, "the receiver refused the image: %s", reason);
out:
    res->ms = now_ms() - t0;
    chan_close(&c);
    close(fd);
    return rc;
}

/* ---- receiver -------------------------------------------------------------- */

static void send_ack(struct chan *c, uint32_t status, const char *reason)
{
    struct buf b = { 0 };
    if (ack_encode(&b, status, reason) == 0 && msg_write(c, MSG_ACK, b.data, (uint32_t)b.len) == 0)
        chan_flush(c);
    buf_free(&b);
}

/* After our ACK(rejected): read on until the sender, which looks for our
 * answer between pieces, read it and closed (or a few seconds), so that our
 * close does not reset the connection under it. */
static void drain(struct chan *c)
{
    static char sink[65536];
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (uint64_t end = now_ms() + 3000; now_ms() < end;) {
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            break;
    }
}

/* HELLO's {"cold_disk": {"size"}}: the image's size, or 0 with err. */
static uint64_t hello_size(struct chan *c, char *err, size_t errlen)
{
    struct msg m = { 0 };
    uint32_t version;
    char *json = NULL;
    uint64_t size = 0;
    if (msg_read(c, &m, err, errlen) == 0 && hello_decode(&m, &version, &json, err, errlen) == 0) {
        json_object *o = json_tokener_parse(json), *d, *v;
        if (o && json_object_object_get_ex(o, "cold_disk", &d) && json_object_object_get_ex(d, "size", &v) &&
            json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0)
            size = (uint64_t)json_object_get_int64(v);
        else
            snprintf(err, errlen, "not a cold disk copy (a live migration's HELLO, or no \"cold_disk\" size)");
        json_object_put(o);
    }
    free(json);
    msg_free(&m);
    return size;
}

/* Messages after ACK(ready) until COMPLETE: 0 when the image arrived whole
 * and matched its digest; ACK_MISMATCH when it did not; -1 on an error. */
static int receive_image(struct chan *c, struct disk_sink *sink, struct cold_result *res, char *err, size_t errlen)
{
    struct disks_rx rx = { 0 };
    bool digest_ok = false;
    int rc = -1;
    for (;;) {
        struct msg m = { 0 };
        if (msg_read_header(c, &m, err, errlen) < 0)
            break;
        if (m.type == MSG_DISK_BLOCKS) {
            if (disks_rx_recv(&rx, sink, c, &m, err, errlen) < 0)
                break;
            continue;
        }
        size_t got;
        m.payload = malloc(m.len ? m.len : 1);
        struct iovec v = { m.payload, m.len };
        if (!m.payload || msg_read_into(c, &m, &v, 1, &got, err, errlen) < 0 ||
            msg_check_sum(c, &m, &v, 1, err, errlen) < 0) {
            if (!m.payload)
                snprintf(err, errlen, "out of memory");
            msg_free(&m);
            break;
        }
        int t = m.type;
        if (t == MSG_DISK_DIGEST && !digest_ok) {
            digest_ok = disk_digest_check(sink, &m, err, errlen) == 0;
            rc = digest_ok ? -1 : ACK_MISMATCH;
        } else if (t != MSG_COMPLETE) {
            snprintf(err, errlen, "unexpected %s message in a cold disk copy", msg_type_name(m.type));
        }
        msg_free(&m);
        if (t == MSG_COMPLETE) {
            if (digest_ok)
                rc = 0;
            else if (rc != ACK_MISMATCH)
                snprintf(err, errlen, "COMPLETE without the image's digest");
            break;
        }
        if (t != MSG_DISK_DIGEST || rc == ACK_MISMATCH)
            break;
    }
    res->data_bytes = rx.bytes;
    res->wire_bytes = rx.wire_bytes;
    disks_rx_free(&rx);
    return rc;
}

int cold_receive(const char *path, const char *addr, SSL_CTX *tls, struct cold_result *res, char *err,
                 size_t errlen)
{
    memset(res, 0, sizeof(*res));
    struct stat st;
    if (stat(path, &st) == 0) {
        snprintf(err, errlen, "%s exists: the copy never replaces an image", path);
        return -1;
    }
    char *partial = malloc(strlen(path) + sizeof(MOVE_PARTIAL_SUFFIX));
    int lfd = partial ? net_listen(addr, err, errlen) : -1;
    if (lfd < 0) {
        if (!partial)
            snprintf(err, errlen, "out of memory");
        free(partial);
        return -1;
    }
    sprintf(partial, "%s%s", path, MOVE_PARTIAL_SUFFIX);
    fprintf(stderr, "ferry-disk: waiting for an image on %s (port %d, TLS)\n", addr, net_local_port(lfd));
    struct chan c = CHAN_PLAIN(net_accept(lfd, -1, err, errlen));
    close(lfd);
    struct disk_sink sink = { 0 };
    int fd = -1, rc = -1;
    if (c.fd < 0)
        goto out;
    uint64_t t0 = now_ms();
    set_timeouts(c.fd);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(c.fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, res->peer, sizeof(res->peer), NULL, 0, NI_NUMERICHOST))
        snprintf(res->peer, sizeof(res->peer), "?");
    if (!(c.ssl = tls_handshake(tls, c.fd, true, err, errlen)))
        goto out;
    snprintf(res->cipher, sizeof(res->cipher), "%s", tls_cipher(c.ssl));
    if (!(res->size = hello_size(&c, err, errlen)))
        goto reject;
    /* a partial file of an earlier, broken copy is ours to replace */
    fd = open(partial, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)res->size) < 0 || disk_sink_add(&sink, fd, partial, res->size) < 0) {
        snprintf(err, errlen, "cannot create %s: %s", partial, strerror(errno ? errno : ENOMEM));
        goto reject;
    }
    send_ack(&c, ACK_READY, "");
    int r = receive_image(&c, &sink, res, err, errlen);
    if (r == ACK_MISMATCH) {
        send_ack(&c, ACK_MISMATCH, err);
        goto out;
    }
    if (r == 0 && fdatasync(fd) < 0)
        snprintf(err, errlen, "cannot sync %s: %s", partial, strerror(errno));
    else if (r == 0 && rename(partial, path) < 0)
        snprintf(err, errlen, "cannot rename %s to %s: %s", partial, path, strerror(errno));
    else if (r == 0)
        rc = 0;
    if (rc < 0)
        goto reject;
    res->ms = now_ms() - t0;
    send_ack(&c, ACK_VERIFIED, "");
    goto out;
reject:
    send_ack(&c, ACK_REJECTED, err);
    drain(&c);
out:
    if (rc < 0 && fd >= 0)
        unlink(partial);
    if (fd >= 0)
        close(fd);
    disk_sink_free(&sink);
    chan_close(&c);
    free(partial);
    return rc;
}

/* HTTPS server plumbing shared by ferryd and ferry-center (https.h). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "common/https.h"

/* Per connection, on the shared context (which stays as common/tls.c made
 * it for the blocking migration streams):
 * - no read-ahead: bytes OpenSSL pulled off the socket beyond the current
 *   record are invisible to libevent, which waits for the socket to become
 *   readable again, so a request could stall until the client sends more;
 * - idle keep-alive connections give their buffers back. */
struct bufferevent *https_bevcb(struct event_base *base, void *ssl_ctx)
{
    SSL *ssl = SSL_new(ssl_ctx);
    if (!ssl)
        return NULL;
    SSL_set_read_ahead(ssl, 0);
    SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

struct evconnlistener *https_listen(struct event_base *base, struct evhttp *http,
                                    const struct sockaddr *sa, int len)
{
    struct evconnlistener *l = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE, -1, sa, len);
    if (!l)
        return NULL;
    /* Accepted sockets inherit TCP_NODELAY on Linux. Without it a reply
     * written as TLS records in two sends waits for the client's delayed
     * ACK: 40 ms for every request on a kept-alive connection. */
    int one = 1;
    setsockopt(evconnlistener_get_fd(l), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!evhttp_bind_listener(http, l)) {
        int e = errno;
        evconnlistener_free(l);
        errno = e;
        return NULL;
    }
    return l;
}

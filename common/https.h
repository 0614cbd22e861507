/* The HTTPS servers of ferryd and ferry-center: libevent's evhttp over
 * bufferevent_openssl, on a context from common/tls.c. */
#ifndef FERRY_HTTPS_H
#define FERRY_HTTPS_H

#include <sys/socket.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

/* evhttp_set_bevcb's callback (arg: the SSL_CTX): a TLS server side per
 * connection. */
struct bufferevent *https_bevcb(struct event_base *base, void *ssl_ctx);

/* Listen on sa for http. NULL with errno set when the address cannot be
 * bound. */
struct evconnlistener *https_listen(struct event_base *base, struct evhttp *http,
                                    const struct sockaddr *sa, int len);

#endif

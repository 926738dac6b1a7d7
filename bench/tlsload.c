/* The TLS load generator of the config-fetch benchmark (bench/fetch.py): one phone fetching one
 * file over TLS with its client certificate, from CONNECTIONS connections at once, for SECONDS.
 *
 * Why not ab: ab does a full handshake per request in one process, and its half of the handshake
 * cost as much as the server's half, so it measured itself (739 against 720 requests/s for every
 * server). Here one thread drives every connection with epoll, and the handshake is what a phone
 * fetching its next file does:
 *   resume     a new connection per request (Connection: close), the TLS session resumed from
 *              the ticket of the connection before (no certificate signed or verified again);
 *   keepalive  one connection per slot, requests one after another on it (resumed when the
 *              server closes it).
 * Each slot's first connection is a full handshake presenting the certificate, before the clock.
 *
 * Usage: tlsload HOST PORT CA_FILE CERT_FILE KEY_FILE PATH CONNECTIONS SECONDS MODE
 * Output (stdout), when done: "requests N", "errors N", "seconds S", "p50_ms X", "p99_ms X",
 * "cpu_s X" (this process's CPU while the clock ran), "handshakes N" and "resumed N" (how many of
 * them resumed a session, warm-up included), one per line. The first few failures' reasons go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_S 0.5
#define TIMEOUT_S 10.0
#define MAX_REPORTED_ERRORS 10

typedef struct {
    int fd;
    SSL *ssl;
    SSL_SESSION *session; /* the newest resumable session of this slot */
    int connected, handshaken;
    int served; /* responses on this connection so far */
    int closing; /* the server said Connection: close */
    size_t req_sent;
    char *buf;
    size_t len, cap;
    double started, deadline;
} Conn;

static const char *host, *path;
static int port, keepalive;
static SSL_CTX *ctx;
static int epfd;
static char req[1024];
static size_t req_len;
static double t_warm, t_end;
static long requests, errors, handshakes, resumed;
static double *latencies;
static size_t lat_count, lat_cap;
static int errors_reported;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "tlsload: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void connect_slot(Conn *c);

static void drop(Conn *c) {
    if (c->ssl) {
        /* Closed as done, not as failed: OpenSSL would make the session unresumable. */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
}

static void keep_session(Conn *c) {
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (s && SSL_SESSION_is_resumable(s)) {
        if (c->session) SSL_SESSION_free(c->session);
        c->session = s;
    } else if (s) {
        SSL_SESSION_free(s);
    }
}

/* The next request of this slot, on the same connection or a new one; none after the clock. */
static void next(Conn *c, int reuse) {
    c->len = 0;
    c->req_sent = 0;
    c->started = now();
    c->deadline = c->started + TIMEOUT_S;
    if (c->started >= t_end) {
        drop(c);
        return;
    }
    if (reuse && !c->closing) {
        watch(c, EPOLLOUT, EPOLL_CTL_MOD);
        return;
    }
    drop(c);
    connect_slot(c);
}

/* A request is over: count it if it ended while the clock ran. */
static void finish(Conn *c, int ok, const char *why) {
    double t = now();
    if (t >= t_warm && t < t_end) {
        if (ok) {
            requests++;
            if (lat_count == lat_cap) {
                lat_cap = lat_cap ? lat_cap * 2 : 65536;
                latencies = realloc(latencies, lat_cap * sizeof(double));
            }
            latencies[lat_count++] = (t - c->started) * 1000.0;
        } else {
            errors++;
        }
    }
    if (!ok && why && errors_reported++ < MAX_REPORTED_ERRORS) fprintf(stderr, "tlsload: %s\n", why);
    if (c->ssl && c->handshaken) keep_session(c);
    if (ok) c->served++;
    next(c, ok && keepalive && c->fd >= 0);
}

static void connect_slot(Conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    c->connected = c->handshaken = c->served = c->closing = 0;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        /* This slot stops (no retry loop against a server that is not there). */
        if (errors_reported++ < MAX_REPORTED_ERRORS) fprintf(stderr, "tlsload: %s\n", strerror(errno));
        errors++;
        close(c->fd);
        c->fd = -1;
        return;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static int tls_wait(Conn *c, int rc, const char *what) {
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ) {
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        return 1;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        watch(c, EPOLLOUT, EPOLL_CTL_MOD);
        return 1;
    }
    char reason[300];
    snprintf(reason, sizeof reason, "%s: %s", what,
             err == SSL_ERROR_SYSCALL ? strerror(errno) : ERR_error_string(ERR_get_error(), NULL));
    ERR_clear_error();
    /* A kept-alive connection the server closed before answering this request (idle, or its
     * request limit): not a failure; the request goes again on a new connection. */
    if (c->served > 0 && c->len == 0) {
        next(c, 0);
        return 0;
    }
    finish(c, 0, reason);
    return 0;
}

/* The response so far: 1 when complete (status in *code), 0 when more is to come. */
static int response_complete(Conn *c, int eof, int *code) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return eof ? (*code = 0, 1) : 0;
    *end = '\0';
    char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    long want = cl ? strtol(cl + 17, NULL, 10) : -1;
    *end = '\r';
    size_t body = c->len - (size_t)(end + 4 - c->buf);
    if (sscanf(c->buf, "HTTP/1.%*c %d", code) != 1) *code = 0;
    *end = '\0';
    c->closing = strcasestr(c->buf, "\r\nConnection: close") != NULL;
    *end = '\r';
    if (want >= 0 && body >= (size_t)want) {
        if (body > (size_t)want) *code = 0; /* more than it announced */
        return 1;
    }
    if (eof) {
        if (want >= 0) *code = 0; /* cut short */
        return 1;
    }
    return 0;
}

static void step(Conn *c) {
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            finish(c, 0, strerror(err));
            return;
        }
        c->connected = 1;
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        if (c->session) SSL_set_session(c->ssl, c->session);
        SSL_set_connect_state(c->ssl);
    }
    if (!c->handshaken) {
        int rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            tls_wait(c, rc, "handshake");
            return;
        }
        c->handshaken = 1;
        handshakes++;
        if (SSL_session_reused(c->ssl)) resumed++;
    }
    while (c->req_sent < req_len) {
        int n = SSL_write(c->ssl, req + c->req_sent, (int)(req_len - c->req_sent));
        if (n <= 0) {
            tls_wait(c, n, "write");
            return;
        }
        c->req_sent += (size_t)n;
    }
    for (;;) {
        if (c->cap - c->len < 16384) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->buf = realloc(c->buf, c->cap + 1);
        }
        int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
        int code;
        if (n > 0) {
            c->len += (size_t)n;
            if (response_complete(c, 0, &code)) {
                finish(c, code == 200, code == 200 ? NULL : "not a 200 response");
                return;
            }
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (c->len > 0 && (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL)) {
            response_complete(c, 1, &code);
            finish(c, code == 200, code == 200 ? NULL : "not a complete 200 response");
            return;
        }
        tls_wait(c, n, "read");
        return;
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double p) {
    if (!lat_count) return 0.0;
    size_t i = (size_t)(p / 100.0 * (double)(lat_count - 1) + 0.5);
    return latencies[i];
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: tlsload HOST PORT CA_FILE CERT_FILE KEY_FILE PATH CONNECTIONS "
                        "SECONDS resume|keepalive\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    path = argv[6];
    int connections = atoi(argv[7]);
    double seconds = atof(argv[8]);
    if (strcmp(argv[9], "keepalive") == 0) {
        keepalive = 1;
    } else if (strcmp(argv[9], "resume") != 0) {
        die("MODE is resume or keepalive");
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1) die("cannot load the CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Sessions are kept per slot (SSL_get1_session), not in OpenSSL's client cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[4]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[5], SSL_FILETYPE_PEM) != 1)
        die("cannot load the client certificate or key");
    req_len = (size_t)snprintf(req, sizeof req,
                               "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: autoprov-bench-tls\r\n"
                               "Connection: %s\r\n\r\n",
                               path, host, port, keepalive ? "keep-alive" : "close");
    epfd = epoll_create1(0);
    Conn *conns = calloc((size_t)connections, sizeof(Conn));
    double t0 = now();
    t_warm = t0 + WARMUP_S;
    t_end = t_warm + seconds;
    double cpu_warm = -1.0;
    for (int i = 0; i < connections; i++) {
        conns[i].fd = -1;
        next(&conns[i], 0);
    }
    struct epoll_event events[256];
    for (;;) {
        int active = 0;
        double t = now();
        if (cpu_warm < 0 && t >= t_warm) cpu_warm = cpu();
        if (t >= t_end) break; /* what is still under way is not counted */
        for (int i = 0; i < connections; i++) {
            if (conns[i].fd < 0) continue;
            active++;
            if (t > conns[i].deadline) finish(&conns[i], 0, "timed out");
        }
        if (!active) break;
        int n = epoll_wait(epfd, events, 256, 100);
        for (int i = 0; i < n; i++) step(events[i].data.ptr);
    }
    double cpu_used = cpu() - (cpu_warm < 0 ? 0.0 : cpu_warm);
    qsort(latencies, lat_count, sizeof(double), by_value);
    printf("requests %ld\nerrors %ld\nseconds %.3f\np50_ms %.2f\np99_ms %.2f\ncpu_s %.3f\n"
           "handshakes %ld\nresumed %ld\n",
           requests, errors, seconds, percentile(50), percentile(99), cpu_used, handshakes,
           resumed);
    return 0;
}

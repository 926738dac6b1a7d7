/* The phones of the mass-reboot benchmark (bench/reboot.py): each phone fetches its bootstrap
 * file over plain HTTP, then its full config over TLS presenting its own client certificate.
 *
 * Why not curl: curl builds a new OpenSSL context per transfer and reads the phone's key and
 * certificate files again each time; on this 2-core machine that took a whole core, the same
 * core the servers under test need. Real phones hold their key in memory and do their half of
 * the handshake on their own CPU. So here every key and certificate is loaded before the clock
 * starts, one client context is shared, and one thread drives PARALLEL phones at a time with
 * epoll. Each request is still a new connection with a full handshake (no session cache, no
 * tickets), and each server certificate is verified against the CA.
 *
 * Usage: phones HOST PLAIN_PORT TLS_PORT CA_FILE LIST PARALLEL [SAVE_DIR]
 *   LIST: one phone per line, "BOOTSTRAP_PATH CONFIG_PATH CERT_FILE KEY_FILE".
 * Output: "start" once the keys are loaded, then one line per request, the HTTP status code (000
 * when the request failed) in the order they completed, then "done"; a failure's reason goes to
 * stderr (the first few only). With SAVE_DIR, each 200 body is written to SAVE_DIR/PATH after
 * "done".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_S 30.0
#define MAX_REPORTED_ERRORS 20

typedef struct {
    char *paths[2]; /* bootstrap, config */
    X509 *cert;
    EVP_PKEY *key;
} Phone;

typedef struct {
    int fd;
    SSL *ssl;
    int phone;
    int stage; /* 0: bootstrap over plain HTTP, 1: config over TLS */
    int connected, handshaken;
    char req[1024];
    size_t req_len, req_sent;
    char *buf;
    size_t len, cap;
    double deadline;
} Conn;

static const char *host;
static int ports[2];
static Phone *phones;
static int phone_count, next_phone;
static SSL_CTX *ctx;
static int epfd;
static const char *save_dir;
static int errors_reported;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "phones: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void load_phones(const char *list) {
    FILE *f = fopen(list, "r");
    if (!f) die("cannot open the phone list");
    char boot[512], conf[512], certf[512], keyf[512];
    int cap = 1024;
    phones = calloc((size_t)cap, sizeof(Phone));
    while (fscanf(f, "%511s %511s %511s %511s", boot, conf, certf, keyf) == 4) {
        if (phone_count == cap) {
            cap *= 2;
            phones = realloc(phones, (size_t)cap * sizeof(Phone));
        }
        Phone *p = &phones[phone_count++];
        p->paths[0] = strdup(boot);
        p->paths[1] = strdup(conf);
        FILE *cf = fopen(certf, "r"), *kf = fopen(keyf, "r");
        if (!cf || !kf) die("cannot open a phone's certificate or key");
        p->cert = PEM_read_X509(cf, NULL, NULL, NULL);
        p->key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
        fclose(cf);
        fclose(kf);
        if (!p->cert || !p->key) die("cannot read a phone's certificate or key");
    }
    fclose(f);
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

typedef struct {
    const char *path;
    char *body;
    size_t len;
} Saved;

static Saved *saved;
static size_t saved_count, saved_cap;

/* Kept in memory until the clock stops: creating thousands of files is not the phones' work. */
static void keep_body(const char *path, const char *body, size_t len) {
    if (saved_count == saved_cap) {
        saved_cap = saved_cap ? saved_cap * 2 : 1024;
        saved = realloc(saved, saved_cap * sizeof(Saved));
    }
    saved[saved_count].path = path;
    saved[saved_count].body = malloc(len ? len : 1);
    memcpy(saved[saved_count].body, body, len);
    saved[saved_count++].len = len;
}

static void save_body(const char *path, const char *body, size_t len) {
    char file[1024];
    snprintf(file, sizeof file, "%s%s", save_dir, path);
    for (char *s = file + strlen(save_dir) + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(file, 0755);
            *s = '/';
        }
    }
    FILE *f = fopen(file, "wb");
    if (!f || fwrite(body, 1, len, f) != len) die("cannot save a response body");
    fclose(f);
}

static int start(Conn *c);

/* The request is over: report it, then go on with this phone's next request or the next phone. */
static void finish(Conn *c, int code, const char *why) {
    printf("%03d\n", code);
    if (why && errors_reported++ < MAX_REPORTED_ERRORS)
        fprintf(stderr, "phones: %s %s: %s\n", c->stage ? "config" : "bootstrap",
                phones[c->phone].paths[c->stage], why);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd); /* also drops it from the epoll set */
    c->ssl = NULL;
    c->fd = -1;
    if (c->stage == 0) {
        c->stage = 1;
    } else {
        if (next_phone >= phone_count) return;
        c->phone = next_phone++;
        c->stage = 0;
    }
    start(c);
}

/* The whole response has arrived (the server closes the connection): check and record it. */
static void complete(Conn *c) {
    int code = 0;
    if (c->len < 12 || sscanf(c->buf, "HTTP/1.%*c %d", &code) != 1) {
        finish(c, 0, "no HTTP status line");
        return;
    }
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) {
        finish(c, 0, "headers cut short");
        return;
    }
    char *body = end + 4;
    size_t body_len = c->len - (size_t)(body - c->buf);
    char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (cl && cl < end && strtoul(cl + 17, NULL, 10) != body_len) {
        finish(c, 0, "body shorter than Content-Length");
        return;
    }
    if (save_dir && code == 200) keep_body(phones[c->phone].paths[c->stage], body, body_len);
    finish(c, code, NULL);
}

static int start(Conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[c->stage])};
    inet_pton(AF_INET, host, &addr.sin_addr);
    c->connected = c->handshaken = 0;
    c->len = 0;
    c->req_sent = 0;
    c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                  "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                                  "User-Agent: autoprov-bench-phone\r\nConnection: close\r\n\r\n",
                                  phones[c->phone].paths[c->stage], host, ports[c->stage]);
    c->deadline = now() + TIMEOUT_S;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        finish(c, 0, strerror(errno));
        return -1;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

/* For a TLS call that did not complete: wait for what it wants, or fail. Returns 1 to wait. */
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
    char reason[256];
    snprintf(reason, sizeof reason, "%s: %s", what,
             ERR_error_string(ERR_get_error(), NULL));
    ERR_clear_error();
    finish(c, 0, reason);
    return 0;
}

/* Drive one connection as far as it goes without blocking. */
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
        if (c->stage == 1) {
            c->ssl = SSL_new(ctx);
            SSL_set_fd(c->ssl, c->fd);
            SSL_use_certificate(c->ssl, phones[c->phone].cert);
            SSL_use_PrivateKey(c->ssl, phones[c->phone].key);
            SSL_set_connect_state(c->ssl);
        }
    }
    if (c->ssl && !c->handshaken) {
        int rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            tls_wait(c, rc, "handshake");
            return;
        }
        c->handshaken = 1;
    }
    while (c->req_sent < c->req_len) {
        const char *at = c->req + c->req_sent;
        size_t left = c->req_len - c->req_sent;
        ssize_t n = c->ssl ? SSL_write(c->ssl, at, (int)left) : send(c->fd, at, left, MSG_NOSIGNAL);
        if (n <= 0) {
            if (c->ssl) {
                tls_wait(c, (int)n, "write");
            } else if (errno == EAGAIN) {
                watch(c, EPOLLOUT, EPOLL_CTL_MOD);
            } else {
                finish(c, 0, strerror(errno));
            }
            return;
        }
        c->req_sent += (size_t)n;
        if (c->req_sent == c->req_len) watch(c, EPOLLIN, EPOLL_CTL_MOD);
    }
    for (;;) {
        if (c->cap - c->len < 16384) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->buf = realloc(c->buf, c->cap + 1);
        }
        ssize_t n = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len))
                           : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (c->ssl) {
            int err = SSL_get_error(c->ssl, (int)n);
            if (err == SSL_ERROR_ZERO_RETURN) break;
            tls_wait(c, (int)n, "read");
            return;
        }
        if (n == 0) break;
        if (errno == EAGAIN) return;
        finish(c, 0, strerror(errno));
        return;
    }
    c->buf[c->len] = '\0';
    complete(c);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: phones HOST PLAIN_PORT TLS_PORT CA_FILE LIST PARALLEL [SAVE_DIR]\n");
        return 2;
    }
    host = argv[1];
    ports[0] = atoi(argv[2]);
    ports[1] = atoi(argv[3]);
    int parallel = atoi(argv[6]);
    save_dir = argc > 7 ? argv[7] : NULL;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[4], NULL) != 1) die("cannot load the CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* After a power cut no phone has a session to resume: a full handshake every time. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    load_phones(argv[5]);
    if (parallel > phone_count) parallel = phone_count;
    epfd = epoll_create1(0);
    Conn *conns = calloc((size_t)parallel, sizeof(Conn));
    fprintf(stderr, "phones: %d loaded, %d at a time\n", phone_count, parallel);
    fflush(stderr);
    /* The clock starts here: the caller times from this line on stdout. */
    printf("start\n");
    fflush(stdout);
    for (int i = 0; i < parallel; i++) {
        conns[i].phone = next_phone++;
        start(&conns[i]);
    }
    struct epoll_event events[256];
    for (;;) {
        int active = 0;
        double t = now();
        for (int i = 0; i < parallel; i++) {
            if (conns[i].fd < 0) continue;
            active++;
            if (t > conns[i].deadline) finish(&conns[i], 0, "timed out");
        }
        if (!active) break;
        int n = epoll_wait(epfd, events, 256, 1000);
        for (int i = 0; i < n; i++) step(events[i].data.ptr);
    }
    printf("done\n");
    fflush(stdout);
    for (size_t i = 0; i < saved_count; i++) save_body(saved[i].path, saved[i].body, saved[i].len);
    return 0;
}

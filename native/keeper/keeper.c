// lazyrestore-keeper: holds the userfaultfds of lazily restored tasks so that
// they outlive a daemon that crashes or restarts. Closing the last fd of a
// uffd with lazy ranges left would unregister them and hand the task zero
// pages; while the keeper holds a copy, the task merely waits for a new
// daemon, which takes the fds back and carries on.
//
// Man pages: unix(7), socket(2), bind(2), accept4(2), sendmsg(2),
// recvmsg(2), cmsg(3), poll(2), setrlimit(2), signal(7), close_range(2).
//
// Protocol: SOCK_SEQPACKET, one request per message, text, names of at most
// 255 bytes without spaces or newlines:
//   KEEP <name>   + one fd (SCM_RIGHTS): hold it (replaces a fd of that name)
//   DROP <name>   close the fd held under that name (no answer)
//   TAKE <prefix> answer "FD <name>" + a copy of the fd for every name that
//                 starts with <prefix>, then "END"; the keeper keeps its own
//   PING          answer "PONG"
// The keeper exits, removing its socket, once it holds no fd and no client
// is connected: a daemon that finished every task leaves nothing behind.
// Usage: lazyrestore-keeper SOCKET_PATH (prints "ready" once it listens).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS 32
#define NAME_MAX_LEN 255

struct held {
  char name[NAME_MAX_LEN + 1];
  int fd;
};

static struct held *held;
static size_t nheld, capheld;

static struct held *find(const char *name) {
  for (size_t i = 0; i < nheld; i++)
    if (strcmp(held[i].name, name) == 0) return &held[i];
  return NULL;
}

static void drop(const char *name) {
  struct held *h = find(name);
  if (h == NULL) return;
  close(h->fd);
  *h = held[--nheld];
}

static int keep(const char *name, int fd) {
  struct held *h = find(name);
  if (h != NULL) {
    close(h->fd);
    h->fd = fd;
    return 0;
  }
  if (nheld == capheld) {
    size_t cap = capheld ? capheld * 2 : 64;
    struct held *p = realloc(held, cap * sizeof *p);
    if (p == NULL) return -1;
    held = p;
    capheld = cap;
  }
  snprintf(held[nheld].name, sizeof held[nheld].name, "%s", name);
  held[nheld].fd = fd;
  nheld++;
  return 0;
}

static int send_msg(int sock, const char *text, int fd) {
  struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    memset(&u, 0, sizeof u);
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return 0;
    if (errno != EINTR) return -1;
  }
}

// Reads one request; returns its length (0: the client left), the fd it
// carried in *fd (or -1). A truncated message is refused whole.
static ssize_t recv_msg(int sock, char *buf, size_t cap, int *fd) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4)];
    struct cmsghdr align;
  } u;
  struct iovec iov = {.iov_base = buf, .iov_len = cap - 1};
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  *fd = -1;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < nfd; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (*fd < 0)
        *fd = f;
      else
        close(f);  // one fd per request
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
    errno = EMSGSIZE;
    return -1;
  }
  buf[n] = '\0';
  return n;
}

static void handle(int sock, char *req, int fd) {
  char *arg = strchr(req, ' ');
  if (arg != NULL) *arg++ = '\0';
  if (strcmp(req, "KEEP") == 0 && arg != NULL && fd >= 0) {
    if (keep(arg, fd) == 0) return;
  } else if (strcmp(req, "DROP") == 0 && arg != NULL) {
    drop(arg);
  } else if (strcmp(req, "TAKE") == 0) {
    size_t plen = arg != NULL ? strlen(arg) : 0;
    char line[NAME_MAX_LEN + 8];
    for (size_t i = 0; i < nheld; i++) {
      if (plen > 0 && strncmp(held[i].name, arg, plen) != 0) continue;
      snprintf(line, sizeof line, "FD %s", held[i].name);
      if (send_msg(sock, line, held[i].fd) != 0) break;
    }
    send_msg(sock, "END", -1);
  } else if (strcmp(req, "PING") == 0) {
    send_msg(sock, "PONG", -1);
  }
  if (fd >= 0) close(fd);
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char **argv) {
  if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "usage: lazyrestore-keeper SOCKET_PATH\n");
    return 2;
  }
  const char *path = argv[1];
  // Whatever the daemon had open and not close-on-exec (a store file, a uffd
  // about to be adopted) must not be pinned here: only deposited fds are held.
  close_range(3, ~0U, 0);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  raise_fd_limit();
  umask(077);  // the socket is 0600: only root may deposit or take fds

  int lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (lsock < 0) {
    perror("lazyrestore-keeper: socket");
    return 1;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
  if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lsock, 16) != 0) {
    fprintf(stderr, "lazyrestore-keeper: bind %s: %s\n", path, strerror(errno));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  // Nothing more is written; the daemon that started us may be gone soon.
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2) close(devnull);
  }

  struct pollfd pfd[MAX_CLIENTS + 1];
  int nclients = 0;
  int served = 0;
  pfd[0].fd = lsock;
  pfd[0].events = POLLIN;
  for (;;) {
    if (served && nclients == 0 && nheld == 0) break;
    int n = poll(pfd, (nfds_t)(nclients + 1), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pfd[0].revents & POLLIN) {
      int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        if (nclients == MAX_CLIENTS) {
          close(c);
        } else {
          nclients++;
          pfd[nclients].fd = c;
          pfd[nclients].events = POLLIN;
          pfd[nclients].revents = 0;
          served = 1;
        }
      }
    }
    for (int i = 1; i <= nclients; i++) {
      if (pfd[i].revents == 0) continue;
      char buf[NAME_MAX_LEN + 16];
      int fd;
      ssize_t r = (pfd[i].revents & POLLIN) ? recv_msg(pfd[i].fd, buf, sizeof buf, &fd) : 0;
      if (r > 0) {
        handle(pfd[i].fd, buf, fd);
      } else if (r == 0 || errno != EMSGSIZE) {
        close(pfd[i].fd);
        pfd[i] = pfd[nclients--];
        i--;
      }
    }
  }
  unlink(path);
  return 0;
}

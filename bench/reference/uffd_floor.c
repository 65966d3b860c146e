/* The floor of the fault-service benchmarks: the least a monitor in another
 * process must do to serve userfaultfd faults, poll(2) + read(2) +
 * UFFDIO_COPY from an image already in its memory, nothing else.
 * Man pages: userfaultfd(2), ioctl_userfaultfd(2), pidfd_open(2),
 * pidfd_getfd(2), poll(2), fcntl(2), sched_yield(2).
 *
 *   uffd_floor serve <length> <seed>
 *     Fills its image of <length> bytes (bench_common.h) once, prints READY,
 *     then serves one target after the other, like our page service serving
 *     from a PageSource filled once (so neither side allocates more fresh
 *     memory per run than the other: on a VM with free page reporting, fresh
 *     memory is slow memory). Commands on stdin, one per line:
 *       attach <pid> <fd> <address>
 *                    take fd <fd> of process <pid> (a fault_target's uffd) with
 *                    pidfd_getfd, negotiate the same features as our page
 *                    service (EVENT_FORK, _REMAP, _REMOVE, _UNMAP), register
 *                    [address, address+length) in missing mode -> ATTACHED
 *       bg <chunk>   UFFDIO_COPY the whole region in <chunk>-byte pieces, timed
 *                    -> BG <bytes copied> <ns>
 *       faults       -> FAULTS <faults resolved> <forks followed>
 *       detach       close the target's uffd and its children's -> DETACHED
 *       quit         (so does end of file)
 *     It serves the target's faults and, through UFFD_EVENT_FORK, its
 *     children's (a child's pages sit at the parent's addresses, so the same
 *     image serves them). The benchmark needs no mremap/madvise/munmap: those
 *     events are refused with an error naming them rather than half-handled.
 *
 *   uffd_floor pattern <seed> <length>
 *     Writes the image bytes to stdout, so our PageSource holds exactly what
 *     the floor serves. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_common.h"

#define MAX_FDS 4200 /* the parent, up to 4096 forked children and stdin */
#define FEATURES                                                                    \
  (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | \
   UFFD_FEATURE_EVENT_UNMAP)

struct retry {
  int fd;
  uint64_t page;
};

struct floor {
  uint8_t *image;
  uint64_t base, len;
  struct pollfd pfd[MAX_FDS]; /* [0] stdin, [1] the target, then its children */
  size_t nfd;
  struct retry *retries;
  size_t nretries, cap;
  uint64_t faults, forks;
  char line[256];
  size_t line_len;
};

static void add_fd(struct floor *f, int fd) {
  if (f->nfd == MAX_FDS) LR_DIE("uffd_floor: more than %d uffds", MAX_FDS - 2);
  /* A uffd is pollable only when non-blocking; a forked child's uffd takes
   * the creator's flags from userfaultfd(2), not ours. */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) LR_DIE("fcntl: %m");
  f->pfd[f->nfd++] = (struct pollfd){.fd = fd, .events = POLLIN};
}

static void push_retry(struct floor *f, int fd, uint64_t page) {
  if (f->nretries == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 64;
    f->retries = realloc(f->retries, f->cap * sizeof *f->retries);
    if (!f->retries) LR_DIE("realloc: %m");
  }
  f->retries[f->nretries++] = (struct retry){fd, page};
}

static void wake(int fd, uint64_t page) {
  struct uffdio_range r = {.start = page, .len = BENCH_PAGE};
  (void)ioctl(fd, UFFDIO_WAKE, &r);
}

/* One page for one fault. Pages outside the image are plain anonymous memory. */
static void resolve(struct floor *f, int fd, uint64_t page) {
  int rc;
  if (page >= f->base && page < f->base + f->len) {
    struct uffdio_copy c = {
        .dst = page, .src = (uintptr_t)(f->image + (page - f->base)), .len = BENCH_PAGE};
    rc = ioctl(fd, UFFDIO_COPY, &c);
  } else {
    struct uffdio_zeropage z = {.range = {.start = page, .len = BENCH_PAGE}};
    rc = ioctl(fd, UFFDIO_ZEROPAGE, &z);
  }
  if (rc == 0) {
    f->faults++;
    return;
  }
  switch (errno) {
    case EEXIST: /* another thread's fault placed it: wake everyone waiting */
    case ENOENT: /* the VMA went away: let the thread fault again */
      wake(fd, page);
      return;
    case EAGAIN: /* an event is pending (a fork): retry once it is read */
      push_retry(f, fd, page);
      return;
    case ESRCH:
    case ENOSPC: /* the process is gone */
      return;
    default:
      LR_DIE("uffd_floor: UFFDIO_COPY at 0x%" PRIx64 ": %m", page);
  }
}

/* Reads every pending message of one uffd: events first, then faults, so a
 * fork is acknowledged before copies that would otherwise meet EAGAIN. */
static void serve_fd(struct floor *f, int fd) {
  struct uffd_msg msgs[64];
  for (;;) {
    ssize_t r = read(fd, msgs, sizeof msgs);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) LR_DIE("uffd_floor: read uffd: %m");
    size_t n = (size_t)r / sizeof msgs[0];
    for (size_t k = 0; k < n; k++) {
      switch (msgs[k].event) {
        case UFFD_EVENT_PAGEFAULT:
          break;
        case UFFD_EVENT_FORK:
          add_fd(f, (int)msgs[k].arg.fork.ufd);
          f->forks++;
          break;
        case UFFD_EVENT_REMAP:
          LR_DIE("uffd_floor: UFFD_EVENT_REMAP (mremap) is not supported by the floor monitor");
        case UFFD_EVENT_REMOVE:
          LR_DIE("uffd_floor: UFFD_EVENT_REMOVE (madvise) is not supported by the floor monitor");
        case UFFD_EVENT_UNMAP:
          LR_DIE("uffd_floor: UFFD_EVENT_UNMAP (munmap) is not supported by the floor monitor");
        default:
          LR_DIE("uffd_floor: unknown uffd event %u", msgs[k].event);
      }
    }
    for (size_t k = 0; k < n; k++) {
      if (msgs[k].event == UFFD_EVENT_PAGEFAULT)
        resolve(f, fd, msgs[k].arg.pagefault.address & ~(BENCH_PAGE - 1));
    }
  }
}

static void serve_all(struct floor *f) {
  for (size_t i = 1; i < f->nfd; i++) serve_fd(f, f->pfd[i].fd);
}

static void process_retries(struct floor *f) {
  size_t n = f->nretries;
  struct retry *list = malloc(n * sizeof *list);
  if (!list) LR_DIE("malloc: %m");
  memcpy(list, f->retries, n * sizeof *list);
  f->nretries = 0;
  serve_all(f);
  for (size_t i = 0; i < n; i++) resolve(f, list[i].fd, list[i].page);
  /* EAGAIN lasts until the forking task clears mmap_changing; let it run. */
  if (f->nretries >= n) sched_yield();
  free(list);
}

/* UFFDIO_COPY of [dst, dst+len) one page at a time, skipping pages already there. */
static uint64_t copy_pages(struct floor *f, uint64_t dst, uint64_t len) {
  uint64_t copied = 0;
  for (uint64_t p = dst; p < dst + len;) {
    struct uffdio_copy c = {
        .dst = p, .src = (uintptr_t)(f->image + (p - f->base)), .len = BENCH_PAGE};
    if (ioctl(f->pfd[1].fd, UFFDIO_COPY, &c) == 0) {
      copied += BENCH_PAGE;
    } else if (errno == EAGAIN) {
      serve_all(f);
      continue;
    } else if (errno != EEXIST) {
      LR_DIE("uffd_floor: UFFDIO_COPY at 0x%" PRIx64 ": %m", p);
    }
    p += BENCH_PAGE;
  }
  return copied;
}

/* The reference for background copy: one tight loop of large UFFDIO_COPYs. */
static void background(struct floor *f, uint64_t chunk) {
  if (chunk < BENCH_PAGE || chunk % BENCH_PAGE)
    LR_DIE("uffd_floor: bad chunk size %" PRIu64, chunk);
  uint64_t copied = 0;
  uint64_t t0 = bench_now_ns();
  for (uint64_t off = 0; off < f->len;) {
    uint64_t n = f->len - off < chunk ? f->len - off : chunk;
    struct uffdio_copy c = {.dst = f->base + off, .src = (uintptr_t)(f->image + off), .len = n};
    if (ioctl(f->pfd[1].fd, UFFDIO_COPY, &c) == 0) {
      copied += n;
      off += n;
      continue;
    }
    uint64_t done = c.copy > 0 ? (uint64_t)c.copy : 0;
    copied += done;
    if (errno == EAGAIN) {
      off += done;
      serve_all(f);
    } else if (errno == EEXIST) {
      copied += copy_pages(f, f->base + off + done, n - done);
      off += n;
    } else {
      LR_DIE("uffd_floor: UFFDIO_COPY at 0x%" PRIx64 ": %m", f->base + off + done);
    }
  }
  printf("BG %" PRIu64 " %" PRIu64 "\n", copied, bench_now_ns() - t0);
}

static int take_uffd(pid_t pid, int target_fd) {
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) LR_DIE("pidfd_open(%d): %m", (int)pid);
  int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
  if (fd < 0) LR_DIE("pidfd_getfd(%d, %d): %m", (int)pid, target_fd);
  close(pidfd);
  struct uffdio_api api = {.api = UFFD_API, .features = FEATURES};
  if (ioctl(fd, UFFDIO_API, &api) != 0) LR_DIE("UFFDIO_API: %m");
  return fd;
}

static void attach(struct floor *f, pid_t pid, int target_fd, uint64_t base) {
  if (f->nfd > 1) LR_DIE("uffd_floor: attach while attached");
  f->base = base;
  f->faults = f->forks = 0;
  add_fd(f, take_uffd(pid, target_fd));
  struct uffdio_register reg = {.range = {.start = base, .len = f->len},
                                .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(f->pfd[1].fd, UFFDIO_REGISTER, &reg) != 0) LR_DIE("UFFDIO_REGISTER: %m");
  printf("ATTACHED\n");
}

/* Closing our fds lets the kernel unregister the ranges (the target closed
 * its own copy), so nothing waits for us any more. */
static void detach(struct floor *f) {
  for (size_t i = 1; i < f->nfd; i++) close(f->pfd[i].fd);
  f->nfd = 1;
  f->nretries = 0;
  printf("DETACHED\n");
}

/* Returns 0 when told to quit. */
static int command(struct floor *f, const char *line) {
  uint64_t chunk, base;
  int pid, fd;
  if (!strcmp(line, "quit")) return 0;
  if (sscanf(line, "attach %d %d %" SCNu64, &pid, &fd, &base) == 3) {
    attach(f, (pid_t)pid, fd, base);
  } else if (f->nfd > 1 && sscanf(line, "bg %" SCNu64, &chunk) == 1) {
    background(f, chunk);
  } else if (!strcmp(line, "faults")) {
    printf("FAULTS %" PRIu64 " %" PRIu64 "\n", f->faults, f->forks);
  } else if (!strcmp(line, "detach")) {
    detach(f);
  } else {
    printf("ERR unknown command (or not attached): %s\n", line);
  }
  fflush(stdout);
  return 1;
}

static int read_commands(struct floor *f) {
  ssize_t r = read(0, f->line + f->line_len, sizeof f->line - 1 - f->line_len);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (r <= 0) return 0;
  f->line_len += (size_t)r;
  f->line[f->line_len] = '\0';
  char *nl;
  while ((nl = strchr(f->line, '\n')) != NULL) {
    *nl = '\0';
    if (!command(f, f->line)) return 0;
    f->line_len -= (size_t)(nl + 1 - f->line);
    memmove(f->line, nl + 1, f->line_len + 1);
  }
  if (f->line_len == sizeof f->line - 1) LR_DIE("uffd_floor: command line too long");
  return 1;
}

static int serve(uint64_t len, uint64_t seed) {
  static struct floor f; /* static only for its size (the pollfd table) */
  f.len = len;
  f.image = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (f.image == MAP_FAILED) LR_DIE("mmap: %m");
  bench_fill(f.image, 0, len, seed);
  f.pfd[f.nfd++] = (struct pollfd){.fd = 0, .events = POLLIN};
  printf("READY\n");
  fflush(stdout);
  for (;;) {
    int n = poll(f.pfd, f.nfd, f.nretries ? 0 : -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) LR_DIE("poll: %m");
    if (f.pfd[0].revents && !read_commands(&f)) return 0;
    for (size_t i = 1; i < f.nfd; i++) {
      if (f.pfd[i].revents & (POLLERR | POLLNVAL))
        LR_DIE("uffd_floor: poll reported an error on a uffd");
      if (f.pfd[i].revents & POLLIN) serve_fd(&f, f.pfd[i].fd);
    }
    if (f.nretries) process_retries(&f);
  }
}

static int pattern(uint64_t seed, uint64_t len) {
  static uint8_t buf[1 << 20];
  for (uint64_t off = 0; off < len; off += sizeof buf) {
    size_t n = len - off < sizeof buf ? (size_t)(len - off) : sizeof buf;
    bench_fill(buf, off, n, seed);
    for (size_t w = 0; w < n;) {
      ssize_t r = write(1, buf + w, n - w);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) LR_DIE("write: %m");
      w += (size_t)r;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "serve")) {
    uint64_t len = strtoull(argv[2], NULL, 0);
    if (len == 0 || len % BENCH_PAGE) LR_DIE("uffd_floor: length must be a positive page multiple");
    return serve(len, strtoull(argv[3], NULL, 0));
  }
  if (argc == 4 && !strcmp(argv[1], "pattern")) {
    uint64_t len = strtoull(argv[3], NULL, 0);
    if (len % BENCH_PAGE) LR_DIE("uffd_floor: length must be a page multiple");
    return pattern(strtoull(argv[2], NULL, 0), len);
  }
  LR_DIE(
      "usage: uffd_floor serve <length> <seed>\n"
      "       uffd_floor pattern <seed> <length>");
}

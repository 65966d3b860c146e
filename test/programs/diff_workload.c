/* The differential workload: a seeded PRNG drives a sequence of steps over a
 * few large anonymous regions (patterned at start, so lazy pages carry image
 * data): word writes and reads, fork (the child runs its own sub-sequence and
 * hands its digest back through a pipe), mremap (move, grow, shrink),
 * madvise(MADV_DONTNEED), munmap, mmap(MAP_FIXED) over part of a region, and
 * short-lived threads. At the end it prints "DIGEST <hex>": every byte of its
 * regions, in region order, folded with the children's digests and the words
 * it read. Nothing folded depends on an address, so an uninterrupted run and a
 * run dumped at step K and restored must print the same digest.
 * With K and GOFILE it prints "PAUSE K" before step K and sleeps until GOFILE
 * exists (a dump there kills it; the restored copy goes on by itself).
 * Output is one write(2) per line on stdout (a regular file: it restores with
 * its offset).
 * Usage: diff_workload SEED STEPS [K GOFILE] */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define PAGE 4096UL
#define NREG 3
#define START_LEN (16UL << 20)
#define MAX_LEN (32UL << 20)
#define MIN_LEN (1UL << 20)

struct region {
  unsigned char *p;
  size_t len;
};

/* Process-wide on purpose: this is the state a dump must carry across. */
static struct region regs[NREG];
static uint64_t folded = 0x243f6a8885a308d3ULL;

/* Failures go to stdout as well: in order with the other lines, children's included. */
#define DIE(...)         \
  do {                   \
    lr_say("FAIL ");     \
    lr_say(__VA_ARGS__); \
    lr_say("\n");        \
    _exit(99);           \
  } while (0)

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t below(uint64_t *s, uint64_t n) { return next(s) % n; }

static void fold(uint64_t v) {
  folded ^= v;
  folded *= 0x100000001b3ULL;
  folded ^= folded >> 29;
}

static uint64_t digest(void) {
  uint64_t h = folded;
  for (int i = 0; i < NREG; i++) {
    const uint64_t *w = (const uint64_t *)regs[i].p;
    h ^= regs[i].len;
    for (size_t k = 0; k < regs[i].len / 8; k++) h = (h ^ w[k]) * 0x100000001b3ULL;
  }
  return h;
}

static size_t pages(size_t len) { return len / PAGE; }

static void op_write(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  size_t n = 1 + below(s, 64);
  for (size_t i = 0; i < n; i++) ((uint64_t *)r->p)[below(s, r->len / 8)] = next(s);
}

static void op_read(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  for (int i = 0; i < 64; i++) fold(((uint64_t *)r->p)[below(s, r->len / 8)]);
}

static void op_dontneed(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  size_t first = below(s, pages(r->len)), n = 1 + below(s, 256);
  if (first + n > pages(r->len)) n = pages(r->len) - first;
  if (madvise(r->p + first * PAGE, n * PAGE, MADV_DONTNEED) != 0) DIE("madvise: %d", errno);
}

static void op_fixed(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  size_t first = below(s, pages(r->len)), n = 1 + below(s, 128);
  if (first + n > pages(r->len)) n = pages(r->len) - first;
  void *p = mmap(r->p + first * PAGE, n * PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) DIE("mmap fixed: %d", errno);
}

/* munmap: either the tail of a region, or all of it, replaced by a new
 * mapping (which usually reuses the addresses) with a few words written. */
static void op_munmap(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  if (below(s, 2) == 0 && r->len > MIN_LEN) {
    size_t n = 1 + below(s, pages(r->len - MIN_LEN));
    if (munmap(r->p + r->len - n * PAGE, n * PAGE) != 0) DIE("munmap tail: %d", errno);
    r->len -= n * PAGE;
    return;
  }
  if (munmap(r->p, r->len) != 0) DIE("munmap: %d", errno);
  r->len = MIN_LEN + below(s, 8) * MIN_LEN;
  r->p = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r->p == MAP_FAILED) DIE("mmap: %d", errno);
  for (int i = 0; i < 32; i++) ((uint64_t *)r->p)[below(s, r->len / 8)] = next(s);
}

/* Moves [from, from+len) to `to` piece by piece when one mremap cannot: since Linux 6.17 a move may
 * span several VMAs, but not VMAs registered with a userfaultfd (EFAULT), which is what a lazily
 * restored region is. Such a move fails part way, after moving the VMAs before the first registered
 * one: a page already gone from `from` (msync says ENOMEM) has moved. */
static void move_pieces(unsigned char *from, size_t len, unsigned char *to) {
  for (size_t off = 0; off < len; off += 64 * PAGE) {
    size_t n = len - off < 64 * PAGE ? len - off : 64 * PAGE;
    if (mremap(from + off, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, to + off) != MAP_FAILED) continue;
    if (errno != EFAULT) DIE("mremap piece: %d", errno);
    for (size_t p = 0; p < n; p += PAGE) {
      unsigned char *a = from + off + p;
      if (mremap(a, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, to + off + p) != MAP_FAILED)
        continue;
      if (errno != EFAULT || msync(a, PAGE, MS_ASYNC) == 0 || errno != ENOMEM)
        DIE("mremap page: %d", errno);
    }
  }
}

static void *move_onto_fresh(struct region *r, size_t len) {
  unsigned char *to = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (to == MAP_FAILED) DIE("mmap target: %d", errno);
  if (mremap(r->p, r->len, r->len, MREMAP_MAYMOVE | MREMAP_FIXED, to) == MAP_FAILED) {
    if (errno != EFAULT) DIE("mremap move: %d", errno);
    move_pieces(r->p, r->len, to);
  }
  return to;
}

static void op_mremap(uint64_t *s) {
  struct region *r = &regs[below(s, NREG)];
  int kind = (int)below(s, 3);
  void *p;
  if (kind == 0) {
    /* Move onto a fresh mapping: the target is unmapped implicitly. */
    p = move_onto_fresh(r, r->len);
  } else if (kind == 1 && r->len < MAX_LEN) {
    size_t len = r->len + (1 + below(s, pages(MAX_LEN - r->len))) * PAGE;
    p = mremap(r->p, r->len, len, MREMAP_MAYMOVE);
    /* EFAULT: the region spans several VMAs (a MAP_FIXED split it, or a restore merged them
     * differently): the same result by moving it onto the head of a fresh mapping of the new
     * length. */
    if (p == MAP_FAILED && errno == EFAULT) p = move_onto_fresh(r, len);
    if (p != MAP_FAILED) r->len = len;
  } else if (r->len > MIN_LEN) {
    size_t len = r->len - (1 + below(s, pages(r->len - MIN_LEN))) * PAGE;
    p = mremap(r->p, r->len, len, 0);
    if (p != MAP_FAILED) r->len = len;
  } else {
    return;
  }
  if (p == MAP_FAILED) DIE("mremap kind %d: %d", kind, errno);
  r->p = p;
}

/* The steps a child or a thread may take (no fork, no thread, no change of
 * the layout a sibling thread relies on unless it is a child). */
static void child_step(uint64_t *s, int layout) {
  switch (below(s, layout ? 6 : 2)) {
    case 0:
      op_write(s);
      break;
    case 1:
      op_read(s);
      break;
    case 2:
      op_dontneed(s);
      break;
    case 3:
      op_mremap(s);
      break;
    case 4:
      op_munmap(s);
      break;
    default:
      op_fixed(s);
      break;
  }
}

static void op_fork(uint64_t *s) {
  int fds[2];
  if (pipe(fds) != 0) DIE("pipe: %d", errno);
  /* Some children exit at once: their lazy state is dropped while the parent's stays. */
  int steps = below(s, 4) == 0 ? 0 : (int)below(s, 40);
  uint64_t cs = next(s) | 1;
  pid_t pid = fork();
  if (pid < 0) DIE("fork: %d", errno);
  if (pid == 0) {
    close(fds[0]);
    for (int i = 0; i < steps; i++) child_step(&cs, 1);
    uint64_t d = digest();
    if (write(fds[1], &d, sizeof d) != sizeof d) _exit(97);
    _exit((int)(d & 0x3f));
  }
  close(fds[1]);
  uint64_t d = 0;
  ssize_t got;
  while ((got = read(fds[0], &d, sizeof d)) < 0 && errno == EINTR) {
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  lr_say("CHILD %d %016" PRIx64 " %d %d\n", steps, d, (int)got, status);
  fold(d);
  fold((uint64_t)got);
  fold((uint64_t)status);
}

struct thread_arg {
  uint64_t seed;
};

static void *thread_main(void *p) {
  struct thread_arg *a = p;
  for (int i = 0; i < 16; i++) child_step(&a->seed, 0);
  return NULL;
}

static void op_thread(uint64_t *s) {
  struct thread_arg a = {next(s) | 1};
  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, &a) != 0) DIE("pthread_create");
  pthread_join(t, NULL);
  fold(a.seed);
}

static void step(uint64_t *s) {
  uint64_t k = below(s, 100);
  if (k < 30)
    op_write(s);
  else if (k < 50)
    op_read(s);
  else if (k < 60)
    op_fork(s);
  else if (k < 70)
    op_mremap(s);
  else if (k < 78)
    op_dontneed(s);
  else if (k < 86)
    op_munmap(s);
  else if (k < 93)
    op_fixed(s);
  else
    op_thread(s);
}

static void pause_until(const char *gofile, long k) {
  lr_say("PAUSE %ld\n", k);
  struct stat st;
  while (stat(gofile, &st) != 0) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 5) DIE("usage: diff_workload SEED STEPS [K GOFILE]");
  uint64_t seed = strtoull(argv[1], NULL, 0);
  long steps = atol(argv[2]);
  long pause_at = argc == 5 ? atol(argv[3]) : -1;
  uint64_t s = (seed * 0x9e3779b97f4a7c15ULL) | 1;
  for (int i = 0; i < NREG; i++) {
    regs[i].len = START_LEN;
    regs[i].p = mmap(NULL, START_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (regs[i].p == MAP_FAILED) DIE("mmap: %d", errno);
    /* Patterned relative to offset, not address: the digest must not depend on where the kernel put
     * it. */
    uint64_t *w = (uint64_t *)regs[i].p;
    for (size_t k = 0; k < START_LEN / 8; k++) w[k] = lr_pattern_word(seed + (uint64_t)i, 0, k * 8);
  }
  lr_say("READY %ld\n", (long)getpid());
  for (long i = 0; i < steps; i++) {
    if (i == pause_at) pause_until(argv[4], i);
    step(&s);
  }
  /* The parts, for diagnosis of a mismatch: the words read and children's digests, then each
   * region. */
  lr_say("FOLDED %016" PRIx64 "\n", folded);
  for (int i = 0; i < NREG; i++) {
    uint64_t h = 0;
    for (size_t k = 0; k < regs[i].len / 8; k++)
      h = (h ^ ((uint64_t *)regs[i].p)[k]) * 0x100000001b3ULL;
    lr_say("REGION %d %zu %016" PRIx64 "\n", i, regs[i].len, h);
  }
  lr_say("DIGEST %016" PRIx64 "\n", digest());
  return 0;
}

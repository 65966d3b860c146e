/* Targeted workloads for the non-cooperative userfaultfd events in restored
 * processes (test/events.test.ts). Fills MIB MiB of anonymous memory with the
 * common.h pattern, prints "READY <pid>", sleeps until GOFILE exists (the test
 * dumps it there and creates GOFILE before the restore, so the restored copy
 * acts at once, racing the background copy), then does MODE and checks what
 * every page holds: "OK <mode>" and exit 0, or "FAIL <what>" and exit 1.
 * Modes: fork grandchildren vfork exitnow storm remap remove unmap threads split exitfaulting.
 * Usage: diff_events MODE MIB GOFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define PAGE 4096UL
#define SEED 0xd1ffe7e5ULL
#define STORM 100
#define THREADS 8

#define FAIL(...)        \
  do {                   \
    lr_say("FAIL ");     \
    lr_say(__VA_ARGS__); \
    lr_say("\n");        \
    _exit(1);            \
  } while (0)

/* Pages [at, at+len) must hold the pattern of the region filled at `base` (their data keeps its
 * origin). */
static void expect_pattern(const unsigned char *at, size_t len, uintptr_t base, size_t off,
                           const char *what) {
  const uint64_t *w = (const uint64_t *)at;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != lr_pattern_word(SEED, base, off + i * 8)) FAIL("%s: pattern at +%zu", what, i * 8);
}

static void expect_zero(const unsigned char *at, size_t len, const char *what) {
  const uint64_t *w = (const uint64_t *)at;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != 0) FAIL("%s: not zero at +%zu", what, i * 8);
}

static void wait_ok(pid_t pid, const char *what) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) FAIL("%s: waitpid %d", what, errno);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) FAIL("%s: child status %d", what, status);
}

static unsigned char *mem;
static size_t len;

static void whole(const char *what) { expect_pattern(mem, len, (uintptr_t)mem, 0, what); }

static void mode_fork(void) {
  pid_t pid = fork();
  if (pid == 0) {
    whole("child");
    _exit(0);
  }
  whole("parent");
  wait_ok(pid, "fork");
}

static void mode_grandchildren(void) {
  pid_t pid = fork();
  if (pid == 0) {
    pid_t g = fork();
    if (g == 0) {
      whole("grandchild");
      _exit(0);
    }
    expect_pattern(mem + len / 2, len / 2, (uintptr_t)mem, len / 2, "child");
    wait_ok(g, "grandchild");
    whole("child");
    _exit(0);
  }
  wait_ok(pid, "child");
  whole("parent");
}

/* A vfork child shares the address space: its faults are the parent's. */
static void mode_vfork(void) {
  pid_t pid = vfork();
  if (pid == 0) {
    size_t off = (len / 3) & ~(PAGE - 1);
    if (*(const uint64_t *)(mem + off) != lr_pattern_word(SEED, (uintptr_t)mem, off)) _exit(3);
    execl("/bin/true", "true", (char *)NULL);
    _exit(4);
  }
  wait_ok(pid, "vfork");
  whole("parent");
}

/* Children that exit at once, while the parent's lazy state goes on. */
static void mode_exitnow(void) {
  pid_t pids[20];
  for (int i = 0; i < 20; i++)
    if ((pids[i] = fork()) == 0) _exit(0);
  for (int i = 0; i < 20; i++) wait_ok(pids[i], "exitnow");
  whole("parent");
}

/* A hundred children at once, each checking its slice and the first and last pages. */
static void mode_storm(void) {
  pid_t pids[STORM];
  size_t slice = (len / STORM) & ~(PAGE - 1);
  for (int i = 0; i < STORM; i++) {
    pids[i] = fork();
    if (pids[i] < 0) FAIL("fork %d: %d", i, errno);
    if (pids[i] == 0) {
      expect_pattern(mem + i * slice, slice, (uintptr_t)mem, i * slice, "storm slice");
      expect_pattern(mem, PAGE, (uintptr_t)mem, 0, "storm first");
      expect_pattern(mem + len - PAGE, PAGE, (uintptr_t)mem, len - PAGE, "storm last");
      _exit(0);
    }
  }
  for (int i = 0; i < STORM; i++) wait_ok(pids[i], "storm");
  whole("parent");
}

/* Move the second quarter elsewhere, grow the third quarter's tail mapping, shrink the last one. */
static void mode_remap(void) {
  size_t q = len / 4;
  uintptr_t base = (uintptr_t)mem;
  unsigned char *to = mmap(NULL, q, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (to == MAP_FAILED) FAIL("mmap: %d", errno);
  unsigned char *moved = mremap(mem + q, q, q, MREMAP_MAYMOVE | MREMAP_FIXED, to);
  if (moved != to) FAIL("mremap move: %d", errno);
  /* The last quarter shrinks by half in place; the third grows by a quarter (it moves: the last one
   * follows it). */
  if (mremap(mem + 3 * q, q, q / 2, 0) != mem + 3 * q) FAIL("mremap shrink: %d", errno);
  unsigned char *grown = mremap(mem + 2 * q, q, q + q / 4, MREMAP_MAYMOVE);
  if (grown == MAP_FAILED) FAIL("mremap grow: %d", errno);
  expect_pattern(mem, q, base, 0, "unmoved");
  expect_pattern(moved, q, base, q, "moved");
  expect_pattern(grown, q, base, 2 * q, "grown");
  expect_zero(grown + q, q / 4, "grown tail");
  expect_pattern(mem + 3 * q, q / 2, base, 3 * q, "shrunk");
  pid_t pid = fork();
  if (pid == 0) {
    expect_pattern(moved, q, base, q, "child moved");
    expect_zero(grown + q, q / 4, "child grown tail");
    _exit(0);
  }
  wait_ok(pid, "remap child");
}

/* DONTNEED over lazy pages: zeros, here and in a child forked afterwards. */
static void mode_remove(void) {
  size_t q = len / 4;
  if (madvise(mem + q, q, MADV_DONTNEED) != 0) FAIL("madvise: %d", errno);
  expect_zero(mem + q, q, "removed");
  pid_t pid = fork();
  if (pid == 0) {
    expect_zero(mem + q, q, "child removed");
    expect_pattern(mem + 2 * q, 2 * q, (uintptr_t)mem, 2 * q, "child kept");
    _exit(0);
  }
  wait_ok(pid, "remove child");
  expect_pattern(mem, q, (uintptr_t)mem, 0, "kept head");
  expect_pattern(mem + 2 * q, 2 * q, (uintptr_t)mem, 2 * q, "kept tail");
}

/* munmap then a new mapping at the same addresses, MAP_FIXED straight over lazy pages, and the
 * target of an mremap: all read zero, and still do once the rest of the memory has arrived. */
static void mode_unmap(void) {
  size_t q = len / 4;
  if (munmap(mem + q, q) != 0) FAIL("munmap: %d", errno);
  unsigned char *again =
      mmap(mem + q, q, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (again != mem + q) FAIL("mmap again: %d", errno);
  unsigned char *over = mmap(mem + 2 * q, q / 2, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (over != mem + 2 * q) FAIL("mmap fixed: %d", errno);
  unsigned char *fresh =
      mmap(NULL, q / 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fresh == MAP_FAILED) FAIL("mmap fresh: %d", errno);
  /* The fresh pages replace lazy ones by mremap: an implicit unmap of that part of the lazy range.
   */
  if (mremap(fresh, q / 4, q / 4, MREMAP_MAYMOVE | MREMAP_FIXED, mem + 3 * q) != mem + 3 * q)
    FAIL("mremap over: %d", errno);
  for (int round = 0; round < 2; round++) {
    expect_zero(again, q, "remapped after munmap");
    expect_zero(over, q / 2, "map fixed");
    expect_zero(mem + 3 * q, q / 4, "mremap target");
    expect_pattern(mem, q, (uintptr_t)mem, 0, "kept");
    expect_pattern(mem + 2 * q + q / 2, q / 2, (uintptr_t)mem, 2 * q + q / 2, "kept after fixed");
    expect_pattern(mem + 3 * q + q / 4, q - q / 4, (uintptr_t)mem, 3 * q + q / 4,
                   "kept after target");
    /* Long enough for the background copy to have run over the rest. */
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
  }
}

static pthread_barrier_t barrier;

static void *reader(void *arg) {
  size_t off = (size_t)(uintptr_t)arg;
  pthread_barrier_wait(&barrier);
  uint64_t v = *(volatile uint64_t *)(mem + off);
  return (void *)(uintptr_t)(v == lr_pattern_word(SEED, (uintptr_t)mem, off));
}

/* Many threads fault on one page at once, over several pages: duplicate faults (EEXIST, or woken).
 */
static void mode_threads(void) {
  for (size_t k = 0; k < 16; k++) {
    size_t off = (len / 16) * k + 8 * k;
    pthread_t t[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)off);
    for (int i = 0; i < THREADS; i++) {
      void *ok = NULL;
      pthread_join(t[i], &ok);
      if (!ok) FAIL("thread %d read a wrong word at %zu", i, off);
    }
    pthread_barrier_destroy(&barrier);
  }
  whole("threads");
}

/* Splits the lazy VMA into hundreds while the background copy runs over it: a page replaced by
 * MAP_FIXED every 64 pages, and the page after it made read-only (a split without an unmap). Copies
 * in flight now cross VMA boundaries or meet holes; every page must still end up right. */
static void mode_split(void) {
  for (size_t p = 63; p + 1 < len / PAGE; p += 64) {
    if (mmap(mem + p * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED)
      FAIL("mmap fixed: %d", errno);
    if (mprotect(mem + (p + 1) * PAGE, PAGE, PROT_READ) != 0) FAIL("mprotect: %d", errno);
  }
  for (size_t p = 0; p < len / PAGE; p++) {
    if (p % 64 == 63 && p + 1 < len / PAGE)
      expect_zero(mem + p * PAGE, PAGE, "fixed page");
    else
      expect_pattern(mem + p * PAGE, PAGE, (uintptr_t)mem, p * PAGE, "split");
  }
}

static void *spin_reader(void *arg) {
  uint64_t s = (uintptr_t)arg | 1;
  for (;;) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    size_t off = (s % (len / 8)) * 8;
    if (*(volatile uint64_t *)(mem + off) != lr_pattern_word(SEED, (uintptr_t)mem, off)) _exit(2);
  }
  return NULL;
}

/* Threads fault all over the lazy memory while the process exits under them: the service must let
 * the task go with faults (and a background copy) in flight, and report its exit. */
static void mode_exitfaulting(void) {
  pthread_t t;
  for (int i = 0; i < THREADS; i++)
    pthread_create(&t, NULL, spin_reader, (void *)(uintptr_t)(i + 1));
  struct timespec ts = {0, 2 * 1000 * 1000};
  nanosleep(&ts, NULL);
  lr_say("OK exitfaulting\n");
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 4) LR_DIE("usage: diff_events MODE MIB GOFILE");
  len = (size_t)atol(argv[2]) << 20;
  mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) LR_DIE("mmap failed");
  lr_fill(mem, len, SEED);
  lr_say("READY %ld\n", (long)getpid());
  struct stat st;
  while (stat(argv[3], &st) != 0) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  const char *m = argv[1];
  if (!strcmp(m, "fork"))
    mode_fork();
  else if (!strcmp(m, "grandchildren"))
    mode_grandchildren();
  else if (!strcmp(m, "vfork"))
    mode_vfork();
  else if (!strcmp(m, "exitnow"))
    mode_exitnow();
  else if (!strcmp(m, "storm"))
    mode_storm();
  else if (!strcmp(m, "remap"))
    mode_remap();
  else if (!strcmp(m, "remove"))
    mode_remove();
  else if (!strcmp(m, "unmap"))
    mode_unmap();
  else if (!strcmp(m, "threads"))
    mode_threads();
  else if (!strcmp(m, "split"))
    mode_split();
  else if (!strcmp(m, "exitfaulting"))
    mode_exitfaulting();
  else
    FAIL("unknown mode %s", m);
  lr_say("OK %s\n", m);
  return 0;
}

/* Shared helpers for the C workload programs: deterministic page patterns
 * that a program can write before a dump and verify after a restore. */
#pragma once
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The 64-bit word at byte offset `off` of the page at `addr`, for a pattern
 * seeded by `seed`: every word differs, so a page copied to the wrong place,
 * a zero page or stale data is always detected. */
static inline uint64_t lr_pattern_word(uint64_t seed, uint64_t addr, uint64_t off) {
  uint64_t x = seed ^ (addr + off) ^ 0x9e3779b97f4a7c15ULL;
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static inline void lr_fill(void *base, size_t len, uint64_t seed) {
  uint64_t *w = base;
  for (size_t i = 0; i < len / 8; i++)
    w[i] = lr_pattern_word(seed, (uintptr_t)base & ~4095ULL, i * 8);
}

/* Returns the byte offset of the first mismatch, or -1 when all match. */
static inline long lr_check(const void *base, size_t len, uint64_t seed) {
  const uint64_t *w = base;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != lr_pattern_word(seed, (uintptr_t)base & ~4095ULL, i * 8)) return (long)(i * 8);
  return -1;
}

#define LR_DIE(...)               \
  do {                            \
    fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr);          \
    exit(99);                     \
  } while (0)

/* One write(2) per line on stdout: unbuffered, so the file offset is all the
 * state a dump has to carry (and lines of forked children stay whole). */
static inline void lr_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void lr_say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= (int)sizeof line) _exit(97);
  if (write(1, line, (size_t)n) != n) _exit(98);
}

/* Sleeps `ms` milliseconds, through signals. */
static inline void lr_nap(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Waits until another process of the tree sets `*flag` (a word of shared memory). */
static inline void lr_wait_flag(volatile uint64_t *flag) {
  while (*flag == 0) lr_nap(1);
}

/* A 4 KiB page of a shared object holds the pattern of `seed` relative to the object (its offset
 * `off` in it, not an address, which differs between mappings), or zero. */
static inline void lr_fill_object_page(unsigned char *page, uint64_t seed, size_t off) {
  for (size_t w = 0; w < 4096 / 8; w++)
    ((uint64_t *)page)[w] = lr_pattern_word(seed, 0, off + w * 8);
}

static inline int lr_check_object_page(const unsigned char *page, uint64_t seed, size_t off,
                                       int zero) {
  for (size_t w = 0; w < 4096 / 8; w++) {
    uint64_t want = zero ? 0 : lr_pattern_word(seed, 0, off + w * 8);
    if (((const uint64_t *)page)[w] != want) return 0;
  }
  return 1;
}

/* A parent and two children sharing memory: forks the children (their pids in kids[]) and returns
 * who this process is, 0 for the parent, 1 or 2 for a child; `role` becomes "child<n>" in a child
 * (left as it is in the parent). */
static inline int lr_fork_two(pid_t kids[2], char *role, size_t role_size) {
  for (int i = 0; i < 2; i++) {
    kids[i] = fork();
    if (kids[i] < 0) LR_DIE("fork failed");
    if (kids[i] == 0) {
      snprintf(role, role_size, "child%d", i + 1);
      return i + 1;
    }
  }
  return 0;
}

/* In the parent of lr_fork_two: waits for both children; 1 when both exited with 0, else prints
 * "CHILD FAIL <n> <status>" and returns 0. */
static inline int lr_wait_two(const pid_t kids[2]) {
  for (int i = 0; i < 2; i++) {
    int status = 0;
    if (waitpid(kids[i], &status, 0) != kids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      lr_say("CHILD FAIL %d %d\n", i + 1, status);
      return 0;
    }
  }
  return 1;
}

/* The end of a process of lr_fork_two that verified its memory: prints "VERIFY OK <role>"; the
 * parent then waits for both children and prints "ALL OK". Returns the process's exit status. */
static inline int lr_verified_two(int me, const pid_t kids[2], const char *role) {
  lr_say("VERIFY OK %s\n", role);
  if (me != 0) return 0;
  if (!lr_wait_two(kids)) return 1;
  lr_say("ALL OK\n");
  return 0;
}

/* Shared by the benchmark's C programs: the image pattern, the clock and the
 * seeded page order. Man pages: clock_gettime(2).
 *
 * The image is keyed by region offset, not by address, so one copy of it
 * (the floor monitor's, or our PageSource) serves every target of a run
 * whatever address ASLR gave its region: the word at region offset `off` is
 * lr_pattern_word(seed, BENCH_ORIGIN, off), i.e. the test pattern of the
 * page that sits at BENCH_ORIGIN + off in the dumped address space. Our page
 * service declares its lazy range with origin BENCH_ORIGIN for that reason. */
#pragma once
#include <stdint.h>
#include <time.h>

#include "common.h"

#define BENCH_ORIGIN 0x100000000ULL
#define BENCH_PAGE 4096UL

static inline void bench_fill(uint8_t *dst, uint64_t off, size_t len, uint64_t seed) {
  uint64_t *w = (uint64_t *)dst;
  for (size_t i = 0; i < len / 8; i++) w[i] = lr_pattern_word(seed, BENCH_ORIGIN, off + i * 8);
}

/* Byte offset (within p) of the first word that differs, or -1. */
static inline long bench_check(const uint8_t *p, uint64_t off, size_t len, uint64_t seed) {
  const uint64_t *w = (const uint64_t *)p;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != lr_pattern_word(seed, BENCH_ORIGIN, off + i * 8)) return (long)(i * 8);
  return -1;
}

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A permutation of 0..n-1 fixed by `seed` (Fisher-Yates with xorshift64), so
 * the floor run and ours touch exactly the same pages in the same order. */
static inline void bench_shuffle(uint32_t *order, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
  uint64_t x = seed | 1;
  for (size_t i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t j = (size_t)(x % (i + 1));
    uint32_t tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
}

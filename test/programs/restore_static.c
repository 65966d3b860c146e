/* A statically linked, non-PIE loop for the restore tests (no ld.so, no
 * shared libraries, the brk heap right after its data, loaded at 0x400000
 * where the restorer helper is loaded too). It keeps a running checksum of
 * a heap buffer and a static array it updates every tick, prints "n <i>
 * <checksum>" lines, and once GOFILE exists recomputes everything from
 * scratch and prints "SUM OK" (or "SUM FAIL") and "DONE".
 * Usage: restore_static GOFILE */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define WORDS 4096

static uint64_t table[WORDS];

static uint64_t sum(const uint64_t *heap, long ticks) {
  uint64_t s = 0;
  for (long t = 0; t < ticks; t++) s = s * 31 + table[t % WORDS] + heap[t % WORDS];
  return s;
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: restore_static GOFILE");
  uint64_t *heap = malloc(WORDS * sizeof *heap); /* from brk: [heap] */
  if (!heap) LR_DIE("malloc");
  for (int i = 0; i < WORDS; i++) {
    table[i] = lr_pattern_word(7, 0, (uint64_t)i * 8);
    heap[i] = lr_pattern_word(8, 0, (uint64_t)i * 8);
  }
  uint64_t running = 0;
  long tick = 0;
  struct stat st;
  while (stat(argv[1], &st) != 0) {
    running = running * 31 + table[tick % WORDS] + heap[tick % WORDS];
    tick++;
    lr_say("n %ld %llu\n", tick, (unsigned long long)running);
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  lr_say("SUM %s %ld\n", sum(heap, tick) == running ? "OK" : "FAIL", tick);
  lr_say("DONE\n");
  return 0;
}

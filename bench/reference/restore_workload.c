/* The workload of the dump and restore benchmarks: a process with <MiB> MiB
 * of patterned anonymous memory that is dumped, then restored lazily or
 * eagerly, and proves from inside that it runs and that its memory is right.
 * Man pages: mmap(2), mincore(2), fork(2), clock_gettime(2), nanosleep(2), stat(2).
 *
 * restore_workload <MiB> <seed> <gofile> [children <n>]
 *
 * Fills the region with the image pattern of bench_common.h (keyed by region
 * offset: every page differs, so nothing dedups within one process), forks
 * <n> children that share it copy-on-write and only sleep, prints
 * "READY <pid> <MiB>", then writes "TICK <CLOCK_MONOTONIC ns>" about every
 * millisecond until <gofile> exists. The timestamps use the clock of Node's
 * process.hrtime, so the bench reads from the first TICK after its restore
 * call when the restored program ran, without polling error. Its output is a
 * plain file (restore_launch), written with one write(2) per line, so a
 * restored copy goes on writing where the dumped one stopped.
 *
 * <gofile> holds one command, read once it exists:
 *   check                 verify every page -> "CHECK OK <start ns> <end ns>" | "CHECK BAD <offset>"
 *   lat <order> <count>   first-touch <count> pages in the order seeded by <order>, timing each read,
 *                         then verify them -> "SAMPLES <n>", one "<ns> <resident>" per line (resident: 1
 *                         when mincore(2) found the page already in before the touch), "LAT OK" | "LAT BAD <off>"
 * Then it sleeps until it is killed, so the bench decides when it ends. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_common.h"

static void say(const char *fmt, ...) {
  char line[160];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (write(1, line, (size_t)n) != n) _exit(98);
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void sleep_forever(void) {
  for (;;) pause();
}

static void check_all(const uint8_t *mem, size_t len, uint64_t seed) {
  uint64_t t0 = bench_now_ns();
  for (size_t off = 0; off < len; off += BENCH_PAGE) {
    long bad = bench_check(mem + off, off, BENCH_PAGE, seed);
    if (bad >= 0) {
      say("CHECK BAD %zu\n", off + (size_t)bad);
      return;
    }
  }
  say("CHECK OK %" PRIu64 " %" PRIu64 "\n", t0, bench_now_ns());
}

/* Samples go out in large writes: the bench reads the file as it grows and
 * only looks at complete lines. */
static void print_samples(const uint64_t *ns, const uint8_t *resident, size_t n) {
  say("SAMPLES %zu\n", n);
  char buf[1 << 16];
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    used += (size_t)snprintf(buf + used, sizeof buf - used, "%" PRIu64 " %d\n", ns[i], resident[i] & 1);
    if (sizeof buf - used < 32 || i + 1 == n) {
      if (write(1, buf, used) != (ssize_t)used) _exit(98);
      used = 0;
    }
  }
}

static void first_touches(const uint8_t *mem, size_t len, uint64_t seed, uint64_t order_seed, size_t count) {
  size_t pages = len / BENCH_PAGE;
  if (count > pages) count = pages;
  uint32_t *order = malloc(pages * sizeof *order);
  uint64_t *ns = malloc(count * sizeof *ns);
  uint8_t *resident = malloc(count);
  if (!order || !ns || !resident) LR_DIE("malloc: %m");
  bench_shuffle(order, pages, order_seed);
  for (size_t i = 0; i < count; i++) {
    volatile const uint64_t *w = (const uint64_t *)(mem + (uint64_t)order[i] * BENCH_PAGE);
    /* Whether the monitor's background copy placed the page before this
     * touch (then it costs no fault); untimed, and a copy landing between
     * the two calls is counted as missing. */
    if (mincore((void *)w, BENCH_PAGE, resident + i) != 0) LR_DIE("mincore: %m");
    uint64_t t0 = bench_now_ns();
    (void)*w;
    ns[i] = bench_now_ns() - t0;
  }
  print_samples(ns, resident, count);
  for (size_t i = 0; i < count; i++) {
    uint64_t off = (uint64_t)order[i] * BENCH_PAGE;
    long bad = bench_check(mem + off, off, BENCH_PAGE, seed);
    if (bad >= 0) {
      say("LAT BAD %" PRIu64 "\n", off + (uint64_t)bad);
      return;
    }
  }
  say("LAT OK\n");
}

static void run_command(const char *gofile, const uint8_t *mem, size_t len, uint64_t seed) {
  char cmd[128] = {0};
  FILE *f = fopen(gofile, "r");
  if (!f || !fgets(cmd, sizeof cmd, f)) LR_DIE("cannot read %s", gofile);
  fclose(f);
  unsigned long long order_seed, count;
  if (strncmp(cmd, "check", 5) == 0)
    check_all(mem, len, seed);
  else if (sscanf(cmd, "lat %llu %llu", &order_seed, &count) == 2)
    first_touches(mem, len, seed, order_seed, count);
  else
    say("UNKNOWN %s\n", cmd);
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 6) LR_DIE("usage: restore_workload <MiB> <seed> <gofile> [children <n>]");
  size_t len = (size_t)strtoull(argv[1], NULL, 10) << 20;
  uint64_t seed = strtoull(argv[2], NULL, 10);
  int children = argc == 6 ? atoi(argv[5]) : 0;
  uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) LR_DIE("mmap: %m");
  bench_fill(mem, 0, len, seed);
  for (int i = 0; i < children; i++) {
    pid_t pid = fork();
    if (pid < 0) LR_DIE("fork: %m");
    if (pid == 0) sleep_forever();
  }
  say("READY %ld %zu\n", (long)getpid(), len >> 20);
  struct stat st;
  while (stat(argv[3], &st) != 0) {
    say("TICK %" PRIu64 "\n", bench_now_ns());
    nap_ms(1);
  }
  run_command(argv[3], mem, len, seed);
  sleep_forever();
}

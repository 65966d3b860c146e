/* The workload of the fault-service benchmarks, the same program whichever
 * monitor serves it (the C floor, uffd_floor.c, or our page service), so only
 * the monitor differs between the two sides of a comparison.
 * Man pages: userfaultfd(2), mmap(2), fork(2), clock_gettime(2),
 * pthread_barrier_wait(3p).
 *
 * fault_target <MiB> [plain]: maps <MiB> MiB it never writes, creates a
 * userfaultfd (privileged, so kernel-mode faults could be served too) without
 * UFFDIO_API, prints "READY <uffd> <address> <length>" and obeys one command
 * per line. With `plain` there is no uffd (READY -1 ...) and no monitor: the
 * pages forkstorm needs are written with the pattern first, which gives the
 * kernel-only baseline of the fork storm (the other commands need a monitor).
 *
 * fault_target <MiB> warm: writes <MiB> MiB and exits at once, printing
 * WARMED. The guest of a VM with free page reporting hands freed memory back
 * to the host, and memory the host must fault in again is several times
 * slower to touch; pages just freed by this run are taken again first, so
 * running it right before a measured target gives both sides warm memory.
 * The monitor takes the uffd with pidfd_getfd, negotiates and registers the
 * region, and serves it from the image of bench_common.h. Every command that
 * touches pages verifies them afterwards (outside the timed part), so a
 * monitor that delivers wrong data cannot produce a figure.
 *
 * Commands (<order> seeds the page permutation, <seed> the image pattern):
 *   closeuffd                          close our own uffd -> CLOSED
 *   lat <seed> <order> <count>         first-touch <count> pages one after the
 *                                      other, timing each read
 *                                      -> SAMPLES <n> <ns>... then LAT OK | LAT BAD <offset>
 *   threads <seed> <order> <n> <each>  n threads first-touch <each> distinct
 *                                      pages each, all at once
 *                                      -> SAMPLES (per fault), then THREADS <faults> <wall ns>
 * OK|BAD forkstorm <seed> <order> <forks> <prefault> touch <prefault> pages, then fork <forks>
 *                                      children one after the other, timing each
 *                                      fork() in the parent; each child first-touches
 *                                      one more page, verifies it and exits
 *                                      -> SAMPLES (ns per fork), then FORKS <n> <bad children>
 *   check <seed>                       verify the whole region -> OK | BAD <offset>
 *   exit
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"

/* The one region of this single-purpose program, set once in main. */
static uint8_t *region;
static size_t region_len;
static size_t region_pages;
static int plain;

static uint32_t *make_order(uint64_t order_seed) {
  uint32_t *order = malloc(region_pages * sizeof *order);
  if (!order) LR_DIE("malloc: %m");
  bench_shuffle(order, region_pages, order_seed);
  return order;
}

static void print_samples(const uint64_t *ns, size_t n) {
  printf("SAMPLES %zu", n);
  for (size_t i = 0; i < n; i++) printf(" %" PRIu64, ns[i]);
  putchar('\n');
}

/* Verifies the listed pages; returns the region offset of the first bad word or -1. */
static long check_pages(const uint32_t *pages, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) {
    uint64_t off = (uint64_t)pages[i] * BENCH_PAGE;
    long bad = bench_check(region + off, off, BENCH_PAGE, seed);
    if (bad >= 0) return (long)off + bad;
  }
  return -1;
}

static void cmd_lat(uint64_t seed, uint64_t order_seed, size_t count) {
  if (count == 0 || count > region_pages) LR_DIE("lat: count must be 1..%zu", region_pages);
  uint32_t *order = make_order(order_seed);
  uint64_t *ns = malloc(count * sizeof *ns);
  if (!ns) LR_DIE("malloc: %m");
  for (size_t i = 0; i < count; i++) {
    volatile const uint64_t *w = (const uint64_t *)(region + (uint64_t)order[i] * BENCH_PAGE);
    uint64_t t0 = bench_now_ns();
    (void)*w;
    ns[i] = bench_now_ns() - t0;
  }
  print_samples(ns, count);
  long bad = check_pages(order, count, seed);
  if (bad < 0)
    printf("LAT OK\n");
  else
    printf("LAT BAD %ld\n", bad);
  free(ns);
  free(order);
}

struct toucher {
  pthread_t tid;
  pthread_barrier_t *go;
  const uint32_t *pages;
  size_t n;
  uint64_t *ns;
  uint64_t start, end;
};

static void *toucher_main(void *p) {
  struct toucher *t = p;
  pthread_barrier_wait(t->go);
  t->start = bench_now_ns();
  for (size_t i = 0; i < t->n; i++) {
    volatile const uint64_t *w = (const uint64_t *)(region + (uint64_t)t->pages[i] * BENCH_PAGE);
    uint64_t t0 = bench_now_ns();
    (void)*w;
    t->ns[i] = bench_now_ns() - t0;
  }
  t->end = bench_now_ns();
  return NULL;
}

static void cmd_threads(uint64_t seed, uint64_t order_seed, size_t n, size_t each) {
  if (n == 0 || n > 64 || each == 0 || n * each > region_pages)
    LR_DIE("threads: need 1..64 threads and threads * pages <= %zu", region_pages);
  uint32_t *order = make_order(order_seed);
  uint64_t *ns = malloc(n * each * sizeof *ns);
  struct toucher *ts = calloc(n, sizeof *ts);
  if (!ns || !ts) LR_DIE("malloc: %m");
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, (unsigned)n);
  for (size_t i = 0; i < n; i++) {
    ts[i] = (struct toucher){.go = &go, .pages = order + i * each, .n = each, .ns = ns + i * each};
    if (pthread_create(&ts[i].tid, NULL, toucher_main, &ts[i]) != 0) LR_DIE("pthread_create");
  }
  uint64_t first = UINT64_MAX, last = 0;
  for (size_t i = 0; i < n; i++) {
    pthread_join(ts[i].tid, NULL);
    if (ts[i].start < first) first = ts[i].start;
    if (ts[i].end > last) last = ts[i].end;
  }
  pthread_barrier_destroy(&go);
  print_samples(ns, n * each);
  long bad = check_pages(order, n * each, seed);
  printf("THREADS %zu %" PRIu64 " %s\n", n * each, last - first, bad < 0 ? "OK" : "BAD");
  free(ts);
  free(ns);
  free(order);
}

static void cmd_forkstorm(uint64_t seed, uint64_t order_seed, size_t forks, size_t prefault) {
  if (forks == 0 || forks > 4096 || prefault + forks > region_pages)
    LR_DIE("forkstorm: need 1..4096 forks and prefault + forks <= %zu", region_pages);
  uint32_t *order = make_order(order_seed);
  uint64_t *ns = malloc(forks * sizeof *ns);
  pid_t *pids = malloc(forks * sizeof *pids);
  if (!ns || !pids) LR_DIE("malloc: %m");
  /* Scattered present pages make the lazy state the monitor copies for each
   * child as fragmented as a restored process that has run for a while.
   * Without a monitor, writing the pattern makes the same pages present
   * (plus the children's pages, which no one else would fill). */
  for (size_t i = 0; i < prefault + (plain ? forks : 0); i++) {
    uint64_t off = (uint64_t)order[i] * BENCH_PAGE;
    if (plain)
      bench_fill(region + off, off, BENCH_PAGE, seed);
    else
      (void)*(volatile uint8_t *)(region + off);
  }
  for (size_t i = 0; i < forks; i++) {
    uint64_t t0 = bench_now_ns();
    pid_t pid = fork();
    if (pid == 0) {
      uint64_t off = (uint64_t)order[prefault + i] * BENCH_PAGE;
      _exit(bench_check(region + off, off, BENCH_PAGE, seed) < 0 ? 0 : 1);
    }
    ns[i] = bench_now_ns() - t0;
    if (pid < 0) LR_DIE("fork: %m");
    pids[i] = pid;
  }
  size_t bad = 0;
  for (size_t i = 0; i < forks; i++) {
    int status;
    if (waitpid(pids[i], &status, 0) != pids[i]) LR_DIE("waitpid: %m");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
  }
  if (check_pages(order, prefault, seed) >= 0) bad++;
  print_samples(ns, forks);
  printf("FORKS %zu %zu\n", forks, bad);
  free(pids);
  free(ns);
  free(order);
}

static void cmd_check(uint64_t seed) {
  long bad = bench_check(region, 0, region_len, seed);
  if (bad < 0)
    printf("OK\n");
  else
    printf("BAD %ld\n", bad);
}

static int dispatch(const char *line, int uffd) {
  char cmd[32];
  uint64_t seed, order;
  size_t a, b;
  if (sscanf(line, "%31s", cmd) != 1) return 1;
  if (!strcmp(cmd, "exit")) return 0;
  if (!strcmp(cmd, "closeuffd")) {
    if (uffd >= 0) close(uffd);
    printf("CLOSED\n");
  } else if (!strcmp(cmd, "lat") &&
             sscanf(line, "%*s %" SCNu64 " %" SCNu64 " %zu", &seed, &order, &a) == 3) {
    cmd_lat(seed, order, a);
  } else if (!strcmp(cmd, "threads") &&
             sscanf(line, "%*s %" SCNu64 " %" SCNu64 " %zu %zu", &seed, &order, &a, &b) == 4) {
    cmd_threads(seed, order, a, b);
  } else if (!strcmp(cmd, "forkstorm") &&
             sscanf(line, "%*s %" SCNu64 " %" SCNu64 " %zu %zu", &seed, &order, &a, &b) == 4) {
    cmd_forkstorm(seed, order, a, b);
  } else if (!strcmp(cmd, "check") && sscanf(line, "%*s %" SCNu64, &seed) == 1) {
    cmd_check(seed);
  } else {
    printf("ERR unknown command: %s", line);
  }
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  plain = argc == 3 && !strcmp(argv[2], "plain");
  int warm = argc == 3 && !strcmp(argv[2], "warm");
  if (argc != 2 && !plain && !warm) LR_DIE("usage: fault_target <MiB> [plain|warm]");
  region_len = (size_t)atol(argv[1]) << 20;
  if (region_len == 0) LR_DIE("size must be at least 1 MiB");
  region_pages = region_len / BENCH_PAGE;
  region = mmap(NULL, region_len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) LR_DIE("mmap: %m");
  if (warm) {
    for (size_t off = 0; off < region_len; off += BENCH_PAGE) region[off] = 1;
    printf("WARMED\n");
    return 0;
  }
  int uffd = plain ? -1 : (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0 && !plain) LR_DIE("userfaultfd: %m");
  printf("READY %d %" PRIuPTR " %zu\n", uffd, (uintptr_t)region, region_len);
  fflush(stdout);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    if (!dispatch(line, uffd)) break;
  }
  return 0;
}

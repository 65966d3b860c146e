/* A workload whose memory is served lazily by the test's page service.
 *
 * uffd_target <MiB>: maps <MiB> MiB of anonymous memory it never writes,
 * creates a userfaultfd itself (privileged, so kernel-mode faults are served
 * too) without UFFDIO_API, prints "READY <uffd> <address> <length>" and obeys
 * one command per line on stdin. The test takes the uffd with pidfd_getfd,
 * negotiates, registers the region and fills a page source with the
 * lr_pattern_word pattern of common.h keyed by each page's address here.
 *
 * Commands (offsets and lengths in bytes, relative to the region):
 *   closeuffd                     close our own uffd (the test holds a copy)
 *   check <seed> <off> <len>      verify the pattern          -> OK | BAD <offset>
 *   zero <off> <len>              verify zeros                -> OK | BAD <offset>
 *   kread <seed> <off>            read(2) from a pipe into a lazy page (kernel-mode fault)
 *   kwrite <seed> <off>           write(2) a lazy page into a pipe (kernel-mode fault)
 *   fork <seed> <off> <len>       a child verifies the range  -> FORKED <pid> <exit status>
 *   mremap <seed> <off> <len> <newlen>
 *                                 move (and grow) to a fresh address; verify data and zero tail
 *                                 -> MREMAP <new address> OK | BAD <offset>
 *   madvise <seed> <off> <len>    touch the first half, MADV_DONTNEED all, verify zeros
 *   munmap <off> <len>            -> OK
 *   mmapfixed <off> <len>         MAP_FIXED a fresh mapping over the range, verify zeros
 *   threads <seed> <n> <off> <len>
 *                                 n threads verify the same range at once -> OK | BAD <offset>
 *   forkstorm <seed> <nforks> <nthreads>
 *                                 nthreads verify the whole region while nforks children
 *                                 are forked one after the other, each verifying it too
 *                                 -> FORKSTORM <bad children> <bad threads>
 *   lat <seed> <off> <len>        first-touch every page in a shuffled order, timing each
 *                                 read, then verify -> LAT <p50 ns> <p90 ns> <p99 ns> OK | BAD
 *   exit
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static char *region;
static size_t region_len;
static char *spare; /* a PROT_NONE reservation for mremap destinations */

/* Verifies [p, p+len) against the pattern the pages had at `origin`. */
static long check_at(const char *p, size_t len, uint64_t seed, uintptr_t origin) {
  const uint64_t *w = (const uint64_t *)p;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != lr_pattern_word(seed, origin, i * 8)) return (long)(i * 8);
  return -1;
}

static long check_zero(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (p[i] != 0) return (long)i;
  return -1;
}

static void report(long bad) {
  if (bad < 0)
    printf("OK\n");
  else
    printf("BAD %ld\n", bad);
}

static void cmd_kread(uint64_t seed, size_t off) {
  int fds[2];
  if (pipe(fds) != 0) LR_DIE("pipe: %m");
  if (write(fds[1], "KERNELRD", 8) != 8) LR_DIE("write: %m");
  char *page = region + off;
  /* The kernel writes into a page that is not there yet: copy_to_user
   * faults in kernel mode and the uffd monitor must serve it. */
  if (read(fds[0], page + 128, 8) != 8) LR_DIE("read into lazy page: %m");
  close(fds[0]);
  close(fds[1]);
  if (memcmp(page + 128, "KERNELRD", 8) != 0) return report(128);
  long bad = check_at(page, 128, seed, (uintptr_t)page);
  if (bad < 0) {
    bad = check_at(page + 136, 4096 - 136, seed, (uintptr_t)page + 136);
    if (bad >= 0) bad += 136;
  }
  report(bad);
}

static void cmd_kwrite(uint64_t seed, size_t off) {
  int fds[2];
  if (pipe(fds) != 0) LR_DIE("pipe: %m");
  char copy[4096];
  /* The kernel reads a page that is not there yet (copy_from_user). */
  if (write(fds[1], region + off, 4096) != 4096) LR_DIE("write from lazy page: %m");
  if (read(fds[0], copy, 4096) != 4096) LR_DIE("read: %m");
  close(fds[0]);
  close(fds[1]);
  report(check_at(copy, 4096, seed, (uintptr_t)(region + off)));
}

static void cmd_fork(uint64_t seed, size_t off, size_t len) {
  pid_t pid = fork();
  if (pid < 0) LR_DIE("fork: %m");
  if (pid == 0) _exit(check_at(region + off, len, seed, (uintptr_t)(region + off)) < 0 ? 0 : 1);
  int status;
  if (waitpid(pid, &status, 0) != pid) LR_DIE("waitpid: %m");
  printf("FORKED %d %d\n", (int)pid,
         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

static void cmd_mremap(uint64_t seed, size_t off, size_t len, size_t newlen) {
  char *to = mremap(region + off, len, newlen, MREMAP_MAYMOVE | MREMAP_FIXED, spare);
  if (to == MAP_FAILED) LR_DIE("mremap: %m");
  long bad = check_at(to, len, seed, (uintptr_t)(region + off));
  if (bad < 0 && newlen > len) {
    bad = check_zero(to + len, newlen - len);
    if (bad >= 0) bad += (long)len;
  }
  if (bad < 0)
    printf("MREMAP %" PRIuPTR " OK\n", (uintptr_t)to);
  else
    printf("MREMAP %" PRIuPTR " BAD %ld\n", (uintptr_t)to, bad);
}

static void cmd_madvise(uint64_t seed, size_t off, size_t len) {
  long bad = check_at(region + off, len / 2, seed, (uintptr_t)(region + off));
  if (bad >= 0) return report(bad);
  if (madvise(region + off, len, MADV_DONTNEED) != 0) LR_DIE("madvise: %m");
  report(check_zero(region + off, len));
}

static void cmd_mmapfixed(size_t off, size_t len) {
  void *p = mmap(region + off, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0);
  if (p == MAP_FAILED) LR_DIE("mmap: %m");
  report(check_zero(region + off, len));
}

struct thread_arg {
  uint64_t seed;
  size_t off, len;
  long bad;
};

static void *thread_check(void *p) {
  struct thread_arg *a = p;
  a->bad = check_at(region + a->off, a->len, a->seed, (uintptr_t)(region + a->off));
  return NULL;
}

static void cmd_threads(uint64_t seed, size_t n, size_t off, size_t len) {
  pthread_t tids[64];
  struct thread_arg args[64];
  if (n == 0 || n > 64) LR_DIE("threads: 1..64");
  for (size_t i = 0; i < n; i++) {
    args[i] = (struct thread_arg){seed, off, len, -1};
    if (pthread_create(&tids[i], NULL, thread_check, &args[i]) != 0) LR_DIE("pthread_create");
  }
  long bad = -1;
  for (size_t i = 0; i < n; i++) {
    pthread_join(tids[i], NULL);
    if (args[i].bad >= 0) bad = args[i].bad;
  }
  report(bad);
}

static void cmd_forkstorm(uint64_t seed, size_t nforks, size_t nthreads) {
  pthread_t tids[64];
  struct thread_arg args[64];
  if (nthreads > 64 || nforks > 256) LR_DIE("forkstorm: too many");
  for (size_t i = 0; i < nthreads; i++) {
    /* Each thread starts at a different offset so faults spread out. */
    size_t start = (region_len / 4096 * i / (nthreads ? nthreads : 1)) * 4096;
    args[i] = (struct thread_arg){seed, start, region_len - start, -1};
    if (pthread_create(&tids[i], NULL, thread_check, &args[i]) != 0) LR_DIE("pthread_create");
  }
  pid_t pids[256];
  for (size_t i = 0; i < nforks; i++) {
    pids[i] = fork();
    if (pids[i] < 0) LR_DIE("fork: %m");
    if (pids[i] == 0) {
      long bad = check_at(region, region_len, seed, (uintptr_t)region);
      if (bad >= 0) {
        const uint64_t *w = (const uint64_t *)(region + bad);
        fprintf(stderr,
                "forkstorm child %zu: bad word at offset %ld: %016" PRIx64 " (want %016" PRIx64
                ")\n",
                i, bad, *w, lr_pattern_word(seed, (uintptr_t)region, (uint64_t)bad));
      }
      _exit(bad < 0 ? 0 : 1);
    }
  }
  int bad_children = 0, bad_threads = 0;
  for (size_t i = 0; i < nforks; i++) {
    int status;
    if (waitpid(pids[i], &status, 0) != pids[i]) LR_DIE("waitpid: %m");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      bad_children++;
      fprintf(stderr, "forkstorm child %zu: wait status 0x%x\n", i, status);
    }
  }
  for (size_t i = 0; i < nthreads; i++) {
    pthread_join(tids[i], NULL);
    if (args[i].bad >= 0) bad_threads++;
  }
  printf("FORKSTORM %d %d\n", bad_children, bad_threads);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void cmd_lat(uint64_t seed, size_t off, size_t len) {
  size_t pages = len / 4096;
  size_t *order = malloc(pages * sizeof *order);
  uint64_t *ns = malloc(pages * sizeof *ns);
  if (!order || !ns || pages == 0) LR_DIE("lat: bad range");
  for (size_t i = 0; i < pages; i++) order[i] = i;
  uint64_t x = seed | 1;
  for (size_t i = pages - 1; i > 0; i--) { /* Fisher-Yates with an xorshift */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t j = (size_t)(x % (i + 1));
    size_t tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  for (size_t i = 0; i < pages; i++) {
    volatile const uint64_t *w = (const uint64_t *)(region + off + order[i] * 4096);
    uint64_t t0 = now_ns();
    (void)*w;
    ns[i] = now_ns() - t0;
  }
  qsort(ns, pages, sizeof *ns, cmp_u64);
  long bad = check_at(region + off, len, seed, (uintptr_t)(region + off));
  printf("LAT %" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n", ns[pages / 2], ns[pages * 9 / 10],
         ns[pages * 99 / 100], bad < 0 ? "OK" : "BAD");
  free(order);
  free(ns);
}

static int dispatch(const char *line, int uffd) {
  char cmd[32];
  uint64_t seed;
  size_t a, b, c;
  if (sscanf(line, "%31s", cmd) != 1) return 1;
  if (!strcmp(cmd, "exit")) return 0;
  if (!strcmp(cmd, "closeuffd")) {
    close(uffd);
    printf("CLOSED\n");
  } else if (!strcmp(cmd, "check") && sscanf(line, "%*s %" SCNu64 " %zu %zu", &seed, &a, &b) == 3) {
    report(check_at(region + a, b, seed, (uintptr_t)(region + a)));
  } else if (!strcmp(cmd, "zero") && sscanf(line, "%*s %zu %zu", &a, &b) == 2) {
    report(check_zero(region + a, b));
  } else if (!strcmp(cmd, "kread") && sscanf(line, "%*s %" SCNu64 " %zu", &seed, &a) == 2) {
    cmd_kread(seed, a);
  } else if (!strcmp(cmd, "kwrite") && sscanf(line, "%*s %" SCNu64 " %zu", &seed, &a) == 2) {
    cmd_kwrite(seed, a);
  } else if (!strcmp(cmd, "fork") && sscanf(line, "%*s %" SCNu64 " %zu %zu", &seed, &a, &b) == 3) {
    cmd_fork(seed, a, b);
  } else if (!strcmp(cmd, "mremap") &&
             sscanf(line, "%*s %" SCNu64 " %zu %zu %zu", &seed, &a, &b, &c) == 4) {
    cmd_mremap(seed, a, b, c);
  } else if (!strcmp(cmd, "madvise") &&
             sscanf(line, "%*s %" SCNu64 " %zu %zu", &seed, &a, &b) == 3) {
    cmd_madvise(seed, a, b);
  } else if (!strcmp(cmd, "munmap") && sscanf(line, "%*s %zu %zu", &a, &b) == 2) {
    if (munmap(region + a, b) != 0) LR_DIE("munmap: %m");
    printf("OK\n");
  } else if (!strcmp(cmd, "mmapfixed") && sscanf(line, "%*s %zu %zu", &a, &b) == 2) {
    cmd_mmapfixed(a, b);
  } else if (!strcmp(cmd, "threads") &&
             sscanf(line, "%*s %" SCNu64 " %zu %zu %zu", &seed, &a, &b, &c) == 4) {
    cmd_threads(seed, a, b, c);
  } else if (!strcmp(cmd, "forkstorm") &&
             sscanf(line, "%*s %" SCNu64 " %zu %zu", &seed, &a, &b) == 3) {
    cmd_forkstorm(seed, a, b);
  } else if (!strcmp(cmd, "lat") && sscanf(line, "%*s %" SCNu64 " %zu %zu", &seed, &a, &b) == 3) {
    cmd_lat(seed, a, b);
  } else {
    printf("ERR unknown command: %s", line);
  }
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: uffd_target <MiB>");
  region_len = (size_t)atol(argv[1]) << 20;
  if (region_len == 0) LR_DIE("size must be at least 1 MiB");
  region = mmap(NULL, region_len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  spare = mmap(NULL, region_len * 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED || spare == MAP_FAILED) LR_DIE("mmap: %m");
  /* No O_NONBLOCK on purpose: the monitor must cope with the creator's
   * flags (they are shared with its copy and inherited by forked uffds). */
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) LR_DIE("userfaultfd: %m");
  printf("READY %d %" PRIuPTR " %zu\n", uffd, (uintptr_t)region, region_len);
  fflush(stdout);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    if (!dispatch(line, uffd)) break;
  }
  return 0;
}

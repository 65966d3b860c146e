/* Workload for the dump tests: a multi-threaded process with known state.
 *
 * Threads: main (blocked reading commands), two waiters in pthread_cond_wait
 * (futex waits), a spinner that holds known values in r12..r15 in a loop
 * that never writes memory, and a suspender in sigsuspend(2) whose temporary
 * mask ({SIGRTMIN+2, SIGURG}) differs from its own ({SIGRTMIN+2, SIGWINCH}). Signals: SIGUSR1
 * caught (SA_SIGINFO|SA_RESTART, mask {SIGUSR2}), SIGUSR2 ignored, SIGHUP caught on the alternate
 * stack; SIGRTMIN+2 blocked everywhere and queued to the process (shared pending, value 0x1234);
 * SIGRTMIN+3 blocked in waiter 1 and queued to it (private pending, value 0x5678); waiter 2 has an
 * alternate signal stack. Memory: a 256-page heap-like region full of pattern 1; a 64-page sparse
 * region whose even pages hold pattern 2 and whose page 1 was only read (the zero page), the other
 * odd pages never touched; a 16-page private mapping of <dir>/mapped whose pages 2 and 5 were
 * rewritten (pattern 4). Files in <dir>: "rw" open O_RDWR at offset 123, "log" O_WRONLY|O_APPEND
 * after 10 bytes, "mapped" O_RDONLY at offset 4096, <dir> itself O_DIRECTORY, /dev/null O_WRONLY.
 *
 * Usage: dump_threads <dir>
 * Prints: READY pid=<pid> main=<tid> spin=<tid> w1=<tid> w2=<tid> susp=<tid>
 *           dense=<addr> sparse=<addr> mapped=<addr> fdrw=<fd> fdlog=<fd>
 *           fdmap=<fd> fddir=<fd> fdnull=<fd> h1=<handler addr> h2=<addr>
 * Commands: info   THREAD tid=<tid> mask=<hex> ctid=<hex> robust=<hex>
 *                  rseq=<hex> rseqsize=<n> altsp=<hex> altsize=<n> (a line per
 *                  thread), SIGACT signo=<n> handler=<hex> flags=<hex>
 *                  mask=<hex> (USR1, USR2, HUP), then INFO END
 *           check  CHECK OK | CHECK BAD <what>  (memory patterns intact)
 *           quit   exits 0 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

#include "dump_common.h"

#define DENSE_PAGES 256
#define SPARSE_PAGES 64
#define MAPPED_PAGES 16
#define PAGE 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t started;
#define THREADS 5
static volatile pid_t tids[THREADS]; /* main, spin, w1, w2, susp */
static volatile int usr1_calls;
static char *dense, *sparse, *mapped;
static char *altstack;
static int fdmap;

/* Per-thread facts, filled by each thread about itself and printed by main. */
struct facts {
  uint64_t mask, ctid, robust, rseq, altsp;
  unsigned rseqsize;
  size_t altsize;
};
static struct facts facts[THREADS];

static void h1(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)si, (void)uc;
  usr1_calls++;
}
static void h2(int sig) { (void)sig; }

static uint64_t mask_bits(const sigset_t *s) {
  uint64_t m = 0;
  for (int sig = 1; sig <= 64; sig++)
    if (sigismember(s, sig) == 1) m |= 1ULL << (sig - 1);
  return m;
}

static void record_self(int i) {
  struct facts *f = &facts[i];
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  f->mask = mask_bits(&cur);
  int *ctid = NULL;
  if (prctl(PR_GET_TID_ADDRESS, &ctid) != 0) LR_DIE("PR_GET_TID_ADDRESS failed");
  f->ctid = (uintptr_t)ctid;
  void *head = NULL;
  size_t len = 0;
  if (syscall(SYS_get_robust_list, 0, &head, &len) != 0) LR_DIE("get_robust_list failed");
  f->robust = (uintptr_t)head;
  f->rseqsize = __rseq_size;
  f->rseq = __rseq_size ? (uintptr_t)__builtin_thread_pointer() + __rseq_offset : 0;
  stack_t ss;
  if (sigaltstack(NULL, &ss) != 0) LR_DIE("sigaltstack failed");
  f->altsp = (ss.ss_flags & SS_DISABLE) ? 0 : (uintptr_t)ss.ss_sp;
  f->altsize = (ss.ss_flags & SS_DISABLE) ? 0 : ss.ss_size;
  tids[i] = gettid();
}

static void block(int sig) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, sig);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void wait_forever(void) {
  pthread_mutex_lock(&mu);
  for (;;) pthread_cond_wait(&never, &mu);
}

static void *waiter1(void *arg) {
  (void)arg;
  block(SIGRTMIN + 3);
  record_self(2);
  pthread_barrier_wait(&started);
  wait_forever();
  return NULL;
}

static void *waiter2(void *arg) {
  (void)arg;
  block(SIGTERM);
  stack_t ss = {.ss_sp = altstack, .ss_flags = 0, .ss_size = 64 * 1024};
  if (sigaltstack(&ss, NULL) != 0) LR_DIE("sigaltstack failed");
  record_self(3);
  pthread_barrier_wait(&started);
  wait_forever();
  return NULL;
}

static void *suspender(void *arg) {
  (void)arg;
  block(SIGWINCH);
  record_self(4);
  sigset_t temp;
  sigemptyset(&temp);
  sigaddset(&temp, SIGRTMIN + 2);
  sigaddset(&temp, SIGURG);
  pthread_barrier_wait(&started);
  for (;;) sigsuspend(&temp);
  return NULL;
}

/* Known values in r12..r15 and a loop that touches no memory, so the
 * spinner's registers are predictable and memory stays still while it runs. */
static void *spinner(void *arg) {
  (void)arg;
  record_self(1);
  pthread_barrier_wait(&started);
  __asm__ volatile(
      "movabsq $0x1111222233334444, %%r12\n\t"
      "movabsq $0x5555666677778888, %%r13\n\t"
      "movabsq $0x99990000aaaabbbb, %%r14\n\t"
      "movabsq $0xccccddddeeeeffff, %%r15\n\t"
      "1: pause\n\t"
      "jmp 1b\n\t" ::
          : "r12", "r13", "r14", "r15", "memory");
  return NULL;
}

static char *map_anon(size_t pages) {
  char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) LR_DIE("mmap failed");
  return p;
}

static int open_at(const char *dir, const char *name, int flags) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, flags, 0600);
  if (fd < 0) LR_DIE("open %s failed", path);
  return fd;
}

static void setup_memory(const char *dir) {
  dense = map_anon(DENSE_PAGES);
  lr_fill(dense, DENSE_PAGES * PAGE, 1);
  sparse = map_anon(SPARSE_PAGES);
  for (int i = 0; i < SPARSE_PAGES; i += 2) lr_fill(sparse + i * PAGE, PAGE, 2);
  if (*(volatile char *)(sparse + PAGE) != 0) LR_DIE("fresh page not zero");
  int fd = open_at(dir, "mapped", O_RDWR | O_CREAT | O_TRUNC);
  char *buf = malloc(MAPPED_PAGES * PAGE);
  lr_fill(buf, MAPPED_PAGES * PAGE, 3);
  if (write(fd, buf, MAPPED_PAGES * PAGE) != MAPPED_PAGES * PAGE) LR_DIE("write failed");
  free(buf);
  mapped = mmap(NULL, MAPPED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (mapped == MAP_FAILED) LR_DIE("mmap file failed");
  close(fd);
  lr_fill(mapped + 2 * PAGE, PAGE, 4);
  lr_fill(mapped + 5 * PAGE, PAGE, 4);
}

static void setup_signals(void) {
  struct sigaction sa = {0};
  sa.sa_sigaction = h1;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);
  if (sigaction(SIGUSR1, &sa, NULL) != 0) LR_DIE("sigaction failed");
  struct sigaction ign = {0};
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGUSR2, &ign, NULL) != 0) LR_DIE("sigaction failed");
  struct sigaction hup = {0};
  hup.sa_handler = h2;
  hup.sa_flags = SA_ONSTACK;
  if (sigaction(SIGHUP, &hup, NULL) != 0) LR_DIE("sigaction failed");
  block(SIGRTMIN + 2); /* inherited by every thread */
}

static void print_sigaction(int sig) {
  struct sigaction sa;
  sigaction(sig, NULL, &sa);
  dump_say("SIGACT signo=%d handler=%#lx flags=%#lx mask=%#lx\n", sig, (unsigned long)sa.sa_handler,
           (unsigned long)sa.sa_flags, (unsigned long)mask_bits(&sa.sa_mask));
}

static void info(void) {
  for (int i = 0; i < THREADS; i++) {
    struct facts *f = &facts[i];
    dump_say(
        "THREAD tid=%d mask=%#lx ctid=%#lx robust=%#lx rseq=%#lx rseqsize=%u altsp=%#lx "
        "altsize=%zu\n",
        tids[i], (unsigned long)f->mask, (unsigned long)f->ctid, (unsigned long)f->robust,
        (unsigned long)f->rseq, f->rseqsize, (unsigned long)f->altsp, f->altsize);
  }
  print_sigaction(SIGUSR1);
  print_sigaction(SIGUSR2);
  print_sigaction(SIGHUP);
  dump_say("INFO END\n");
}

static const char *check(void) {
  if (lr_check(dense, DENSE_PAGES * PAGE, 1) >= 0) return "dense";
  for (int i = 0; i < SPARSE_PAGES; i += 2)
    if (lr_check(sparse + i * PAGE, PAGE, 2) >= 0) return "sparse";
  static char page[PAGE];
  for (int i = 0; i < MAPPED_PAGES; i++) {
    if (i == 2 || i == 5) {
      if (lr_check(mapped + i * PAGE, PAGE, 4) >= 0) return "mapped (rewritten page)";
    } else if (pread(fdmap, page, PAGE, (off_t)i * PAGE) != PAGE ||
               memcmp(page, mapped + i * PAGE, PAGE) != 0) {
      return "mapped (file page)";
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: dump_threads <dir>");
  dump_run_as_grandchild();
  setup_memory(argv[1]);
  int fdrw = open_at(argv[1], "rw", O_RDWR | O_CREAT | O_TRUNC);
  if (write(fdrw, "0123456789abcdefghij", 20) != 20 || lseek(fdrw, 123, SEEK_SET) != 123)
    LR_DIE("rw");
  int fdlog = open_at(argv[1], "log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND);
  if (write(fdlog, "log-line-\n", 10) != 10) LR_DIE("log");
  fdmap = open_at(argv[1], "mapped", O_RDONLY);
  if (lseek(fdmap, 4096, SEEK_SET) != 4096) LR_DIE("lseek");
  int fddir = open(argv[1], O_RDONLY | O_DIRECTORY);
  int fdnull = open("/dev/null", O_WRONLY);
  if (fddir < 0 || fdnull < 0) LR_DIE("open");
  setup_signals();
  altstack = malloc(64 * 1024);
  record_self(0);
  pthread_barrier_init(&started, NULL, THREADS);
  pthread_t t;
  if (pthread_create(&t, NULL, spinner, NULL) || pthread_create(&t, NULL, waiter1, NULL) ||
      pthread_create(&t, NULL, waiter2, NULL) || pthread_create(&t, NULL, suspender, NULL))
    LR_DIE("pthread_create failed");
  pthread_barrier_wait(&started);
  union sigval v1 = {.sival_int = 0x1234}, v2 = {.sival_int = 0x5678};
  if (sigqueue(getpid(), SIGRTMIN + 2, v1) != 0) LR_DIE("sigqueue failed");
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tids[2], SIGRTMIN + 3,
              &(siginfo_t){.si_signo = SIGRTMIN + 3, .si_code = SI_QUEUE, .si_value = v2}) != 0)
    LR_DIE("rt_tgsigqueueinfo failed");
  dump_say(
      "READY pid=%d main=%d spin=%d w1=%d w2=%d susp=%d dense=%#lx sparse=%#lx mapped=%#lx fdrw=%d "
      "fdlog=%d "
      "fdmap=%d fddir=%d fdnull=%d h1=%#lx h2=%#lx\n",
      getpid(), tids[0], tids[1], tids[2], tids[3], tids[4], (unsigned long)dense,
      (unsigned long)sparse, (unsigned long)mapped, fdrw, fdlog, fdmap, fddir, fdnull,
      (unsigned long)h1, (unsigned long)h2);
  char cmd[256];
  while (dump_command(cmd, sizeof cmd)) {
    if (strcmp(cmd, "info") == 0) {
      info();
    } else if (strcmp(cmd, "check") == 0) {
      const char *bad = check();
      if (bad)
        dump_say("CHECK BAD %s\n", bad);
      else
        dump_say("CHECK OK\n");
    } else if (strcmp(cmd, "quit") == 0) {
      exit(0);
    } else {
      dump_say("UNKNOWN %s\n", cmd);
    }
  }
  return 0;
}

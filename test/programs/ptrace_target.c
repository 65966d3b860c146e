/* Workload for the ptrace tests: a main thread blocked reading commands, a
 * "spin" thread that keeps known values in xmm8/xmm9 (ymm8/ymm9 with AVX) and
 * r12 inside an asm loop and checks them every iteration, and a "block"
 * thread blocked in read(2) on a pipe. Every thread can be seized, stopped,
 * injected into and detached; the program then reports whether its state
 * survived.
 *
 * Prints: READY pid=<pid> main=<tid> spin=<tid> block=<tid> avx=<0|1>
 *               buf=<addr> ro=<addr> spinstack=<addr>
 * The register patterns: byte i (0..31) of ymm8 is 0xa0 + i, of ymm9 0x40 + i
 * (only bytes 0..15 without AVX); r12 starts as 0x5eed.
 * The process Node starts only forks and relays the exit status of the
 * worker that does all the above (see run_as_grandchild).
 * Commands (one per line on stdin):
 *   check        FPU OK <iters> | FPU FAIL <ymm8 hex> <ymm9 hex> | FPU STALLED
 *   r12          R12 <hex value the spin loop last stored from r12>
 *   buf          BUF <string at buf>
 *   ro           RO <string at ro> (a read-only page)
 *   wake <text>  writes <text> to the block thread's pipe; it prints
 *                WOKE <bytes> <text> or WOKE ERR <errno>
 *   sigs         SIGS <SIGUSR1 handler calls>
 *   trap ignore  sets SIGTRAP to SIG_IGN, prints TRAP ignored
 *   trap block   blocks SIGTRAP in the main thread, prints TRAP blocked
 *   trap state   TRAP <ign|dfl|other> <blocked|unblocked> (main thread)
 *   quit         exits 0 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t pat[2][32] __attribute__((aligned(32)));
static uint8_t seen[2][32] __attribute__((aligned(32)));
static volatile long spin_iters;
static volatile int fpu_bad;
static volatile uint64_t r12_seen;
static volatile pid_t spin_tid, block_tid;
static volatile void *spin_stack_var;
static volatile int sigusr1_count;
static int use_avx;
static int wake_pipe[2];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&out_lock);
  vprintf(fmt, ap);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
  va_end(ap);
}

/* Loads the patterns into ymm8/ymm9 and r12 once, then loops: compares the
 * registers with the patterns (a tracer that corrupts them ends the loop with
 * fpu_bad set and the values it found in `seen`), stores r12 and counts. */
static void spin_avx(void) {
  __asm__ volatile(
      "vmovdqa %[p0], %%ymm8\n\t"
      "vmovdqa %[p1], %%ymm9\n\t"
      "movq $0x5eed, %%r12\n\t"
      "1:\n\t"
      "vxorps %[p0], %%ymm8, %%ymm10\n\t"
      "vptest %%ymm10, %%ymm10\n\t"
      "jnz 2f\n\t"
      "vxorps %[p1], %%ymm9, %%ymm10\n\t"
      "vptest %%ymm10, %%ymm10\n\t"
      "jnz 2f\n\t"
      "movq %%r12, %[r12]\n\t"
      "lock incq %[iters]\n\t"
      "jmp 1b\n\t"
      "2:\n\t"
      "vmovdqa %%ymm8, %[s0]\n\t"
      "vmovdqa %%ymm9, %[s1]\n\t"
      "movl $1, %[bad]\n\t"
      "vzeroupper\n\t"
      : [iters] "+m"(spin_iters), [bad] "=m"(fpu_bad), [r12] "=m"(r12_seen), [s0] "=m"(seen[0]),
        [s1] "=m"(seen[1])
      : [p0] "m"(pat[0]), [p1] "m"(pat[1])
      : "r12", "xmm8", "xmm9", "xmm10", "cc", "memory");
}

static void spin_sse(void) {
  __asm__ volatile(
      "movdqa %[p0], %%xmm8\n\t"
      "movdqa %[p1], %%xmm9\n\t"
      "movq $0x5eed, %%r12\n\t"
      "1:\n\t"
      "movdqa %%xmm8, %%xmm10\n\t"
      "pcmpeqb %[p0], %%xmm10\n\t"
      "pmovmskb %%xmm10, %%eax\n\t"
      "cmpl $0xffff, %%eax\n\t"
      "jne 2f\n\t"
      "movdqa %%xmm9, %%xmm10\n\t"
      "pcmpeqb %[p1], %%xmm10\n\t"
      "pmovmskb %%xmm10, %%eax\n\t"
      "cmpl $0xffff, %%eax\n\t"
      "jne 2f\n\t"
      "movq %%r12, %[r12]\n\t"
      "lock incq %[iters]\n\t"
      "jmp 1b\n\t"
      "2:\n\t"
      "movdqa %%xmm8, %[s0]\n\t"
      "movdqa %%xmm9, %[s1]\n\t"
      "movl $1, %[bad]\n\t"
      : [iters] "+m"(spin_iters), [bad] "=m"(fpu_bad), [r12] "=m"(r12_seen), [s0] "=m"(seen[0]),
        [s1] "=m"(seen[1])
      : [p0] "m"(pat[0]), [p1] "m"(pat[1])
      : "rax", "r12", "xmm8", "xmm9", "xmm10", "cc", "memory");
}

static void *spin_main(void *arg) {
  (void)arg;
  int local = 0;
  spin_stack_var = &local;
  spin_tid = (pid_t)syscall(SYS_gettid);
  if (use_avx)
    spin_avx();
  else
    spin_sse();
  return NULL; /* only after a mismatch: fpu_bad is set */
}

static void *block_main(void *arg) {
  (void)arg;
  block_tid = (pid_t)syscall(SYS_gettid);
  char buf[256];
  for (;;) {
    ssize_t n = read(wake_pipe[0], buf, sizeof buf - 1);
    if (n < 0) {
      say("WOKE ERR %d\n", errno);
      continue;
    }
    buf[n] = 0;
    say("WOKE %zd %s\n", n, buf);
  }
  return NULL;
}

static void on_sigusr1(int sig) {
  (void)sig;
  sigusr1_count++;
}

static void hexdump(char *out, const uint8_t *p, int n) {
  for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

/* Waits until the spin loop has run a few more iterations, so a report made
 * after a detach reflects the thread running again. */
static long advance_spin(void) {
  long start = spin_iters;
  for (int i = 0; i < 2000000 && !fpu_bad; i++) {
    if (spin_iters - start > 1000) return spin_iters;
    if (i % 1000 == 0) usleep(1000);
  }
  return -1;
}

static void cmd_check(void) {
  long iters = advance_spin();
  int width = use_avx ? 32 : 16;
  if (fpu_bad) {
    char a[65], b[65];
    hexdump(a, seen[0], width);
    hexdump(b, seen[1], width);
    say("FPU FAIL %s %s\n", a, b);
  } else if (iters < 0) {
    say("FPU STALLED\n");
  } else {
    say("FPU OK %ld\n", iters);
  }
}

/* libuv waits for each child Node spawned with waitpid(pid), and the kernel
 * lets any thread of a tracer's process collect the ptrace stops of its
 * tracees: Node would take (and mistake for an exit) the stops of a traced
 * process it spawned itself. So the traced worker is a grandchild; the child
 * only relays its exit, and the worker dies with it (PR_SET_PDEATHSIG). */
static void run_as_grandchild(void) {
  pid_t parent = getpid();
  pid_t worker = fork();
  if (worker < 0) LR_DIE("fork failed");
  if (worker == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) LR_DIE("prctl failed");
    if (getppid() != parent) _exit(99);
    return;
  }
  int status;
  while (waitpid(worker, &status, 0) < 0)
    if (errno != EINTR) LR_DIE("waitpid failed");
  if (WIFEXITED(status)) exit(WEXITSTATUS(status));
  signal(WTERMSIG(status), SIG_DFL);
  raise(WTERMSIG(status));
  exit(128 + WTERMSIG(status));
}

int main(void) {
  run_as_grandchild();
  for (int i = 0; i < 32; i++) {
    pat[0][i] = (uint8_t)(0xa0 + i);
    pat[1][i] = (uint8_t)(0x40 + i);
  }
  __builtin_cpu_init();
  use_avx = __builtin_cpu_supports("avx") != 0;
  if (pipe(wake_pipe) != 0) LR_DIE("pipe failed");
  signal(SIGUSR1, on_sigusr1);

  long page = sysconf(_SC_PAGESIZE);
  char *buf = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *ro = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED || ro == MAP_FAILED) LR_DIE("mmap failed");
  strcpy(buf, "ptrace-initial");
  strcpy(ro, "ptrace-readonly");
  if (mprotect(ro, page, PROT_READ) != 0) LR_DIE("mprotect failed");

  pthread_t spin, block;
  if (pthread_create(&spin, NULL, spin_main, NULL) != 0) LR_DIE("pthread_create failed");
  if (pthread_create(&block, NULL, block_main, NULL) != 0) LR_DIE("pthread_create failed");
  /* Report only once both threads sit where the tests expect them. */
  while (spin_iters == 0 || block_tid == 0) usleep(1000);
  usleep(10000);

  say("READY pid=%d main=%d spin=%d block=%d avx=%d buf=%p ro=%p spinstack=%p\n", getpid(),
      (int)syscall(SYS_gettid), spin_tid, block_tid, use_avx, (void *)buf, (void *)ro,
      (void *)spin_stack_var);

  char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (strcmp(line, "check") == 0) {
      cmd_check();
    } else if (strcmp(line, "r12") == 0) {
      advance_spin();
      say("R12 %llx\n", (unsigned long long)r12_seen);
    } else if (strcmp(line, "buf") == 0) {
      say("BUF %s\n", buf);
    } else if (strcmp(line, "ro") == 0) {
      say("RO %s\n", ro);
    } else if (strncmp(line, "wake ", 5) == 0) {
      size_t n = strlen(line + 5);
      if (write(wake_pipe[1], line + 5, n) != (ssize_t)n) LR_DIE("write failed");
    } else if (strcmp(line, "sigs") == 0) {
      say("SIGS %d\n", sigusr1_count);
    } else if (strcmp(line, "trap ignore") == 0) {
      signal(SIGTRAP, SIG_IGN);
      say("TRAP ignored\n");
    } else if (strcmp(line, "trap block") == 0) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTRAP);
      pthread_sigmask(SIG_BLOCK, &set, NULL);
      say("TRAP blocked\n");
    } else if (strcmp(line, "trap state") == 0) {
      struct sigaction sa;
      sigset_t cur;
      sigaction(SIGTRAP, NULL, &sa);
      pthread_sigmask(SIG_BLOCK, NULL, &cur);
      const char *disp = sa.sa_handler == SIG_IGN   ? "ign"
                         : sa.sa_handler == SIG_DFL ? "dfl"
                                                    : "other";
      say("TRAP %s %s\n", disp, sigismember(&cur, SIGTRAP) ? "blocked" : "unblocked");
    } else if (strcmp(line, "quit") == 0) {
      return 0;
    } else {
      say("ERR unknown command\n");
    }
  }
  return 0;
}

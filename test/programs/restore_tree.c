/* A process tree for the restore tests: a session leader R with children A
 * (its group) and B (a group of its own) and B's child C. R buffers data in
 * a pipe A reads only later, B in a pipe C reads later. R has a file open at
 * an offset, an O_APPEND file, a cwd, a umask, a lowered RLIMIT_NOFILE, an
 * alternate signal stack, and two real-time signals pending (one
 * process-wide, one for its thread) while blocked. Everyone reports to
 * REPORT (O_APPEND): "UP <role> pid ppid pgid sid", and once R gets SIGUSR1
 * (its handler was installed before the dump) each role checks its state and
 * reports "<role> OK ..." or "<role> FAIL why". R also has a child Z that
 * exited with status 7 and is not reaped before the trigger ("ZOMBIE <pid>";
 * after the trigger R reaps it: "R ZOMBIE OK"). R ends with "DONE <fails>".
 * Usage: restore_tree REPORT WORKDIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static int report = -1;
static volatile sig_atomic_t woken;
static volatile int rt_shared_value, rt_shared_code, rt_thread_value, rt_thread_code;

static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (write(report, line, (size_t)n) != n) _exit(98);
}

static void on_usr1(int sig) {
  (void)sig;
  woken = 1;
}

static void on_rt(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  if (sig == SIGRTMIN + 2) {
    rt_shared_value = si->si_value.sival_int;
    rt_shared_code = si->si_code;
  } else {
    rt_thread_value = si->si_value.sival_int;
    rt_thread_code = si->si_code;
  }
}

static void up(const char *role) {
  say("UP %s %d %d %d %d\n", role, getpid(), getppid(), getpgid(0), getsid(0));
}

/* Blocks until SIGUSR1 (re-issued after a restore: -ERESTARTNOHAND). */
static void wait_usr1(void) {
  sigset_t wait_mask;
  sigprocmask(SIG_BLOCK, NULL, &wait_mask);
  sigdelset(&wait_mask, SIGUSR1);
  while (!woken) sigsuspend(&wait_mask);
}

static int read_pipe(int fd, const char *want, const char *role) {
  char buf[64] = {0};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int ok = n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
  say("%s PIPE %s %s\n", role, ok ? "OK" : "FAIL", buf);
  return ok;
}

static int ids_line(const char *role) {
  say("%s IDS %d %d %d %d\n", role, getpid(), getppid(), getpgid(0), getsid(0));
  return 1;
}

static int reap(pid_t child, const char *role) {
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  say("%s CHILD %d %s\n", role, child, ok ? "OK" : "FAIL");
  return ok;
}

static int run_c(int in) {
  up("C");
  wait_usr1();
  int ok = read_pipe(in, "from-B", "C") & ids_line("C");
  return ok ? 0 : 1;
}

static int run_b(void) {
  setpgid(0, 0);
  int p[2];
  if (pipe(p) != 0) LR_DIE("pipe");
  pid_t c = fork();
  if (c == 0) {
    close(p[1]);
    _exit(run_c(p[0]));
  }
  close(p[0]);
  if (write(p[1], "from-B", 6) != 6) LR_DIE("write");
  up("B");
  wait_usr1();
  kill(c, SIGUSR1);
  int ok = ids_line("B") & reap(c, "B");
  return ok ? 0 : 1;
}

static int run_a(int in) {
  up("A");
  wait_usr1();
  int ok = read_pipe(in, "hello-pipe-data", "A") & ids_line("A");
  return ok ? 0 : 1;
}

static int check_root(int fa, int fb, const char *workdir) {
  int fails = 0;
  char cwd[512];
  if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, workdir) != 0) {
    say("R FAIL cwd %s\n", cwd);
    fails++;
  }
  mode_t um = umask(0);
  if (um != 027) {
    say("R FAIL umask %o\n", (unsigned)um);
    fails++;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur != 300) {
    say("R FAIL nofile %ld\n", (long)rl.rlim_cur);
    fails++;
  }
  off_t pos = lseek(fa, 0, SEEK_CUR);
  if (pos != 100 || write(fa, "Z", 1) != 1) {
    say("R FAIL file-a offset %ld\n", (long)pos);
    fails++;
  }
  if (!(fcntl(fb, F_GETFL) & O_APPEND) || (fcntl(fb, F_GETFD) & FD_CLOEXEC) == 0) {
    say("R FAIL file-b flags\n");
    fails++;
  }
  stack_t ss;
  sigaltstack(NULL, &ss);
  if (ss.ss_flags != 0 || ss.ss_size != 65536) {
    say("R FAIL altstack %d %ld\n", ss.ss_flags, (long)ss.ss_size);
    fails++;
  }
  /* The pending real-time signals arrive, with their siginfo, once unblocked. */
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN + 2);
  sigaddset(&rt, SIGRTMIN + 3);
  sigprocmask(SIG_UNBLOCK, &rt, NULL);
  if (rt_shared_value != 4242 || rt_shared_code != SI_QUEUE || rt_thread_value != 77 ||
      rt_thread_code != SI_QUEUE) {
    say("R FAIL signals %d %d %d %d\n", rt_shared_value, rt_shared_code, rt_thread_value,
        rt_thread_code);
    fails++;
  }
  return fails;
}

int main(int argc, char **argv) {
  if (argc != 3) LR_DIE("usage: restore_tree REPORT WORKDIR");
  report = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (report < 0 || setsid() < 0) LR_DIE("report/setsid");
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGRTMIN + 2);
  sigaddset(&block, SIGRTMIN + 3);
  sigprocmask(SIG_BLOCK, &block, NULL);

  int pa[2];
  if (pipe(pa) != 0) LR_DIE("pipe");
  pid_t a = fork();
  if (a == 0) {
    close(pa[1]);
    _exit(run_a(pa[0]));
  }
  close(pa[0]);
  if (write(pa[1], "hello-pipe-data", 15) != 15) LR_DIE("write");
  pid_t b = fork();
  if (b == 0) _exit(run_b());
  pid_t z = fork();
  if (z == 0) _exit(7);
  siginfo_t zi;
  while (waitid(P_PID, (id_t)z, &zi, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  say("ZOMBIE %d\n", z);

  if (chdir(argv[2]) != 0) LR_DIE("chdir");
  umask(027);
  struct rlimit rl = {300, 4096};
  setrlimit(RLIMIT_NOFILE, &rl);
  int fa = open("file-a", O_RDWR | O_CREAT | O_TRUNC, 0644);
  int fb = open("file-b", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  char buf[100];
  memset(buf, 'a', sizeof buf);
  if (fa < 0 || fb < 0 || write(fa, buf, 100) != 100 || write(fa, buf, 50) != 50) LR_DIE("files");
  lseek(fa, 100, SEEK_SET);
  static char altstack[65536];
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  sigaltstack(&ss, NULL);
  struct sigaction rsa = {0};
  rsa.sa_sigaction = on_rt;
  rsa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGRTMIN + 2, &rsa, NULL);
  sigaction(SIGRTMIN + 3, &rsa, NULL);
  sigqueue(getpid(), SIGRTMIN + 2, (union sigval){.sival_int = 4242});
  siginfo_t si = {0};
  si.si_signo = SIGRTMIN + 3;
  si.si_code = SI_QUEUE;
  si.si_pid = getpid();
  si.si_uid = getuid();
  si.si_value.sival_int = 77;
  syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 3, &si);
  up("R");
  wait_usr1();

  int fails = check_root(fa, fb, argv[2]);
  ids_line("R");
  kill(a, SIGUSR1);
  kill(b, SIGUSR1);
  fails += !reap(a, "R");
  fails += !reap(b, "R");
  int zs = 0;
  int zok = waitpid(z, &zs, WNOHANG) == z && WIFEXITED(zs) && WEXITSTATUS(zs) == 7;
  say("R ZOMBIE %s %d\n", zok ? "OK" : "FAIL", zs);
  fails += !zok;
  say("DONE %d\n", fails);
  return fails == 0 ? 0 : 1;
}

/* A process with known, varied state for the /proc reader tests
 * (test/proc.test.ts): threads, every common kind of mapping and file
 * descriptor, signal masks, umask, comm, an rlimit and a forked child.
 *
 * Usage: proc_target <scratch-dir>
 * Prints one line "READY key=value ..." describing what it set up, then reads
 * commands on stdin:
 *   zombie  fork a child that exits at once and is never reaped;
 *           prints "ZOMBIE pid=<pid>"
 *   exit    kill the child, reap every child, exit(0) (also on EOF)
 * Every address is printed in hex, every mask as 16 hex digits. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define PAGE 4096UL
#define ANON_PAGES 16
#define FILE_PAGES 4

static pthread_barrier_t started;
static pid_t worker_tids[2];

static void on_usr2(int sig) { (void)sig; }

/* Thread 0 blocks SIGHUP on top of the inherited mask so the per-thread
 * status files differ; both then sleep until the process exits. */
static void *worker(void *arg) {
  long idx = (long)arg;
  worker_tids[idx] = (pid_t)syscall(SYS_gettid);
  if (idx == 0) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
  }
  pthread_barrier_wait(&started);
  for (;;) pause();
  return NULL;
}

static uint64_t mask_of(const sigset_t *s) {
  uint64_t m = 0;
  for (int sig = 1; sig <= 64; sig++)
    if (sigismember(s, sig) == 1) m |= 1ULL << (sig - 1);
  return m;
}

/* Ignored and caught dispositions as the kernel reports them in SigIgn/SigCgt. */
static void disposition_masks(uint64_t *ign, uint64_t *cgt) {
  *ign = *cgt = 0;
  for (int sig = 1; sig <= 64; sig++) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0) continue;
    if (sa.sa_handler == SIG_IGN)
      *ign |= 1ULL << (sig - 1);
    else if (sa.sa_handler != SIG_DFL)
      *cgt |= 1ULL << (sig - 1);
  }
}

static int must(int r, const char *what) {
  if (r < 0) LR_DIE("%s: %s", what, strerror(errno));
  return r;
}

static char *map_anon_between_guards(void) {
  /* PROT_NONE guard pages on both sides keep the kernel from merging the
   * region with a neighbouring anonymous VMA, so it is exactly one VMA. */
  char *base = mmap(NULL, (ANON_PAGES + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) LR_DIE("mmap anon: %s", strerror(errno));
  char *anon = base + PAGE;
  must(mprotect(anon, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE), "mprotect");
  /* No transparent huge pages (of any size): one fault, one 4 KiB page. */
  must(madvise(anon, ANON_PAGES * PAGE, MADV_NOHUGEPAGE), "madvise");
  return anon;
}

static char *map_private_file(const char *dir, char *path, size_t pathlen) {
  snprintf(path, pathlen, "%s/mapped.bin", dir);
  int fd = must(open(path, O_RDWR | O_CREAT | O_TRUNC, 0644), "open mapped.bin");
  static char page[PAGE];
  for (int i = 0; i < FILE_PAGES; i++) {
    memset(page, 'A' + i, sizeof page);
    if (write(fd, page, sizeof page) != (ssize_t)sizeof page) LR_DIE("write mapped.bin");
  }
  char *p = mmap(NULL, FILE_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) LR_DIE("mmap file: %s", strerror(errno));
  close(fd);
  volatile char sink = 0;
  for (int i = 0; i < FILE_PAGES; i++) sink ^= p[i * PAGE]; /* page-cache pages, mapped */
  (void)sink;
  p[2 * PAGE] = 'z'; /* copy-on-write: page 2 becomes a private anonymous page */
  return p;
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: proc_target <scratch-dir>");
  const char *dir = argv[1];
  setvbuf(stdout, NULL, _IOLBF, 0);
  umask(027);

  struct rlimit rl;
  must(getrlimit(RLIMIT_NOFILE, &rl), "getrlimit");
  rl.rlim_cur = 777;
  must(setrlimit(RLIMIT_NOFILE, &rl), "setrlimit");

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_usr2;
  must(sigaction(SIGUSR2, &sa, NULL), "sigaction");
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &block, NULL);

  char *heap = malloc(100000); /* below the mmap threshold: lives in [heap] */
  if (!heap) LR_DIE("malloc");
  memset(heap, 0x5a, 100000);

  char *anon = map_anon_between_guards();
  /* Pages 0, 3 and 5 are written before the fork (then shared copy-on-write
   * with the child, so not exclusively mapped); page 15 after it (exclusive). */
  static const int touched_before_fork[] = {0, 3, 5};
  for (size_t i = 0; i < sizeof touched_before_fork / sizeof *touched_before_fork; i++)
    lr_fill(anon + touched_before_fork[i] * PAGE, PAGE, 7);

  char *shared = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) LR_DIE("mmap shared: %s", strerror(errno));
  shared[PAGE] = 1;

  int memfd = must(memfd_create("lr proc memfd", 0), "memfd_create");
  must(ftruncate(memfd, 2 * PAGE), "ftruncate");
  char *mfd = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (mfd == MAP_FAILED) LR_DIE("mmap memfd: %s", strerror(errno));
  mfd[0] = 1;

  char mapped_path[4096];
  char *filemap = map_private_file(dir, mapped_path, sizeof mapped_path);

  char path[4096];
  snprintf(path, sizeof path, "%s/append.log", dir);
  int appendfd = must(open(path, O_WRONLY | O_CREAT | O_APPEND, 0600), "open append.log");
  char buf[123];
  memset(buf, 'x', sizeof buf);
  if (write(appendfd, buf, sizeof buf) != (ssize_t)sizeof buf) LR_DIE("write append.log");

  snprintf(path, sizeof path, "%s/deleted.bin", dir);
  int deletedfd = must(open(path, O_RDWR | O_CREAT, 0600), "open deleted.bin");
  must(unlink(path), "unlink");

  snprintf(path, sizeof path, "%s/fifo", dir);
  must(mkfifo(path, 0600), "mkfifo");
  int fifofd = must(open(path, O_RDWR), "open fifo"); /* O_RDWR never blocks on Linux */

  int dirfd = must(open(dir, O_RDONLY | O_DIRECTORY), "open dir");
  int pipefd[2];
  must(pipe(pipefd), "pipe");
  int nullfd = must(open("/dev/null", O_RDWR), "open /dev/null");
  int sv[2];
  must(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
  int efd = must(eventfd(5, EFD_CLOEXEC), "eventfd");
  int epfd = must(epoll_create1(0), "epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
  must(epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev), "epoll_ctl");
  sigset_t sfdmask;
  sigemptyset(&sfdmask);
  sigaddset(&sfdmask, SIGUSR1);
  int sfd = must(signalfd(-1, &sfdmask, 0), "signalfd");
  int tfd = must(timerfd_create(CLOCK_MONOTONIC, 0), "timerfd_create");
  int ifd = must(inotify_init1(0), "inotify_init1");
  must(inotify_add_watch(ifd, dir, IN_CREATE), "inotify_add_watch");

  pid_t child = must(fork(), "fork");
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(0);
    for (;;) pause();
  }
  int pidfd = must((int)syscall(SYS_pidfd_open, child, 0), "pidfd_open");
  /* Needs privilege (vm.unprivileged_userfaultfd=0): -1 when not allowed. */
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
  lr_fill(anon + 15 * PAGE, PAGE, 7);

  pthread_barrier_init(&started, NULL, 3);
  pthread_t th[2];
  for (long i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, worker, (void *)i) != 0) LR_DIE("pthread_create");
  pthread_barrier_wait(&started);
  pthread_setname_np(th[0], "lr worker 0");
  pthread_setname_np(th[1], "lr worker 1");
  /* The main thread's name (the process comm) has a space and a ')' so that
   * /proc/<pid>/stat must be split at the last ')'. */
  prctl(PR_SET_NAME, "a) b");

  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, NULL, &cur);
  uint64_t ign, cgt;
  disposition_masks(&ign, &cgt);

  printf(
      "READY pid=%d tid1=%d tid2=%d child=%d heap=%lx anon=%lx anon_pages=%d touched=0,3,5,15 "
      "exclusive=15"
      " shared=%lx memfd_map=%lx filemap=%lx file_pages=%d cow=2 mapped_path=%s"
      " fd_append=%d fd_deleted=%d fd_fifo=%d fd_dir=%d fd_pipe_r=%d fd_pipe_w=%d fd_null=%d"
      " fd_sock0=%d fd_sock1=%d fd_eventfd=%d fd_epoll=%d fd_signalfd=%d fd_timerfd=%d "
      "fd_inotify=%d"
      " fd_memfd=%d fd_pidfd=%d fd_uffd=%d sigblk=%016llx sigign=%016llx sigcgt=%016llx "
      "nofile_hard=%llu\n",
      getpid(), worker_tids[0], worker_tids[1], child, (unsigned long)heap, (unsigned long)anon,
      ANON_PAGES, (unsigned long)shared, (unsigned long)mfd, (unsigned long)filemap, FILE_PAGES,
      mapped_path, appendfd, deletedfd, fifofd, dirfd, pipefd[0], pipefd[1], nullfd, sv[0], sv[1],
      efd, epfd, sfd, tfd, ifd, memfd, pidfd, uffd, (unsigned long long)mask_of(&cur),
      (unsigned long long)ign, (unsigned long long)cgt, (unsigned long long)rl.rlim_max);

  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "zombie", 6) == 0) {
      pid_t z = must(fork(), "fork");
      if (z == 0) _exit(0);
      /* Wait until it is a zombie (waitid with WNOWAIT leaves it unreaped). */
      siginfo_t si;
      must(waitid(P_PID, z, &si, WEXITED | WNOWAIT), "waitid");
      printf("ZOMBIE pid=%d\n", z);
    } else if (strncmp(line, "exit", 4) == 0) {
      break;
    }
  }
  /* Leave nothing behind: kill the child and reap it and any zombie. */
  kill(child, SIGKILL);
  while (wait(NULL) > 0 || errno == EINTR) continue;
  return 0;
}

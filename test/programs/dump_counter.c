/* Workload for the dump refusal tests: a process that keeps counting, with a
 * memory region whose checksum it can report, so a test can tell that a dump
 * which refused it left it running and unchanged.
 *
 * A second thread increments a counter every millisecond; 64 pages hold
 * pattern 5. With the argument "socket" it also holds a socketpair (fds
 * reported), and with "memfd" it maps 4 pages of a memfd sealed against
 * resizing (whose fd it closes, mapping reported): both of which a dump must
 * refuse. With "trapsuspend" a
 * third thread waits in sigsuspend(2) with SIGTRAP blocked, which a dump can
 * only find out once the process is frozen (its injected syscalls trap with
 * SIGTRAP), so it must release the process again.
 *
 * With "sysv" it attaches 4 pages of System V shared memory (reported as
 * memfd=<addr>), which a dump refuses too.
 * Usage: dump_counter [socket|memfd|sysv|trapsuspend]
 * Prints: READY pid=<pid> [sock=<fd>] [memfd=<addr>]
 * Commands: count  COUNT <n>
 *           sum    SUM <hex checksum of the region>
 *           quit   exits 0 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <time.h>

#include "dump_common.h"

#define PAGES 64
#define PAGE 4096

static volatile uint64_t counter;
static char *region;

static void *count(void *arg) {
  (void)arg;
  struct timespec ms = {0, 1000000};
  for (;;) {
    counter++;
    nanosleep(&ms, NULL);
  }
  return NULL;
}

static void *trap_suspend(void *arg) {
  (void)arg;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTRAP);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  for (;;) sigsuspend(&s);
  return NULL;
}

static uint64_t checksum(void) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < PAGES * PAGE; i++) h = (h ^ (uint8_t)region[i]) * 0x100000001b3ULL;
  return h;
}

int main(int argc, char **argv) {
  int want_socket = argc > 1 && strcmp(argv[1], "socket") == 0;
  int want_memfd = argc > 1 && strcmp(argv[1], "memfd") == 0;
  dump_run_as_grandchild();
  region = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) LR_DIE("mmap failed");
  lr_fill(region, PAGES * PAGE, 5);
  int sv[2] = {-1, -1};
  if (want_socket && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) LR_DIE("socketpair failed");
  pthread_t t;
  if (pthread_create(&t, NULL, count, NULL) != 0) LR_DIE("pthread_create failed");
  if (argc > 1 && strcmp(argv[1], "trapsuspend") == 0 &&
      pthread_create(&t, NULL, trap_suspend, NULL) != 0)
    LR_DIE("pthread_create failed");
  char *mem = NULL;
  if (want_memfd) {
    int fd = memfd_create("dump-counter", MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, 4 * PAGE) != 0) LR_DIE("memfd failed");
    /* Sealed against resizing: restore cannot put seals back, so the dump refuses it. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) != 0) LR_DIE("F_ADD_SEALS failed");
    mem = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) LR_DIE("mmap memfd failed");
    close(fd);
    mem[0] = 1;
  }
  if (argc > 1 && strcmp(argv[1], "sysvhuge") == 0) {
    /* System V shared memory in one 2 MiB huge page (SHM_HUGETLB), removed at once: it lives while
     * attached. */
    int id = shmget(IPC_PRIVATE, 2 << 20, IPC_CREAT | SHM_HUGETLB | 0600);
    if (id < 0) LR_DIE("shmget failed");
    mem = shmat(id, NULL, 0);
    if (mem == (void *)-1) LR_DIE("shmat failed");
    shmctl(id, IPC_RMID, NULL);
    mem[0] = 1;
    want_memfd = 1; /* reported the same way */
  }
  if (want_socket)
    dump_say("READY pid=%d sock=%d\n", getpid(), sv[0]);
  else if (want_memfd)
    dump_say("READY pid=%d memfd=%#lx\n", getpid(), (unsigned long)mem);
  else
    dump_say("READY pid=%d\n", getpid());
  char cmd[256];
  while (dump_command(cmd, sizeof cmd)) {
    if (strcmp(cmd, "count") == 0)
      dump_say("COUNT %lu\n", (unsigned long)counter);
    else if (strcmp(cmd, "sum") == 0)
      dump_say("SUM %016lx\n", (unsigned long)checksum());
    else if (strcmp(cmd, "quit") == 0)
      exit(0);
  }
  return 0;
}

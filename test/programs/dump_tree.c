/* Workload for the dump tests: a forked tree sharing a pipe and memory.
 *
 * The parent fills a 128-page private region with pattern 8 and the first 20
 * of 32 pages of a MAP_SHARED|MAP_ANONYMOUS region with pattern 7, creates a
 * pipe and writes "unread-data-0123456789" into it (nobody reads it), then
 * forks <n> children (default 2). Every process keeps both pipe ends and both
 * regions; the children only block in pause(). The forked children's private
 * regions are byte-identical to the parent's.
 *
 * With "zombie" as second argument one more child exits at once with status 7
 * and is never reaped.
 *
 * Usage: dump_tree [n [zombie]]
 * Prints: READY pid=<pid> children=<pid>,<pid>,... private=<addr>
 *           shared=<addr> piperd=<fd> pipewr=<fd> [zombie=<pid>]
 * Commands: check  CHECK OK | CHECK BAD <what>   (the parent's memory)
 *           quit   exits 0 (the children die with it: PR_SET_PDEATHSIG) */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "dump_common.h"

#define PRIVATE_PAGES 128
#define SHARED_PAGES 32
#define SHARED_FILLED 20
#define PAGE 4096
#define PIPE_DATA "unread-data-0123456789"

static char *map(size_t pages, int shared) {
  char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                 (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) LR_DIE("mmap failed");
  return p;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  if (n < 0 || n > 16) LR_DIE("usage: dump_tree [0..16]");
  dump_run_as_grandchild();
  char *priv = map(PRIVATE_PAGES, 0), *shared = map(SHARED_PAGES, 1);
  lr_fill(priv, PRIVATE_PAGES * PAGE, 8);
  lr_fill(shared, SHARED_FILLED * PAGE, 7);
  int p[2];
  if (pipe(p) != 0) LR_DIE("pipe failed");
  if (write(p[1], PIPE_DATA, strlen(PIPE_DATA)) != (ssize_t)strlen(PIPE_DATA))
    LR_DIE("write failed");
  pid_t parent = getpid();
  char list[16 * 12] = "";
  for (int i = 0; i < n; i++) {
    pid_t c = fork();
    if (c < 0) LR_DIE("fork failed");
    if (c == 0) {
      if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(99);
      for (;;) pause();
    }
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", c);
  }
  pid_t zombie = 0;
  if (argc > 2 && strcmp(argv[2], "zombie") == 0) {
    zombie = fork();
    if (zombie < 0) LR_DIE("fork failed");
    if (zombie == 0) _exit(7);
    siginfo_t si;
    if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) != 0)
      LR_DIE("waitid failed"); /* exited, not reaped */
  }
  dump_say("READY pid=%d children=%s private=%#lx shared=%#lx piperd=%d pipewr=%d zombie=%d\n",
           getpid(), list, (unsigned long)priv, (unsigned long)shared, p[0], p[1], zombie);
  char cmd[256];
  while (dump_command(cmd, sizeof cmd)) {
    if (strcmp(cmd, "check") == 0) {
      if (lr_check(priv, PRIVATE_PAGES * PAGE, 8) >= 0)
        dump_say("CHECK BAD private\n");
      else if (lr_check(shared, SHARED_FILLED * PAGE, 7) >= 0)
        dump_say("CHECK BAD shared\n");
      else
        dump_say("CHECK OK\n");
    } else if (strcmp(cmd, "quit") == 0) {
      exit(0);
    }
  }
  return 0;
}

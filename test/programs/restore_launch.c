/* Starts a workload for the restore tests as a grandchild of the test
 * process (dump refuses a child of its own caller), with its stdin on
 * /dev/null and its stdout and stderr on OUTFILE (a plain file: the restored
 * program must go on writing at the right offset). Prints "PID <pid>" on its
 * own stdout, then reaps the workload (a dump kills it) and prints
 * "EXIT <wait status>", so the test knows when the pid is free again.
 * Usage: restore_launch OUTFILE PROGRAM [ARGS...] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
  if (argc < 3) LR_DIE("usage: restore_launch OUTFILE PROGRAM [ARGS...]");
  pid_t pid = fork();
  if (pid < 0) LR_DIE("fork failed");
  if (pid == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) LR_DIE("cannot open /dev/null or %s", argv[1]);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    close(in);
    close(out);
    /* Nothing else of ours leaks into the workload (a dump would record it). */
    close_range(3, ~0U, 0);
    execvp(argv[2], argv + 2);
    LR_DIE("cannot exec %s", argv[2]);
  }
  printf("PID %d\n", pid);
  fflush(stdout);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  printf("EXIT %d\n", status);
  fflush(stdout);
  return 0;
}

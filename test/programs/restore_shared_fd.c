/* Writes numbered lines alternately through stdout and stderr, which
 * restore_launch points at one open file description (dup2 of one open): the
 * two fds share one offset, so the lines follow each other in the file. A
 * restore that gave each fd a description of its own would make the two
 * streams overwrite each other. Runs until the file GO exists, then prints
 * DONE. Usage: restore_shared_fd GO */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void say(int fd, const char *what, long n) {
  char line[64];
  int len = snprintf(line, sizeof line, "%s %ld\n", what, n);
  if (write(fd, line, (size_t)len) != len) LR_DIE("write to fd %d failed", fd);
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: restore_shared_fd GO");
  say(1, "READY", getpid());
  struct timespec tick = {0, 20 * 1000 * 1000};
  for (long n = 1;; n++) {
    say(1, "out", n);
    say(2, "err", n);
    if (access(argv[1], F_OK) == 0) break;
    nanosleep(&tick, NULL);
  }
  say(1, "DONE", 0);
  return 0;
}

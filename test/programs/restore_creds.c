/* A workload for the restore tests that runs with credentials of its own:
 * supplementary groups, distinct real/effective/saved uids and gids, no
 * capabilities, and no_new_privs. It prints "IDS <...>" once set up, then
 * waits for SIGUSR1 and prints "IDS <...>" again and "DONE".
 * Usage: restore_creds */
#define _GNU_SOURCE
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common.h"

static volatile sig_atomic_t woken;

static void on_usr1(int sig) {
  (void)sig;
  woken = 1;
}

/* The identity as the kernel reports it, including the capability sets. */
static void ids(void) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  gid_t groups[16];
  getresuid(&ru, &eu, &su);
  getresgid(&rg, &eg, &sg);
  int n = getgroups(16, groups);
  char caps[256] = "";
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "Cap", 3) == 0 || strncmp(line, "NoNewPrivs", 10) == 0) {
      line[strcspn(line, "\n")] = ' ';
      strncat(caps, line + strcspn(line, "\t") + 1, sizeof caps - strlen(caps) - 1);
    }
  }
  if (f) fclose(f);
  lr_say("IDS %u %u %u %u %u %u %d:%u:%u %s\n", ru, eu, su, rg, eg, sg, n, n > 0 ? groups[0] : 0,
         n > 1 ? groups[1] : 0, caps);
}

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  gid_t groups[2] = {1234, 5678};
  if (setgroups(2, groups) != 0 || setresgid(2000, 2001, 2002) != 0 ||
      setresuid(3000, 3001, 3002) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    LR_DIE("cannot set credentials (run as root)");
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  ids();
  while (!woken) pause();
  ids();
  lr_say("DONE\n");
  return 0;
}

/* Helpers shared by the dump_* workload programs: running as a grandchild of
 * the process that spawned us (a tracer in that process must not trace its
 * own children, see daemon/tracer.ts), and line output from several threads. */
#pragma once
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static pthread_mutex_t dump_out_lock = PTHREAD_MUTEX_INITIALIZER;

static void dump_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void dump_say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&dump_out_lock);
  vprintf(fmt, ap);
  fflush(stdout);
  pthread_mutex_unlock(&dump_out_lock);
  va_end(ap);
}

/* Copies what is readable on `from` to `to`; returns 0 at EOF or error. */
static int dump_pump(int from, int to) {
  char buf[65536];
  ssize_t n = read(from, buf, sizeof buf);
  if (n <= 0) return n < 0 && errno == EAGAIN;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return 0;
    off += w;
  }
  return 1;
}

/* The relay: forwards its stdin to the worker and the worker's stdout and
 * stderr back, until the worker is gone, then exits with its status (a signal
 * death is re-raised). */
static void dump_relay(pid_t worker, int in_w, int out_r, int err_r) {
  struct pollfd fds[3] = {{0, POLLIN, 0}, {out_r, POLLIN, 0}, {err_r, POLLIN, 0}};
  int status;
  for (;;) {
    pid_t r = waitpid(worker, &status, WNOHANG);
    if (r < 0 && errno != EINTR) LR_DIE("waitpid failed");
    int n = poll(fds, 3, r == worker ? 0 : 20);
    if (n < 0 && errno != EINTR) LR_DIE("poll failed");
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP)) && !dump_pump(0, in_w)) {
      close(in_w);
      fds[0].fd = -1;
    }
    for (int i = 1; i < 3; i++)
      if (n > 0 && (fds[i].revents & (POLLIN | POLLHUP)) && !dump_pump(fds[i].fd, i))
        fds[i].fd = -1;
    if (r == worker && n <= 0) break;
  }
  if (WIFEXITED(status)) exit(WEXITSTATUS(status));
  signal(WTERMSIG(status), SIG_DFL);
  raise(WTERMSIG(status));
  exit(128 + WTERMSIG(status));
}

/* The process the test spawned only forks and relays (dump_relay); the
 * worker, which does the real work and is what gets dumped, returns from here.
 * Its stdio are pipes to the relay rather than the sockets Node gives its
 * children (a dump refuses sockets), and it dies with its relay
 * (PR_SET_PDEATHSIG) so a killed test leaves nothing behind. A tracer in the
 * test process must not trace its own children (see daemon/tracer.ts), which
 * the relay also avoids. */
static void dump_run_as_grandchild(void) {
  pid_t parent = getpid();
  int in[2], out[2], err[2];
  if (pipe(in) || pipe2(out, O_NONBLOCK) || pipe2(err, O_NONBLOCK)) LR_DIE("pipe failed");
  pid_t worker = fork();
  if (worker < 0) LR_DIE("fork failed");
  if (worker == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) LR_DIE("prctl failed");
    if (getppid() != parent) _exit(99);
    int flags = fcntl(out[1], F_GETFL);
    fcntl(out[1], F_SETFL, flags & ~O_NONBLOCK);
    fcntl(err[1], F_SETFL, flags & ~O_NONBLOCK);
    if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) LR_DIE("dup2 failed");
    close(in[0]), close(in[1]), close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    return;
  }
  close(in[0]), close(out[1]), close(err[1]);
  dump_relay(worker, in[1], out[0], err[0]);
}

/* Reads one command line from stdin into buf (without the newline); 0 at EOF. */
static int dump_command(char *buf, size_t len) {
  if (!fgets(buf, (int)len, stdin)) return 0;
  buf[strcspn(buf, "\n")] = 0;
  return 1;
}

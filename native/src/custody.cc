// Unix sockets that carry fds, as flat JS functions (see custody.h). The
// daemon uses them to talk to the keeper and to systemd's notify socket.
// Man pages: unix(7), socket(2), connect(2), sendmsg(2), recvmsg(2),
// cmsg(3), poll(2), bind(2).
#include "custody.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"
#include "facilities.h"

namespace lazyrestore {

int SendWithFd(int sock, const std::string& text, int fd) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    cmsghdr align;
  } u{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

namespace {

// A leading '@' names the abstract namespace, as in $NOTIFY_SOCKET.
sockaddr_un Address(Napi::Env env, const std::string& path, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    ThrowSystemError(env, ENAMETOOLONG, "connect", path);
  }
  memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  return addr;
}

Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>();
  std::string kind = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  int type;
  if (kind == "seqpacket") {
    type = SOCK_SEQPACKET;
  } else if (kind == "dgram") {
    type = SOCK_DGRAM;
  } else {
    throw Napi::TypeError::New(env, "type must be 'seqpacket' or 'dgram'");
  }
  socklen_t len;
  sockaddr_un addr = Address(env, path, &len);
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSystemError(env, errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "connect", path);
  }
  return Napi::Number::New(env, fd);
}

// A datagram socket bound at `path`: the receiving end of a notify socket, as
// systemd has it (tests play systemd with it).
Napi::Value UnixBindDgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>();
  socklen_t len;
  sockaddr_un addr = Address(env, path, &len);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSystemError(env, errno, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "bind", path);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UnixSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ToInt(info[0], "fd");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "text must be a string");
  int pass = info[2].IsUndefined() || info[2].IsNull() ? -1 : ToInt(info[2], "passFd");
  int err = SendWithFd(sock, info[1].As<Napi::String>(), pass);
  if (err != 0) ThrowSystemError(env, err, "sendmsg");
  return env.Undefined();
}

// One message, waiting at most timeoutMs: { text, fd } (fd null when none),
// or null when the peer has closed the connection.
Napi::Value UnixRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ToInt(info[0], "fd");
  int timeout = static_cast<int>(ToU64(info[1], "timeoutMs"));
  pollfd p{sock, POLLIN, 0};
  int n;
  do n = poll(&p, 1, timeout);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowSystemError(env, errno, "poll");
  if (n == 0) ThrowSystemError(env, ETIMEDOUT, "recvmsg", "(no answer)");
  char buf[512];
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4)];
    cmsghdr align;
  } u{};
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  ssize_t r;
  do r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  if (r < 0) ThrowSystemError(env, errno, "recvmsg");
  int got = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (got < 0) {
        got = f;
      } else {
        close(f);
      }
    }
  }
  if (r == 0 && got < 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("text", Napi::String::New(env, buf, static_cast<size_t>(r)));
  o.Set("fd", got >= 0 ? Napi::Value(Napi::Number::New(env, got)) : env.Null());
  return o;
}

}  // namespace

void InitCustody(Napi::Env env, Napi::Object exports) {
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixBindDgram", Napi::Function::New(env, UnixBindDgram, "unixBindDgram"));
  exports.Set("unixSend", Napi::Function::New(env, UnixSend, "unixSend"));
  exports.Set("unixRecv", Napi::Function::New(env, UnixRecv, "unixRecv"));
}

}  // namespace lazyrestore

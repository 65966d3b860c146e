// Passing file descriptors over unix sockets (SCM_RIGHTS), for custody of
// userfaultfds outside the daemon: the keeper process (native/keeper) and
// systemd's file-descriptor store (sd_notify FDSTORE=1). Man pages: unix(7),
// sendmsg(2), recvmsg(2), cmsg(3), sd_notify(3) for the message format.
#pragma once

#include <string>

namespace lazyrestore {

// Sends `text` as one message, with `fd` attached when fd >= 0. Returns 0, or
// an errno value.
int SendWithFd(int sock, const std::string& text, int fd);

}  // namespace lazyrestore

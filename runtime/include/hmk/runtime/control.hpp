// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "hmk/result.hpp"
#include "hmk/runtime/log.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk {

/// The directory control sockets go into by default: `$XDG_RUNTIME_DIR/hmk`,
/// or `/tmp/hmk-UID` without XDG_RUNTIME_DIR.
std::string default_control_dir();
/// The default control socket of system `name`: `DIR/NAME.sock` (characters
/// other than letters, digits, `.`, `_` and `-` become `_`).
std::string default_control_path(std::string_view system_name);

namespace detail {
class ControlServerImpl;
}

/// The control endpoint of a running system (docs/control.md): a Unix
/// stream socket that takes one command a line, in script syntax
/// (docs/scripts.md), runs it against the system and answers with what it
/// printed and whether it succeeded. Only the system's own user may use it:
/// the socket is mode 0600 (and the default directory 0700), and a peer of
/// any other user is refused by its credentials, whatever the file modes.
class ControlServer {
  public:
    /// Listens on `path`. A stale socket file left by a system that is gone
    /// is replaced; a live one is an error (another system listens there).
    static Result<std::unique_ptr<ControlServer>, std::string> open(System& system, Logger& logger,
                                                                    const std::string& path);
    /// Stops listening, cancels the commands in progress, removes the socket.
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    const std::string& path() const;

  private:
    explicit ControlServer(std::unique_ptr<detail::ControlServerImpl> impl);
    std::unique_ptr<detail::ControlServerImpl> m_impl;
};

/// The end of a control request.
struct ControlReply {
    bool ok = false;
    std::string message;  ///< what the command did, or why it failed or was refused
};

/// Sends one command line to the control socket at `path` and hands each
/// line of output to `output` as it comes. Error: the socket cannot be
/// reached, or the connection broke before the answer ended.
Result<ControlReply, std::string> control_request(
    const std::string& path, std::string_view command,
    const std::function<void(std::string_view)>& output);

/// Joins words into one command line, quoting those that need it (so that
/// `hmk ctl send /x data "a b"` arrives as typed).
std::string join_command_words(const std::vector<std::string>& words);

}  // namespace hmk

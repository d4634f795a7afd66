#pragma once
// A child process for multi-process tests: started with arguments, its stdout read line by line
// with a deadline, stopped with a signal, and always killed and reaped by the destructor so a
// failing test leaves nothing running (CONVENTIONS.md rule 13).

#include "runtime/common/posix.hpp"
#include "tests/support/temp_dir.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace thaw::testing {

class child_process {
public:
  /// `merge_stderr`: read the child's stderr (its log) through read_line too. `cwd`: the
  /// child's working directory ("" : this process's).
  explicit child_process(const std::vector<std::string>& argv, bool merge_stderr = false,
                         const std::string& cwd = {}) {
    int out[2];
    if (::pipe(out) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      if (merge_stderr)
        ::dup2(out[1], STDERR_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> args;
      for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
        ::_exit(126);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~child_process() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0)
      ::close(out_);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] bool started() const { return pid_ > 0; }

  /// The next line of stdout, or nullopt at EOF or after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        auto line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        return std::nullopt;
      char buf[4096];
      const auto n = ::read(out_, buf, sizeof buf);
      if (n <= 0)
        return std::nullopt;
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  void signal(int sig) { ::kill(pid_, sig); }

  /// Waits up to `timeout` for the exit; the exit status (128 + signal when killed), or
  /// nullopt when it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      ::usleep(10'000);
    }
    return std::nullopt;
  }

private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  std::string buffer_;
};

/// What a finished command printed and how it ended.
struct command_result {
  int exit_code = -1;  ///< -1 when it did not exit normally
  std::string out;     ///< stdout
  std::string err;     ///< stderr
  std::string all;     ///< stdout, then stderr
};

/// Runs `thaw ARGS` through the shell (ARGS is shell-quoted by the caller) to completion; its
/// stderr goes through a file in `dir`.
inline command_result run_thaw(const std::string& args, const temp_dir& dir) {
  const auto err_file = dir / "stderr.txt";
  const std::string cmd = std::string{THAW_BINARY} + " " + args + " 2>" + err_file.string();
  command_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr)
    return r;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;)
    r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto err = read_text_file(err_file);
  r.err = err ? *err : std::string{};
  r.all = r.out + r.err;
  return r;
}

} // namespace thaw::testing

#include "actors/cluster.hpp"

#include "actors/openssl_error_queue.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/openssl/manager.hpp>

#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

namespace thaw {
namespace {

expected<std::int64_t> get_ms(const config& cfg, std::string_view key, std::int64_t fallback) {
  THAW_ASSIGN(auto secs, cfg.get_seconds(key, static_cast<double>(fallback) / 1e3));
  if (!(secs > 0) || secs > 3600)
    return make_error(errc::invalid_argument,
                      "config key '" + std::string{key} + "' must be between 0 and 3600 seconds");
  return static_cast<std::int64_t>(secs * 1000.0);
}

expected<std::string> read_secret_file(const std::filesystem::path& file) {
  std::ifstream in{file};
  if (!in)
    return make_error(errc::not_found, file.string() + ": cannot read the cluster secret (make "
                                                       "one with `thaw cluster init DIR`)");
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' '))
    secret.pop_back();
  if (secret.empty())
    return make_error(errc::invalid_argument, file.string() + ": the cluster secret is empty");
  return secret;
}

} // namespace

expected<cluster_options> cluster_options::from_config(const config& cfg) {
  cluster_options o;
  THAW_ASSIGN(o.address, cfg.get_string("cluster.address", o.address));
  THAW_ASSIGN(auto port, cfg.get_int("cluster.port", o.port));
  if (port < 0 || port > 65535)
    return make_error(errc::invalid_argument, "config key 'cluster.port' must be 0..65535");
  o.port = static_cast<std::uint16_t>(port);
  THAW_ASSIGN(o.heartbeat_ms, get_ms(cfg, "cluster.heartbeat", o.heartbeat_ms));
  THAW_ASSIGN(o.timeout_ms, get_ms(cfg, "cluster.timeout", o.timeout_ms));
  THAW_ASSIGN(o.connect_ms, get_ms(cfg, "cluster.connect_timeout", o.connect_ms));
  if (o.timeout_ms <= o.heartbeat_ms)
    return make_error(errc::invalid_argument,
                      "config key 'cluster.timeout' must be longer than 'cluster.heartbeat'");
  THAW_ASSIGN(o.secret, cfg.get_string("cluster.secret", ""));
  THAW_ASSIGN(o.dir, cfg.get_string("cluster.dir", ""));
  if (o.secret.empty() && !o.dir.empty()) {
    THAW_ASSIGN(o.secret, read_secret_file(std::filesystem::path{o.dir} / "secret"));
  }
  const bool has_ca = !o.dir.empty() && std::filesystem::exists(std::filesystem::path{o.dir} / "ca.pem");
  // On by default where `thaw cluster init` made the certificates.
  THAW_ASSIGN(o.tls, cfg.get_bool("cluster.tls", has_ca));
  if (o.tls && !has_ca)
    return make_error(errc::invalid_argument,
                      "cluster.tls: TLS needs cluster.dir with the certificates `thaw cluster "
                      "init DIR` makes (no ca.pem in '" + o.dir + "')");
  if (o.secret.empty())
    return make_error(errc::invalid_argument,
                      "cluster.secret or cluster.dir: a cluster needs a shared secret (make one "
                      "with `thaw cluster init DIR` and set cluster.dir = \"DIR\")");
  return o;
}

status init_cluster_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::io_error, dir.string() + ": " + ec.message());
  const auto file = dir / "secret";
  if (std::filesystem::exists(file))
    return make_error(errc::already_exists,
                      file.string() + ": a cluster secret is already there; remove it first to "
                                      "make a new one (every node then needs the new one)");
  THAW_TRY(make_cluster_certificates(dir));
  unsigned char raw[32];
  {
    std::ifstream rnd{"/dev/urandom", std::ios::binary};
    if (!rnd.read(reinterpret_cast<char*>(raw), sizeof raw))
      return make_error(errc::io_error, "/dev/urandom: cannot read random bytes");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string secret;
  for (auto b : raw) {
    secret.push_back(hex[b >> 4]);
    secret.push_back(hex[b & 15]);
  }
  secret.push_back('\n');
  // Created 0600 and exclusively: no moment where others can read it, no race with a second init.
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errc::io_error, file.string() + ": " + std::strerror(errno));
  const auto n = ::write(fd, secret.data(), secret.size());
  const bool ok = n == static_cast<ssize_t>(secret.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    std::filesystem::remove(file, ec);
    return make_error(errc::io_error, file.string() + ": cannot write the cluster secret");
  }
  return {};
}

std::unique_ptr<caf::actor_system_config> make_cluster_system_config(const cluster_options& o,
                                                                     cluster_role role) {
  auto cfg = make_actor_system_config();
  if (o.tls) {
    const std::filesystem::path dir{o.dir};
    const char* stem = role == cluster_role::head ? "head" : "node";
    // CAF's module needs this program's fix to its error handling (openssl_error_queue.hpp).
    if (!openssl_error_queue_fixed())
      spdlog::warn("cluster.tls: OpenSSL's calls are not wrapped; one failed TLS handshake may "
                   "drop the connected peers");
    cfg->load<caf::openssl::manager>();
    cfg->openssl_cafile = (dir / "ca.pem").string();
    cfg->openssl_certificate = (dir / (std::string{stem} + ".pem")).string();
    cfg->openssl_key = (dir / (std::string{stem} + ".key")).string();
  }
  // BASP heartbeats, and a connection silent for longer than the timeout is closed: a hung
  // peer (stopped, swapped out, cut off) then looks like a dead one, and its proxies' down
  // messages reach whoever monitors them.
  cfg->set("middleman.heartbeat-interval", caf::timespan{std::chrono::milliseconds{o.heartbeat_ms}});
  cfg->set("middleman.connection-timeout", caf::timespan{std::chrono::milliseconds{o.timeout_ms}});
  return cfg;
}

} // namespace thaw

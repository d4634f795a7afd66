#pragma once
/// Cluster mode (ARCHITECTURE.md sections 2, 3 and 9): a head process (scheduler, registry,
/// routers, gateway, HTTP) and any number of node processes, talking over CAF's middleman.
///
/// The head publishes one small "head" actor on its control port. A node connects to it with
/// `remote_actor` and sends `join_cluster{protocol_version, secret, node_name}`; the head checks
/// the protocol version, the cluster secret and that no live node has that name, and only then
/// answers with its scheduler, to which the node reports its status like an embedded node
/// does. A refusal is logged on both sides and the node exits with the reason. Heartbeats are on (cluster.heartbeat,
/// cluster.timeout), so a hung node's connection is closed and its actors' down messages reach
/// the scheduler and the routers, as a killed node's do at once; a node whose head goes away
/// stops and says so.
///
/// TLS (cluster.tls; on by default when cluster.dir holds the certificates `thaw cluster init`
/// makes): the control connections run over CAF's OpenSSL module and both sides accept only a
/// peer whose certificate the cluster's CA signed. A peer that fails the handshake is logged
/// by the side that refused it and leaves the other connections be (CAF 0.17.6 needs this
/// program's fix for that: openssl_error_queue.hpp). Without TLS (cluster.secret alone, or
/// cluster.tls = false) the connection is plain TCP: the secret keeps strangers out of the
/// cluster but does not hide the traffic.
///
/// Service order (CONVENTIONS.md rule 8): start() brings everything up, stop() takes it down in
/// reverse; both servers stop in their destructors.

#include "actors/embedded.hpp"
#include "actors/messages.hpp"
#include "actors/node_context.hpp"
#include "runtime/common/config.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace thaw {

/// cluster.*: the control plane's settings, shared by head and node.
struct cluster_options {
  std::string address = "127.0.0.1"; ///< cluster.address: where the head's control port binds
  std::uint16_t port = 7070;          ///< cluster.port: the head's control port (0: any)
  std::string secret;                 ///< cluster.secret, or the `secret` file in cluster.dir
  std::int64_t heartbeat_ms = 1000;   ///< cluster.heartbeat: seconds between heartbeats
  std::int64_t timeout_ms = 10000;    ///< cluster.timeout: silence before a peer counts as lost
  std::int64_t connect_ms = 10000;    ///< cluster.connect_timeout: a node's wait for the head
  /// cluster.tls: TLS with the certificates in `dir` (default: on when `dir` has them).
  bool tls = false;
  std::string dir; ///< cluster.dir

  /// Reads cluster.*; a missing secret is an error that says how to make one.
  [[nodiscard]] static expected<cluster_options> from_config(const config& cfg);
};

/// `thaw cluster init DIR`: makes DIR with the cluster's certificates (make_cluster_certificates)
/// and DIR/secret (64 hex characters from the OS's random source, mode 0600). Refuses to
/// overwrite an existing secret or certificate.
[[nodiscard]] status init_cluster_dir(const std::filesystem::path& dir);

/// Writes ca.{pem,key} (a self-signed CA), head.{pem,key} and node.{pem,key} (RSA 2048, signed
/// by the CA, valid ten years) into `dir`; keys are mode 0600.
[[nodiscard]] status make_cluster_certificates(const std::filesystem::path& dir);

/// Which end of the control connection a process is: picks its certificate in cluster.dir.
/// The head actor's interface: the one actor the head publishes on its control port. A node
/// asks it to join (the answer is the scheduler's handle). CAF checks it at the handshake: keep
/// it unchanged, so that a node of another protocol version reaches the head and gets its
/// refusal naming both versions (join_cluster carries the version).
using head_actor = caf::typed_actor<caf::replies_to<join_cluster>::with<caf::actor>>;

enum class cluster_role : std::uint8_t { head, node };

/// An actor system configured for the cluster: make_actor_system_config() plus heartbeats, and
/// CAF's OpenSSL module with the role's certificate when TLS is on.
[[nodiscard]] std::unique_ptr<caf::actor_system_config>
make_cluster_system_config(const cluster_options& opts, cluster_role role);

/// The head: everything `thaw serve` runs except the node, plus the control port.
class head_server {
public:
  /// `serve.node` is ignored: nodes are other processes.
  [[nodiscard]] static expected<std::unique_ptr<head_server>> start(serve_options serve,
                                                                    cluster_options cluster);
  ~head_server();
  head_server(const head_server&) = delete;
  head_server& operator=(const head_server&) = delete;

  [[nodiscard]] std::uint16_t http_port() const;
  [[nodiscard]] std::uint16_t control_port() const;
  /// Stops everything; idempotent.
  void stop();

  struct impl;

private:
  explicit head_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// A node: its context and node actor, joined to a head.
class node_server {
public:
  /// Connects to the head (retrying until cluster.connect_timeout), joins, and starts the node.
  /// A refusal or an unreachable head is the error.
  [[nodiscard]] static expected<std::unique_ptr<node_server>>
  start(node_options node, cluster_options cluster, std::string head_host,
        std::uint16_t head_port);
  ~node_server();
  node_server(const node_server&) = delete;
  node_server& operator=(const node_server&) = delete;

  /// Why the node can no longer serve (the head went away), or nullopt while it can.
  [[nodiscard]] std::optional<error> failure() const;
  /// Stops everything; idempotent.
  void stop();

  struct impl;

private:
  explicit node_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace thaw
